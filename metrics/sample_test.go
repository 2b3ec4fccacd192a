package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hostward/ward/reporter"
)

// wardLabels is every ward_ family the sample can produce and the exact
// label names each of its series must carry.
var wardLabels = map[string]string{
	"ward_sample_timestamp_seconds":               "",
	"ward_host_cpu_percent":                       "",
	"ward_host_memory_percent":                    "",
	"ward_host_load_score":                        "",
	"ward_host_loadavg":                           "period",
	"ward_host_network_receive_bytes_per_second":  "interface",
	"ward_host_network_transmit_bytes_per_second": "interface",
	"ward_instance_cpu_percent":                   "id,index,name",
	"ward_instance_memory_bytes":                  "id,index,name",
	"ward_instance_memory_limit_bytes":            "id,index,name",
	"ward_instance_memory_percent":                "id,index,name",
	"ward_instance_io_read_bytes_per_second":      "id,index,name",
	"ward_instance_io_write_bytes_per_second":     "id,index,name",
	"ward_instance_pids":                          "id,index,name",
	"ward_instance_disk_bytes":                    "id,index,name",
	"ward_instance_load":                          "id,index,name",
	"ward_instance_weight":                        "id,index,name",
}

func newSelf(t testing.TB, o Options) *Self {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSampleSeries(t *testing.T) {
	src := &source{}
	src.p.Store(fixedSample())
	mfs := scrape(t, serve(t, newSelf(t, Options{Samples: src})))

	expect(t, mfs, float64(sampleTime.UnixNano())/1e9, "ward_sample_timestamp_seconds")
	expect(t, mfs, 37.5, "ward_host_cpu_percent")
	expect(t, mfs, 42.25, "ward_host_memory_percent")
	expect(t, mfs, 43, "ward_host_load_score")
	expect(t, mfs, 0.5, "ward_host_loadavg", "period", "1")
	expect(t, mfs, 1.25, "ward_host_loadavg", "period", "5")
	expect(t, mfs, 2, "ward_host_loadavg", "period", "15")
	expect(t, mfs, 1500, "ward_host_network_receive_bytes_per_second", "interface", "lo")
	expect(t, mfs, 2500, "ward_host_network_transmit_bytes_per_second", "interface", "lo")

	a := []string{"id", "a1", "name", "web", "index", "0"}
	expect(t, mfs, 20, "ward_instance_cpu_percent", a...)
	expect(t, mfs, 128<<20, "ward_instance_memory_bytes", a...)
	expect(t, mfs, 256<<20, "ward_instance_memory_limit_bytes", a...)
	expect(t, mfs, 50, "ward_instance_memory_percent", a...)
	expect(t, mfs, 4096, "ward_instance_io_read_bytes_per_second", a...)
	expect(t, mfs, 8192, "ward_instance_io_write_bytes_per_second", a...)
	expect(t, mfs, 7, "ward_instance_pids", a...)
	expect(t, mfs, 1<<30, "ward_instance_disk_bytes", a...)
	expect(t, mfs, 54.2, "ward_instance_load", a...)
	expect(t, mfs, 46, "ward_instance_weight", a...)

	b := []string{"id", "b2", "name", "worker", "index", "3"}
	expect(t, mfs, 1<<20, "ward_instance_memory_bytes", b...)
	expect(t, mfs, 2<<20, "ward_instance_memory_limit_bytes", b...)
	expect(t, mfs, 50, "ward_instance_memory_percent", b...)
	expect(t, mfs, 1, "ward_instance_pids", b...)
	expect(t, mfs, 12.5, "ward_instance_load", b...)
	expect(t, mfs, 88, "ward_instance_weight", b...)

	// Null figures are left out, not reported as 0.
	absent(t, mfs, "ward_instance_cpu_percent", "id", "b2")
	absent(t, mfs, "ward_instance_io_read_bytes_per_second", "id", "b2")
	absent(t, mfs, "ward_instance_io_write_bytes_per_second", "id", "b2")
	absent(t, mfs, "ward_instance_disk_bytes", "id", "b2")
	absent(t, mfs, "ward_host_network_receive_bytes_per_second", "interface", "eth0")
	absent(t, mfs, "ward_host_network_transmit_bytes_per_second", "interface", "eth0")
}

// TestSampleLabelsBounded: every ward_ family is a known one, every series
// has exactly its family's labels, and the series count is what the sample
// holds, nothing more.
func TestSampleLabelsBounded(t *testing.T) {
	src := &source{}
	src.p.Store(fixedSample())
	mfs := scrape(t, serve(t, newSelf(t, Options{Samples: src})))

	series := 0
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "ward_") {
			continue
		}
		want, ok := wardLabels[name]
		if !ok {
			// Self's own families, which have no instance labels.
			if strings.HasPrefix(name, "ward_host_") || strings.HasPrefix(name, "ward_instance_") &&
				name != "ward_instance_starts_total" && name != "ward_instance_stops_total" {
				t.Errorf("unexpected family %s", name)
			}
			continue
		}
		if mf.GetType().String() != "GAUGE" {
			t.Errorf("%s is a %s, want a gauge", name, mf.GetType())
		}
		for _, m := range mf.Metric {
			if got := labelNames(m); got != want {
				t.Errorf("%s{%s}: labels %q, want %q", name, labelKey(m), got, want)
			}
			series++
		}
	}
	// 1 timestamp + 3 host + 3 loadavg + 2 lo + 10 for a1 + 6 for b2.
	if series != 25 {
		t.Errorf("%d sample series, want 25", series)
	}
}

func TestSampleInstanceGone(t *testing.T) {
	src := &source{}
	src.p.Store(fixedSample())
	base := serve(t, newSelf(t, Options{Samples: src}))

	if _, err := value(scrape(t, base), "ward_instance_memory_bytes", "id", "b2"); err != nil {
		t.Fatal(err)
	}
	s := fixedSample()
	s.Instances = s.Instances[:1]
	src.p.Store(s)
	mfs := scrape(t, base)
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			if labelMap(m)["id"] == "b2" {
				t.Errorf("%s{%s} still exposed after b2 left the sample", name, labelKey(m))
			}
		}
	}
	expect(t, mfs, 128<<20, "ward_instance_memory_bytes", "id", "a1")

	// Before the first sample there is nothing to report.
	src.p.Store(nil)
	mfs = scrape(t, base)
	for name := range wardLabels {
		if _, ok := mfs[name]; ok {
			t.Errorf("%s exposed without a sample", name)
		}
	}
}

// TestSampleBadLabelValue: a label value that is not UTF-8 costs its own
// series, not the scrape.
func TestSampleBadLabelValue(t *testing.T) {
	src := &source{}
	s := fixedSample()
	s.Instances[1].Name = "bad\xff"
	src.p.Store(s)
	base := serve(t, newSelf(t, Options{Samples: src}))
	mfs := scrape(t, base)

	expect(t, mfs, 46, "ward_instance_weight", "id", "a1")
	expect(t, mfs, 43, "ward_host_load_score")
	absent(t, mfs, "ward_instance_weight", "id", "b2")
	// The handler counts the error after gathering, so the next scrape
	// shows it.
	mfs = scrape(t, base)
	if v, err := value(mfs, "promhttp_metric_handler_errors_total", "cause", "gathering"); err != nil || v == 0 {
		t.Errorf("gathering errors = %v, %v; want counted", v, err)
	}
}

// TestSampleCollectorPedantic: the pedantic registry checks each series
// against its descriptor (label names, type), which the ordinary one skips.
func TestSampleCollectorPedantic(t *testing.T) {
	src := &source{}
	src.p.Store(fixedSample())
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewSampleCollector(src)); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != len(wardLabels) {
		t.Errorf("%d families, want %d", len(mfs), len(wardLabels))
	}
}

var _ SampleSource = (*reporter.Sampler)(nil)
var _ SampleSource = (*reporter.Reporter)(nil)
