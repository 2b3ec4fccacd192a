package router

import (
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hostward/ward/health"
)

// An instance's route follows its health: registered while it answers its
// health check, withdrawn when it stops listening. The glue is what the
// agent will wire: healthy → Register, unhealthy → Unregister.
func TestRouteFollowsHealth(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	regs := watchSubject(t, rc, SubjectRegister)
	unregs := watchSubject(t, rc, SubjectUnregister)
	reg := newRegistrar(t, connect(t, ns), Options{Interval: 200 * time.Millisecond})
	start(t, reg)

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/health" {
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer app.Close()
	host, portStr, err := net.SplitHostPort(app.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	rt := Route{ID: "7f3c9a", Name: "shop-web", Index: 0, Host: host, Port: port,
		URIs: []string{"shop.example.com"}, Tags: map[string]string{"load": "3.0"}}

	errs := make(chan error, 8)
	checker := health.NewChecker(func(id string, from, to health.Status, reason string) {
		t.Logf("%s: %s → %s (%s)", id, from, to, reason)
		switch to {
		case health.StatusHealthy:
			errs <- reg.Register(rt)
		case health.StatusUnhealthy:
			errs <- reg.Unregister(id)
		}
	})
	defer checker.Close()
	chk := health.Check{Type: health.TypeHTTP, Path: "/health", Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond}
	if err := checker.Add(rt.ID, app.Listener.Addr().String(), chk); err != nil {
		t.Fatal(err)
	}

	g, _ := regs.next(t, 10*time.Second)
	if g.PrivateInstanceID != rt.ID || g.Host != host || int(g.Port) != port {
		t.Fatalf("registered %+v", g)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}

	app.Close() // the instance stops listening
	un, _ := unregs.next(t, 10*time.Second)
	if un.Host != host || int(un.Port) != port || !slices.Equal(un.Uris, rt.URIs) {
		t.Fatalf("unregister %+v does not match the registration %+v", un, g)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if s, _ := checker.Status(rt.ID); s != health.StatusUnhealthy {
		t.Fatalf("health %q, want unhealthy", s)
	}
	// Withdrawn for good: no periodic re-send brings it back.
	time.Sleep(20 * time.Millisecond)
	for len(regs.ch) > 0 {
		<-regs.ch
	}
	regs.none(t, 3*200*time.Millisecond)
}
