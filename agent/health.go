package agent

import (
	"net"
	"strconv"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/health"
)

// checkHealth starts probing a running instance that asked for a health
// check. Caller holds in.opMu.
func (a *Agent) checkHealth(in *instance) {
	in.mu.Lock()
	hc, port := in.rec.Spec.HealthCheck, in.rec.Port
	in.mu.Unlock()
	if hc == nil || port == 0 {
		return
	}
	chk := health.Check{
		Type:     hc.Type,
		Path:     hc.Path,
		Interval: time.Duration(hc.IntervalMS) * time.Millisecond,
		Timeout:  time.Duration(hc.TimeoutMS) * time.Millisecond,
	}
	if err := a.health.Add(in.id, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), chk); err != nil {
		a.log.Error("health check not started", "id", in.id, "err", err)
	}
}

// onHealthChange turns a health transition into a health_changed event.
func (a *Agent) onHealthChange(id string, from, to health.Status, reason string) {
	in, err := a.lookup(id)
	if err != nil {
		return
	}
	in.mu.Lock()
	e := in.event(api.EventHealthChanged)
	e.Health = string(to)
	e.Reason = string(from) + " → " + string(to) + ": " + reason
	in.mu.Unlock()
	a.publish(e)
	a.syncRoute(in)
}

// healthOf is the instance's health for its JSON: null when it is not
// checked (no check asked for, or not running).
func (a *Agent) healthOf(id string) *string {
	if a.health == nil {
		return nil
	}
	st, ok := a.health.Status(id)
	if !ok {
		return nil
	}
	s := string(st)
	return &s
}
