package tasks

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWaitJoinsEveryGoroutine(t *testing.T) {
	var g Group[int]
	release := make(chan struct{})
	returned := make(chan int, 3)
	for i := range 3 {
		if err := g.Go(i, func() { <-release; returned <- i }); err != nil {
			t.Fatal(err)
		}
	}
	if got := g.Running(); len(got) != 3 {
		t.Fatalf("running %v, want 3 keys", got)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := g.Wait(short)
	if !errors.Is(err, ErrStillRunning) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with all blocked = %v, want ErrStillRunning and DeadlineExceeded", err)
	}
	close(release)
	if err := g.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(returned) != 3 || g.Len() != 0 {
		t.Fatalf("Wait returned with %d of 3 done, %d running", len(returned), g.Len())
	}
}

func TestCloseRefusesNewOnes(t *testing.T) {
	var g Group[string]
	release := make(chan struct{})
	if err := g.Go("a", func() { <-release }); err != nil {
		t.Fatal(err)
	}
	g.Close()
	ran := false
	if err := g.Go("b", func() { ran = true }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Go after Close = %v, want ErrClosed", err)
	}
	if got := g.Running(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("running %v, want [a]", got)
	}
	close(release)
	if err := g.Wait(context.Background()); err != nil || ran {
		t.Fatalf("Wait = %v, refused one ran: %v", err, ran)
	}
}

func TestWaitWithNothingRunning(t *testing.T) {
	var g Group[int]
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Wait(ctx); err != nil {
		t.Fatalf("Wait on an empty group = %v", err)
	}
	// A group is reusable across idle periods.
	for range 2 {
		if err := g.Go(1, func() {}); err != nil {
			t.Fatal(err)
		}
		if err := g.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDuplicateKeyPanics(t *testing.T) {
	var g Group[int]
	release := make(chan struct{})
	defer func() {
		close(release)
		g.Wait(context.Background())
		if recover() == nil {
			t.Fatal("a second goroutine under a running key was accepted")
		}
	}()
	g.Go(1, func() { <-release })
	g.Go(1, func() {})
}
