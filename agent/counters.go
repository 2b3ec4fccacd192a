package agent

import "github.com/hostward/ward/api"
import "time"

// Counters are told of what the agent does, for its own metrics
// (metrics.Self).
type Counters interface {
	EventPublished(kind string)
	AddOOMKills(n uint64)
	InstanceStart(result string)
	InstanceStop(result string)
	ObserveSample(took time.Duration)
}

type countersBox struct{ Counters }

// count calls f with the counters, if any are set.
func (a *Agent) count(f func(Counters)) {
	if b := a.counters.Load(); b != nil && b.Counters != nil {
		f(b.Counters)
	}
}

// result names an API call's outcome for a counter: "ok" or the error code.
func result(err error) string {
	if err == nil {
		return "ok"
	}
	return string(api.AsError(err).Code)
}
