package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/leakcheck"
)

// TestRestartReadoptsAndNothingLeaks SIGKILLs the agent while 20 instances
// run and while a start or a stop is in flight — at every crash point of
// those operations, then at random moments — and checks after each restart
// that the 20 run on with the same pids, the operation in flight is either
// fully done or fully undone, and nothing leaked.
func TestRestartReadoptsAndNothingLeaks(t *testing.T) {
	h := newHost(t)
	h.start("")
	ctx := context.Background()

	pids := map[string]int{}
	for i := 0; i < 20; i++ {
		inst, err := h.client.Start(ctx, api.Request{Name: "steady", Index: i, Port: new(int), Command: []string{"sleep", "100000"}})
		if err != nil {
			t.Fatal(err)
		}
		pids[inst.ID] = *inst.PID
	}
	live := func(extra ...string) map[string]bool {
		m := map[string]bool{}
		for id := range pids {
			m[id] = true
		}
		for _, id := range extra {
			m[id] = true
		}
		return m
	}
	// checkSteady: after a restart the 20 are running with the pids they had.
	checkSteady := func(stage string) map[string]api.Instance {
		t.Helper()
		byID := map[string]api.Instance{}
		for _, in := range h.list() {
			byID[in.ID] = in
		}
		for id, pid := range pids {
			in, ok := byID[id]
			if !ok || in.State != api.StateRunning || in.PID == nil || *in.PID != pid {
				t.Fatalf("%s: instance %s = %+v, want running with pid %d", stage, id, in, pid)
			}
		}
		return byID
	}

	h.kill()
	h.start("")
	checkSteady("plain SIGKILL")
	leakcheck.Check(t, h.cfg, live())

	for n, cp := range []string{"start:recorded", "start:cgroup", "start:spawned", "start:announced", "start:running"} {
		h.kill()
		h.start(cp)
		id := fmt.Sprintf("inflight-%d", n)
		_, err := h.client.Start(ctx, api.Request{ID: id, Name: "inflight", Port: new(int), Command: []string{"sleep", "100000"}})
		if err == nil {
			t.Fatalf("%s: start succeeded through the crash point", cp)
		}
		h.waitDead()
		h.start("")
		byID := checkSteady(cp)
		in, exists := byID[id]
		switch {
		case !exists:
			leakcheck.Check(t, h.cfg, live())
		case in.State == api.StateRunning:
			// fully running: its pid is alive and in its group
			if in.PID == nil || syscallKill0(*in.PID) != nil {
				t.Fatalf("%s: running in-flight instance without a live process: %+v", cp, in)
			}
			leakcheck.Check(t, h.cfg, live(id))
			if _, err := h.client.Stop(ctx, api.StopRequest{ID: id}); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: in-flight instance half there: %+v", cp, in)
		}
		leakcheck.Check(t, h.cfg, live())
	}

	for n, cp := range []string{"stop:recorded", "stop:terminated", "release:cgroup", "release:dir"} {
		h.kill()
		h.start("")
		id := fmt.Sprintf("stopping-%d", n)
		if _, err := h.client.Start(ctx, api.Request{ID: id, Name: "stopping", Port: new(int), Command: []string{"sleep", "100000"}}); err != nil {
			t.Fatal(err)
		}
		h.kill()
		h.start(cp)
		if _, err := h.client.Stop(ctx, api.StopRequest{ID: id}); err == nil {
			t.Fatalf("%s: stop succeeded through the crash point", cp)
		}
		h.waitDead()
		h.start("")
		byID := checkSteady(cp)
		if in := byID[id]; in.State != api.StateStopped {
			t.Fatalf("%s: interrupted stop ended as %+v", cp, in)
		}
		leakcheck.Check(t, h.cfg, live())
	}

	// Random moments: a stream of starts and stops, the agent killed after
	// a random delay, at least once mid-operation.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for round := 0; round < 5; round++ {
		h.kill()
		h.start("")
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				id := fmt.Sprintf("churn-%d-%d", round, i)
				if _, err := h.client.Start(ctx, api.Request{ID: id, Name: "churn", Command: []string{"sleep", "100000"}}); err != nil {
					return
				}
				if _, err := h.client.Stop(ctx, api.StopRequest{ID: id}); err != nil {
					return
				}
			}
		}()
		time.Sleep(time.Duration(5+rng.IntN(40)) * time.Millisecond)
		h.kill()
		<-done
		h.start("")
		byID := checkSteady(fmt.Sprintf("random round %d", round))
		extra := []string{}
		for id, in := range byID {
			if _, steady := pids[id]; steady {
				continue
			}
			switch {
			case in.State == api.StateRunning:
				extra = append(extra, id)
			case !in.State.Terminal():
				t.Fatalf("round %d: %s left %s", round, id, in.State)
			}
		}
		leakcheck.Check(t, h.cfg, live(extra...))
		for _, id := range extra {
			if _, err := h.client.Stop(ctx, api.StopRequest{ID: id}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Finally everything stops cleanly and nothing at all remains.
	for id := range pids {
		in, err := h.client.Stop(ctx, api.StopRequest{ID: id})
		if err != nil || in.State != api.StateStopped {
			t.Fatalf("stop %s: %v %+v", id, err, in)
		}
	}
	leakcheck.Check(t, h.cfg, nil)
}
