package agent

import (
	"strconv"
	"sync"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/health"
	"github.com/hostward/ward/router"
)

// RouteSink is where the agent announces instances' routes: a gorouter
// registrar (router.Registrar).
type RouteSink interface {
	Register(router.Route) error
	Update(router.Route) error // of a registered route; other ids are refused
	Unregister(id string) error
}

// routes holds the route sink (Options.Routes).
type routes struct {
	mu   sync.Mutex
	sink RouteSink
}

func (r *routes) get() RouteSink {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sink
}

// syncRoute registers in's route if it should be routed — running, with a
// port and routes, and healthy or not checked — and withdraws it otherwise.
// A route is withdrawn only after the instance's health check is gone (a
// late "healthy" cannot bring it back).
func (a *Agent) syncRoute(in *instance) {
	sink := a.routes.get()
	if sink == nil {
		return
	}
	in.mu.Lock()
	rec := &in.rec
	rt := a.route(in)
	routable := rec.State == api.StateRunning && rec.Port != 0 && len(rec.Spec.Routes) > 0 && !in.removed
	checked := rec.Spec.HealthCheck != nil
	in.mu.Unlock()
	if routable && checked {
		st, ok := a.health.Status(in.id)
		routable = ok && st == health.StatusHealthy
	}
	var err error
	if routable {
		err = sink.Register(rt)
	} else {
		err = sink.Unregister(in.id)
	}
	if err != nil {
		a.log.Warn("route", "id", in.id, "register", routable, "err", err)
	}
}

// unroute withdraws in's route, whatever its state.
func (a *Agent) unroute(in *instance) {
	if sink := a.routes.get(); sink != nil {
		if err := sink.Unregister(in.id); err != nil {
			a.log.Warn("route: unregister", "id", in.id, "err", err)
		}
	}
}

// route is in's registration, tagged with its load from the latest
// sample. Caller holds in.mu.
func (a *Agent) route(in *instance) router.Route {
	rec := &in.rec
	rt := router.Route{ID: rec.Spec.ID, Name: rec.Spec.Name, Index: rec.Spec.Index, Port: rec.Port, URIs: rec.Spec.Routes}
	if s, ok := a.sampler.Lookup(rec.Spec.ID); ok {
		rt.Tags = map[string]string{
			"load":   strconv.FormatFloat(s.Load, 'f', 1, 64),
			"weight": strconv.Itoa(s.Weight),
		}
	}
	return rt
}

// tagRoutes brings the load tags of every routed instance up to date; they
// go out with the next re-registration.
func (a *Agent) tagRoutes() {
	sink := a.routes.get()
	if sink == nil {
		return
	}
	for _, in := range a.all() {
		in.mu.Lock()
		routed := in.rec.State == api.StateRunning && in.rec.Port != 0 && len(in.rec.Spec.Routes) > 0
		rt := a.route(in)
		in.mu.Unlock()
		if routed {
			// Refused for a route not registered (unhealthy): as it should be.
			sink.Update(rt)
		}
	}
}
