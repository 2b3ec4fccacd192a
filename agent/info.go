package agent

import (
	"context"
	"sort"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
)

// Info returns everything known about one instance.
func (a *Agent) Info(ctx context.Context, req api.InfoRequest) (*api.Instance, error) {
	if err := validateID("id", req.ID); err != nil {
		return nil, err
	}
	in, err := a.lookup(req.ID)
	if err != nil {
		return nil, err
	}
	return a.snapshot(in, true), nil
}

// List returns the instances the agent knows, live and recently ended, in
// list order (name, index, id): those after req.After, at most req.Limit
// of them. Only the page is rendered: a page of a big host costs what the
// page holds, not what the host holds.
func (a *Agent) List(ctx context.Context, req api.ListRequest) (*api.List, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	after, _ := api.ParseCursor(req.After)
	ins := a.all()
	if after != nil {
		i := sort.Search(len(ins), func(i int) bool {
			return after.Less(api.Cursor{Name: ins[i].name, Index: ins[i].index, ID: ins[i].id})
		})
		ins = ins[i:]
	}
	out := &api.List{}
	if req.Limit > 0 && len(ins) > req.Limit {
		ins = ins[:req.Limit]
		last := ins[len(ins)-1]
		out.Next = api.Cursor{Name: last.name, Index: last.index, ID: last.id}.String()
	}
	out.Instances = make([]api.Instance, 0, len(ins))
	for _, in := range ins {
		out.Instances = append(out.Instances, *a.snapshot(in, true))
	}
	return out, nil
}

// snapshot renders an instance; with usage it also reads what the
// instance uses. in.mu is held only to copy the record: the reads of the
// cgroup and the quota, which can be slow, happen outside it, so that a
// slow read never holds up the instance's own lifecycle.
func (a *Agent) snapshot(in *instance, usage bool) *api.Instance {
	in.mu.Lock()
	rec, g := in.rec, in.group
	in.mu.Unlock()
	cgroupPath := rec.Cgroup
	if a.cg != nil {
		cgroupPath = a.cg.Path(rec.Cgroup)
	}
	inst := &api.Instance{
		ID:              rec.Spec.ID,
		Name:            rec.Spec.Name,
		Index:           rec.Spec.Index,
		State:           rec.State,
		Cgroup:          cgroupPath,
		Dir:             rec.Dir,
		Command:         rec.Spec.Command,
		Routes:          rec.Spec.Routes,
		HealthCheck:     rec.Spec.HealthCheck,
		Limits:          mergeLimits(rec.Limits, api.Limits{}),
		CreatedAt:       rec.CreatedAt,
		StartedAt:       rec.StartedAt,
		ExitedAt:        rec.ExitedAt,
		ExitCode:        rec.ExitCode,
		ExitSignal:      rec.Signal,
		MemoryPeakBytes: rec.MemoryPeak,
		OOMKills:        rec.OOMKills,
		StderrTail:      rec.StderrTail,
		Reason:          rec.Reason,
	}
	if rec.State == api.StateRunning {
		inst.Health = a.healthOf(rec.Spec.ID)
	}
	if !rec.State.Terminal() {
		if rec.PID != 0 {
			inst.PID = intp(rec.PID)
		}
		inst.UID = intp(rec.UID)
		if rec.Port != 0 {
			inst.Port = intp(rec.Port)
		}
	}
	if usage && rec.State == api.StateRunning && g != nil {
		a.readUsage(in, &rec, g, &inst.Usage)
	}
	return inst
}

// readUsage fills u with what in uses now. The reporter's latest sample
// costs nothing to read; an instance younger than it is read from its
// cgroup and quota.
func (a *Agent) readUsage(in *instance, rec *record, g *cgroup.Group, u *api.Usage) {
	if a.sampler != nil {
		if smp, ok := a.sampler.Lookup(rec.Spec.ID); ok {
			mem, pids := smp.MemBytes, smp.Pids
			u.MemoryBytes, u.Pids, u.CPUPct = &mem, &pids, smp.CPUPct
			if smp.DiskBytes != nil && *smp.DiskBytes >= 0 {
				disk := uint64(*smp.DiskBytes)
				u.DiskBytes = &disk
			}
			return
		}
	}
	if st, err := g.Stats(); err == nil {
		u.MemoryBytes = &st.MemoryUsage
		u.Pids = &st.Pids
		in.mu.Lock()
		u.CPUPct = in.cpu.pct(st.CPUUsage, time.Now(), rec.StartedAt)
		in.mu.Unlock()
	}
	if n, err := a.quota.Usage(a.quotaTarget(*rec)); err == nil && n >= 0 {
		disk := uint64(n)
		u.DiskBytes = &disk
	}
}

func intp(v int) *int { return &v }

// cpuTracker turns the cgroup's cumulative CPU time into a percentage of one
// core: over the time since the previous reading when that is at least
// minWindow old, else the previous figure; the first reading is the average
// since the instance started.
type cpuTracker struct {
	at    time.Time
	usage uint64
	last  *float64
}

const minWindow = time.Second

func (c *cpuTracker) pct(usage uint64, now time.Time, started *time.Time) *float64 {
	var since time.Time
	var base uint64
	switch {
	case !c.at.IsZero() && now.Sub(c.at) < minWindow && c.last != nil:
		return c.last
	case !c.at.IsZero():
		since, base = c.at, c.usage
	case started != nil:
		since = *started
	default:
		return nil
	}
	wall := now.Sub(since)
	if wall <= 0 || usage < base {
		return nil
	}
	v := float64(usage-base) / float64(wall.Nanoseconds()) * 100
	c.at, c.usage, c.last = now, usage, &v
	return &v
}
