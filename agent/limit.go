package agent

import (
	"context"
	"reflect"

	"github.com/hostward/ward/api"
)

// Limit changes the limits of a running instance, live. Only the limits
// given change. The kernel first, resource by resource (see updateAll):
// if one refuses, those already changed are put back and nothing is
// recorded. Then the new limits are recorded and announced in one commit;
// if that fails, the kernel is put back too. Either way the limits in
// force are the limits on record.
func (a *Agent) Limit(ctx context.Context, req api.LimitRequest) (*api.Instance, error) {
	if err := validateID("id", req.ID); err != nil {
		return nil, err
	}
	if reflect.DeepEqual(req.Limits, api.Limits{}) {
		return nil, invalid("limits", "no limit given")
	}
	in, err := a.lookup(req.ID)
	if err != nil {
		return nil, err
	}
	in.opMu.Lock()
	defer in.opMu.Unlock()
	if in.gone() {
		return nil, notFound(req.ID)
	}
	if err := callerGone(ctx); err != nil {
		return nil, err
	}

	rec := in.record()
	if rec.State != api.StateRunning {
		return nil, &api.Error{Code: api.CodeConflict, Field: "id", Message: "instance is " + string(rec.State) + ", not running"}
	}
	next := mergeLimits(rec.Limits, req.Limits)
	if err := validateLimits(next, a.host); err != nil {
		return nil, err
	}
	if err := a.updateAll(in, next); err != nil {
		return nil, err
	}
	rec.Limits = next
	e := rec.event(api.EventLimitChanged)
	e.Limits = &next
	if err := a.commit(in, rec, &e, "limit:announced"); err != nil {
		a.restoreLimits(in, len(a.steps))
		return nil, api.Internal(err)
	}
	crashpoint("limit:recorded")
	return a.snapshot(in, false), nil
}
