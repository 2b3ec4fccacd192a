package agent

import (
	"context"
	"reflect"

	"github.com/hostward/ward/api"
)

// Limit changes the limits of a running instance, live. Only the limits
// given change; on failure the old ones stay in force and on record.
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

	in.mu.Lock()
	old := in.rec.Limits
	state := in.rec.State
	in.mu.Unlock()
	if state != api.StateRunning {
		return nil, &api.Error{Code: api.CodeConflict, Field: "id", Message: "instance is " + string(state) + ", not running"}
	}
	next := mergeLimits(old, req.Limits)
	if err := validateLimits(next, a.host); err != nil {
		return nil, err
	}
	// The kernel first: if it refuses, nothing was recorded. If the record
	// then cannot be written, the kernel is put back.
	if err := in.group.Update(resources(next)); err != nil {
		a.restoreLimits(in, old)
		return nil, invalid("limits", "the kernel refused: %v", err)
	}
	if *next.DiskBytes != *old.DiskBytes {
		if err := a.quota.SetLimit(a.quotaTarget(&in.rec), *next.DiskBytes); err != nil {
			a.restoreLimits(in, old)
			return nil, invalid("limits.disk_bytes", "the %s quota refused: %v", a.quota.Name(), err)
		}
	}
	// The event is stored, held, before the record: an agent that dies
	// once the record says the new limits must not leave them unannounced.
	// One that dies before leaves an announcement the record does not
	// bear out; the next agent's reconcile answers it (see
	// correctAnnouncedLimits).
	in.mu.Lock()
	in.rec.Limits = next
	e := in.limitsEvent(next)
	in.mu.Unlock()
	commit := a.announce(e)
	crashpoint("limit:announced")
	if err := a.store.save(&in.rec); err != nil {
		in.mu.Lock()
		in.rec.Limits = old
		in.mu.Unlock()
		a.restoreLimits(in, old)
		// The announcement is numbered: it goes out, and its correction
		// right after it.
		commit()
		a.emitLimits(in, old)
		return nil, api.Internal(err)
	}
	crashpoint("limit:recorded")
	inst := a.snapshot(in, false)
	commit()
	return inst, nil
}

func (a *Agent) restoreLimits(in *instance, old api.Limits) {
	if err := in.group.Update(resources(old)); err != nil {
		a.log.Error("limit: restore old limits", "id", in.id, "err", err)
	}
	if err := a.quota.SetLimit(a.quotaTarget(&in.rec), *old.DiskBytes); err != nil {
		a.log.Error("limit: restore old disk limit", "id", in.id, "err", err)
	}
}
