package metrics

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestSelfMetrics(t *testing.T) {
	var pending atomic.Int64
	pending.Store(3)
	byState := map[string]int{"running": 5, "starting": 1, "zombie": 2, "mystery": 1}
	s := newSelf(t, Options{
		OutboxPending:    func() int { return int(pending.Load()) },
		InstancesByState: func() map[string]int { return byState },
	})
	base := serve(t, s)

	// Every bounded series exists at 0 before anything happened.
	mfs := scrape(t, base)
	for _, k := range eventKinds {
		expect(t, mfs, 0, "ward_events_published_total", "kind", k)
	}
	for _, r := range results {
		expect(t, mfs, 0, "ward_instance_starts_total", "result", r)
		expect(t, mfs, 0, "ward_instance_stops_total", "result", r)
	}
	expect(t, mfs, 0, "ward_bus_reconnects_total")
	expect(t, mfs, 0, "ward_bus_connected")
	expect(t, mfs, 0, "ward_oom_kills_total")

	s.EventPublished("started")
	s.EventPublished("started")
	s.EventPublished("oom_killed")
	s.EventPublished("no-such-kind")
	s.EventPublished("another-one")
	s.InstanceStart(ResultOK)
	s.InstanceStart("resource_exhausted")
	s.InstanceStart("something new")
	s.InstanceStop(ResultOK)
	s.InstanceStop(ResultOK)
	s.BusReconnected()
	s.SetBusConnected(true)
	s.AddOOMKills(2)
	s.AddOOMKills(1)
	s.ObserveSample(3 * time.Millisecond)
	s.ObserveSample(50 * time.Millisecond)
	pending.Store(7)

	mfs = scrape(t, base)
	expect(t, mfs, 2, "ward_events_published_total", "kind", "started")
	expect(t, mfs, 1, "ward_events_published_total", "kind", "oom_killed")
	expect(t, mfs, 2, "ward_events_published_total", "kind", Other)
	expect(t, mfs, 0, "ward_events_published_total", "kind", "stopped")
	expect(t, mfs, 1, "ward_instance_starts_total", "result", ResultOK)
	expect(t, mfs, 1, "ward_instance_starts_total", "result", "resource_exhausted")
	expect(t, mfs, 1, "ward_instance_starts_total", "result", Other)
	expect(t, mfs, 2, "ward_instance_stops_total", "result", ResultOK)
	expect(t, mfs, 1, "ward_bus_reconnects_total")
	expect(t, mfs, 1, "ward_bus_connected")
	expect(t, mfs, 3, "ward_oom_kills_total")
	expect(t, mfs, 7, "ward_events_pending")
	expect(t, mfs, 5, "ward_instances", "state", "running")
	expect(t, mfs, 1, "ward_instances", "state", "starting")
	expect(t, mfs, 0, "ward_instances", "state", "stopping")
	expect(t, mfs, 3, "ward_instances", "state", Other)

	// Bounded: only the known values and Other, whatever was passed.
	for name, n := range map[string]int{
		"ward_events_published_total": len(eventKinds) + 1,
		"ward_instance_starts_total":  len(results) + 1,
		"ward_instance_stops_total":   len(results) + 1,
		"ward_instances":              len(states) + 1,
	} {
		if got := len(mfs[name].GetMetric()); got != n {
			t.Errorf("%s: %d series, want %d", name, got, n)
		}
	}

	h := mfs["ward_sample_duration_seconds"].GetMetric()
	if len(h) != 1 || h[0].Histogram == nil {
		t.Fatalf("ward_sample_duration_seconds: %v, want one histogram", h)
	}
	if c, sum := h[0].Histogram.GetSampleCount(), h[0].Histogram.GetSampleSum(); c != 2 || sum < 0.0529 || sum > 0.0531 {
		t.Errorf("sample duration count %d sum %v, want 2 and 0.053", c, sum)
	}

	s.SetBusConnected(false)
	expect(t, scrape(t, base), 0, "ward_bus_connected")

	// The Go runtime and process collectors are there.
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "process_start_time_seconds"} {
		if _, ok := mfs[name]; !ok {
			t.Errorf("%s missing", name)
		}
	}
}

// TestSelfOptional: callbacks left out leave their series out.
func TestSelfOptional(t *testing.T) {
	mfs := scrape(t, serve(t, newSelf(t, Options{})))
	for _, name := range []string{"ward_events_pending", "ward_instances", "ward_host_load_score"} {
		if _, ok := mfs[name]; ok {
			t.Errorf("%s exposed without its source", name)
		}
	}
	if _, ok := mfs["ward_oom_kills_total"]; !ok {
		t.Error("ward_oom_kills_total missing")
	}
}

// TestSelfOwnRegistry: two Selfs do not collide, as they would in the
// process-wide default registry.
func TestSelfOwnRegistry(t *testing.T) {
	a, b := newSelf(t, Options{}), newSelf(t, Options{})
	a.AddOOMKills(1)
	expect(t, scrape(t, serve(t, a)), 1, "ward_oom_kills_total")
	expect(t, scrape(t, serve(t, b)), 0, "ward_oom_kills_total")
}

func TestSelfNil(t *testing.T) {
	var s *Self
	s.ObserveSample(time.Second)
	s.EventPublished("started")
	s.BusReconnected()
	s.SetBusConnected(true)
	s.AddOOMKills(1)
	s.InstanceStart(ResultOK)
	s.InstanceStop(ResultOK)
	if s.Registry() != nil {
		t.Error("nil Self has a registry")
	}
}

// TestAddSources: the sources' series can come after New (the agent is
// made with the counters, and is one of the sources); a source added twice
// is refused.
func TestAddSources(t *testing.T) {
	s := newSelf(t, Options{})
	base := serve(t, s)
	if _, ok := scrape(t, base)["ward_events_pending"]; ok {
		t.Fatal("ward_events_pending before its source was added")
	}
	if err := s.AddSources(Options{OutboxPending: func() int { return 4 }}); err != nil {
		t.Fatal(err)
	}
	expect(t, scrape(t, base), 4, "ward_events_pending")
	if err := s.AddSources(Options{OutboxPending: func() int { return 5 }}); err == nil {
		t.Fatal("a second outbox source was accepted")
	}
}
