package agent

import (
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/reporter"
)

// reportInstances lists the running instances for the load sampler.
func (a *Agent) reportInstances() []reporter.Instance {
	ins := a.all()
	out := make([]reporter.Instance, 0, len(ins))
	for _, in := range ins {
		in.mu.Lock()
		rec := &in.rec
		if rec.State != api.StateRunning || in.group == nil {
			in.mu.Unlock()
			continue
		}
		ri := reporter.Instance{
			ID:            rec.Spec.ID,
			Name:          rec.Spec.Name,
			Index:         rec.Spec.Index,
			Dirs:          in.group.Dirs(),
			MemoryLimit:   *rec.Limits.MemoryBytes,
			CPUShares:     *rec.Limits.CPUShares,
			CPUMillicores: *rec.Limits.CPUMillicores,
		}
		if rec.StartedAt != nil {
			ri.Started = *rec.StartedAt
		}
		if in.diskUsage == nil {
			target := a.quotaTarget(*rec)
			in.diskUsage = func() (int64, bool) {
				n, err := a.quota.Usage(target)
				return n, err == nil
			}
		}
		ri.Disk = in.diskUsage
		in.mu.Unlock()
		out = append(out, ri)
	}
	return out
}

// NewReporter returns the load reporter over the agent's instances: it
// samples every report.interval — which is also what info and list show as
// usage — and publishes ward.<host>.load through pub (nil: sample only).
func (a *Agent) NewReporter(pub reporter.Publisher) (*reporter.Reporter, error) {
	return reporter.New(reporter.Options{
		HostID:    a.cfg.HostID,
		Interval:  a.cfg.Report.Interval.D(),
		Sampler:   a.sampler,
		Source:    reporter.SourceFunc(a.reportInstances),
		Publisher: pub,
		Log:       a.log,
		Observe: func(_ *reporter.Sample, took time.Duration) {
			a.count(func(c Counters) { c.ObserveSample(took) })
			a.tagRoutes()
		},
	})
}

// CountByState counts the instances the agent knows by state.
func (a *Agent) CountByState() map[string]int {
	n := map[string]int{}
	for _, in := range a.all() {
		in.mu.Lock()
		n[string(in.rec.State)]++
		in.mu.Unlock()
	}
	return n
}
