package metrics

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hostward/ward/api"
)

// Other is the label value every unknown event kind, result or state is
// counted under, so a caller passing something new cannot grow the number
// of series.
const Other = "other"

// ResultOK is the result of a start or stop that succeeded. A failed one is
// counted under its error code.
const ResultOK = "ok"

// Bounded label values: the contract's names (package api); a value
// missing there is counted as Other.
var (
	eventKinds = api.EventKinds
	// results are the outcomes of a start or stop: ResultOK or an error
	// code.
	results = append([]string{ResultOK}, names(api.Codes)...)
	states  = names(api.States)
)

func names[T ~string](vs []T) []string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = string(v)
	}
	return out
}

// Options says what the registry exposes besides the agent's own counters.
// Every field is optional; a nil one leaves its series out.
type Options struct {
	// Samples gives the load sample the host and instance gauges come from.
	Samples SampleSource
	// OutboxPending returns the number of events in the outbox that the bus
	// has not confirmed yet. Called on every scrape; it must be cheap.
	OutboxPending func() int
	// InstancesByState returns how many instances are in each state. Called
	// on every scrape; it must be cheap. States other than the
	// contract's are summed under Other.
	InstancesByState func() map[string]int
}

// Self holds the agent's own metrics and the registry they are served
// from. Its methods are safe for concurrent use, and do nothing on a nil
// *Self, so a caller with metrics turned off can keep a nil one.
type Self struct {
	reg *prometheus.Registry

	sampleDuration prometheus.Histogram
	events         map[string]prometheus.Counter
	busReconnects  prometheus.Counter
	busConnected   prometheus.Gauge
	oomKills       prometheus.Counter
	starts, stops  map[string]prometheus.Counter
}

// New returns the agent's metrics in a registry of their own (not the
// process-wide default), with Go runtime and process collectors.
func New(o Options) (*Self, error) {
	s := &Self{
		reg: prometheus.NewRegistry(),
		sampleDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ward_sample_duration_seconds",
			Help: "Time one load sample of the host and every instance took.",
			// 100 µs (an empty host) to 1.6 s; 1,000 instances take about 20 ms.
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8),
		}),
		busReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ward_bus_reconnects_total",
			Help: "Times the bus connection was re-established after it was lost.",
		}),
		busConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ward_bus_connected",
			Help: "1 while the bus connection is up, else 0.",
		}),
		oomKills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ward_oom_kills_total",
			Help: "Kills by the kernel's OOM killer in instance memory cgroups.",
		}),
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_events_published_total",
		Help: "Instance events the bus confirmed, by kind.",
	}, []string{"kind"})
	starts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_instance_starts_total",
		Help: "Instance start requests, by result: ok or the error code.",
	}, []string{"result"})
	stops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ward_instance_stops_total",
		Help: "Instance stop requests, by result: ok or the error code.",
	}, []string{"result"})
	// Every child exists from the start, so each series reads 0 before its
	// first increment and rate() sees that increment.
	s.events = children(events, eventKinds)
	s.starts = children(starts, results)
	s.stops = children(stops, results)

	cs := []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		s.sampleDuration, events, s.busReconnects, s.busConnected, s.oomKills, starts, stops,
	}
	if err := s.register(cs); err != nil {
		return nil, err
	}
	if err := s.AddSources(o); err != nil {
		return nil, err
	}
	return s, nil
}

// AddSources adds the series of o's sources to the registry: a caller
// whose sources exist only after the counters are needed (the agent is
// given its counters when it is made) adds them then, before serving. A
// source given twice is refused.
func (s *Self) AddSources(o Options) error {
	var cs []prometheus.Collector
	if o.Samples != nil {
		cs = append(cs, NewSampleCollector(o.Samples))
	}
	if f := o.OutboxPending; f != nil {
		cs = append(cs, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ward_events_pending",
			Help: "Events written to the outbox that the bus has not confirmed yet.",
		}, func() float64 { return float64(f()) }))
	}
	if o.InstancesByState != nil {
		cs = append(cs, &stateCollector{f: o.InstancesByState})
	}
	return s.register(cs)
}

func (s *Self) register(cs []prometheus.Collector) error {
	for _, c := range cs {
		if err := s.reg.Register(c); err != nil {
			return fmt.Errorf("metrics: register: %w", err)
		}
	}
	return nil
}

func children(v *prometheus.CounterVec, values []string) map[string]prometheus.Counter {
	m := make(map[string]prometheus.Counter, len(values)+1)
	for _, l := range values {
		m[l] = v.WithLabelValues(l)
	}
	m[Other] = v.WithLabelValues(Other)
	return m
}

// bounded returns the child for label value l, or Other's.
func bounded(m map[string]prometheus.Counter, l string) prometheus.Counter {
	if c, ok := m[l]; ok {
		return c
	}
	return m[Other]
}

// Registry returns the registry to serve.
func (s *Self) Registry() *prometheus.Registry {
	if s == nil {
		return nil
	}
	return s.reg
}

// ObserveSample records how long one load sample took.
func (s *Self) ObserveSample(d time.Duration) {
	if s != nil {
		s.sampleDuration.Observe(d.Seconds())
	}
}

// EventPublished counts one event of kind the bus confirmed.
func (s *Self) EventPublished(kind string) {
	if s != nil {
		bounded(s.events, kind).Inc()
	}
}

// BusReconnected counts one re-established bus connection.
func (s *Self) BusReconnected() {
	if s != nil {
		s.busReconnects.Inc()
	}
}

// SetBusConnected records whether the bus connection is up.
func (s *Self) SetBusConnected(up bool) {
	if s == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	s.busConnected.Set(v)
}

// AddOOMKills counts n kills by the kernel's OOM killer in an instance's
// memory cgroup (the rise of its oom_kill counter), whatever the OOM policy
// then did with the instance.
func (s *Self) AddOOMKills(n uint64) {
	if s != nil {
		s.oomKills.Add(float64(n))
	}
}

// InstanceStart counts one start request by its result: ResultOK or the
// error code.
func (s *Self) InstanceStart(result string) {
	if s != nil {
		bounded(s.starts, result).Inc()
	}
}

// InstanceStop counts one stop request by its result: ResultOK or the
// error code.
func (s *Self) InstanceStop(result string) {
	if s != nil {
		bounded(s.stops, result).Inc()
	}
}

var descInstances = prometheus.NewDesc("ward_instances",
	"Instances the agent holds, by state.", []string{"state"}, nil)

// stateCollector reports the callback's counts, every known state
// included (at 0 when absent) so that a state emptying reads 0 rather than
// vanishing.
type stateCollector struct {
	f func() map[string]int
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descInstances }

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.f()
	other := 0
	for st, n := range counts {
		if !known(st) {
			other += n
		}
	}
	for _, st := range states {
		ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(counts[st]), st)
	}
	ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(other), Other)
}

func known(state string) bool {
	for _, s := range states {
		if s == state {
			return true
		}
	}
	return false
}
