package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/hostward/ward/api"
)

// TestHealthFollowsListener: an instance with a tcp health check is
// healthy while it listens on its port and turns unhealthy when it stops
// listening (without ending), each change a health_changed event.
func TestHealthFollowsListener(t *testing.T) {
	ty := newTenancy(t)
	events, cancel := ty.a.Events().Subscribe()
	defer cancel()
	port := 0
	tn := ty.startReq(api.Request{Name: "web", Port: &port,
		HealthCheck: &api.HealthCheck{Type: "tcp", IntervalMS: 100, TimeoutMS: 50}}, "serve")
	var r struct {
		Addr  string `json:"addr"`
		Errno string `json:"errno"`
	}
	tn.result(phaseDone, &r)
	if r.Errno != "" {
		t.Fatalf("serve: %+v", r)
	}
	waitHealth := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case e := <-events:
				if e.ID == tn.inst.ID && e.Kind == api.EventHealthChanged {
					t.Logf("health_changed: %s (%s)", e.Health, e.Reason)
					if e.Health == want {
						if h := tn.info().Health; h == nil || *h != want {
							t.Fatalf("info health %v after a change to %s", h, want)
						}
						return
					}
				}
			case <-deadline:
				t.Fatalf("no health_changed to %s; info says %v", want, tn.info().Health)
			}
		}
	}
	waitHealth("healthy")
	tn.signal(syscall.SIGUSR1)
	tn.result("closed", nil)
	waitHealth("unhealthy")
	tn.mustRun()

	// No check asked for: health is null, not invented.
	other := ty.start("plain", api.Limits{}, "hog", "-mb", "1")
	if h := other.info().Health; h != nil {
		t.Fatalf("health %q without a health check", *h)
	}
	if _, err := ty.a.Stop(context.Background(), api.StopRequest{ID: tn.inst.ID}); err != nil {
		t.Fatal(err)
	}
}
