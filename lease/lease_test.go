package lease

import (
	"errors"
	"sync"
	"testing"
)

func TestAcquireRoundRobinAndExhaustion(t *testing.T) {
	p := New(10, 12)
	var got []int
	for _, o := range []string{"a", "b", "c"} {
		n, err := p.Acquire(o)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if got[0] != 10 || got[1] != 11 || got[2] != 12 {
		t.Fatalf("got %v", got)
	}
	if _, err := p.Acquire("d"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("full pool: %v", err)
	}
	p.Release(11, "someone-else")
	if _, err := p.Acquire("d"); !errors.Is(err, ErrExhausted) {
		t.Fatal("release by a non-owner freed the number")
	}
	p.Release(11, "b")
	p.Release(10, "a")
	if n, _ := p.Acquire("e"); n != 10 {
		// next points past 12, wraps to 10 (free) before 11
		t.Fatalf("round robin gave %d", n)
	}
	if n, _ := p.Acquire("f"); n != 11 {
		t.Fatalf("got %d", n)
	}
}

func TestClaim(t *testing.T) {
	p := New(100, 200)
	if err := p.Claim(150, "x"); err != nil {
		t.Fatal(err)
	}
	if err := p.Claim(150, "x"); err != nil {
		t.Fatalf("re-claim by owner: %v", err)
	}
	if err := p.Claim(150, "y"); !errors.Is(err, ErrInUse) {
		t.Fatalf("claim of a held number: %v", err)
	}
	if err := p.Claim(99, "y"); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("claim below range: %v", err)
	}
	if err := p.Claim(201, "y"); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("claim above range: %v", err)
	}
	if m := p.Leased(); len(m) != 1 || m[150] != "x" {
		t.Fatalf("leased %v", m)
	}
	if !p.Held(150) || p.Held(151) || p.Held(99) {
		t.Fatalf("Held(150, 151, 99) = %v %v %v, want true false false", p.Held(150), p.Held(151), p.Held(99))
	}
	p.Release(150, "x")
	if p.Held(150) {
		t.Fatal("Held(150) after its release")
	}
}

func TestConcurrentAcquireUnique(t *testing.T) {
	p := New(1, 1000)
	var mu sync.Mutex
	seen := map[int]bool{}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 125; i++ {
				n, err := p.Acquire("o")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[n] {
					t.Errorf("%d leased twice", n)
				}
				seen[n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 1000 {
		t.Fatalf("%d leases", len(seen))
	}
}
