package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hostward/ward/reporter"
)

// source is a SampleSource whose sample a test swaps.
type source struct {
	p atomic.Pointer[reporter.Sample]
}

func (s *source) Latest() *reporter.Sample { return s.p.Load() }

func f64(v float64) *float64 { return &v }
func i64(v int64) *int64     { return &v }

var sampleTime = time.Date(2026, 11, 22, 3, 25, 0, 500_000_000, time.UTC)

// fixedSample has one instance with every figure and one with every
// nullable figure null, and one interface with rates and one without.
func fixedSample() *reporter.Sample {
	return &reporter.Sample{
		Time: sampleTime,
		Host: reporter.Host{
			CPUPct: 37.5, MemPct: 42.25, Load: 43, Cores: 2,
			LoadAvg: [3]float64{0.5, 1.25, 2},
			Net: map[string]reporter.NetStat{
				"lo":   {RxBytes: 10, TxBytes: 20, RxBps: f64(1500), TxBps: f64(2500)},
				"eth0": {RxBytes: 1, TxBytes: 2}, // first sample: no rates
			},
		},
		Instances: []reporter.InstanceSample{{
			ID: "a1", Name: "web", Index: 0,
			CPUPct: f64(20), MemBytes: 128 << 20, MemLimitBytes: 256 << 20, MemPct: 50,
			IOReadBps: f64(4096), IOWriteBps: f64(8192), Pids: 7, DiskBytes: i64(1 << 30),
			Load: 54.2, Weight: 46,
		}, {
			ID: "b2", Name: "worker", Index: 3,
			MemBytes: 1 << 20, MemLimitBytes: 2 << 20, MemPct: 50, Pids: 1,
			Load: 12.5, Weight: 88,
		}},
	}
}

// serve runs a server for s's registry on 127.0.0.1:0 until the test ends.
func serve(t testing.TB, s *Self) string {
	t.Helper()
	srv, err := Listen("127.0.0.1:0", s.Registry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + srv.Addr().String()
}

// scrape GETs base/metrics and parses the text exposition, failing on a
// duplicate series.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	for name, mf := range mfs {
		seen := map[string]bool{}
		for _, m := range mf.Metric {
			k := labelKey(m)
			if seen[k] {
				t.Errorf("%s{%s} exposed twice", name, k)
			}
			seen[k] = true
		}
	}
	return mfs
}

func labelMap(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.Label {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func labelKey(m *dto.Metric) string {
	var kv []string
	for _, p := range m.Label {
		kv = append(kv, p.GetName()+"="+p.GetValue())
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func labelNames(m *dto.Metric) string {
	var n []string
	for _, p := range m.Label {
		n = append(n, p.GetName())
	}
	sort.Strings(n)
	return strings.Join(n, ",")
}

var errNoSeries = errors.New("no such series")

// value returns the value of the series of family name whose labels include
// want (given as name, value pairs).
func value(mfs map[string]*dto.MetricFamily, name string, want ...string) (float64, error) {
	mf, ok := mfs[name]
	if !ok {
		return 0, fmt.Errorf("%s: %w (no family)", name, errNoSeries)
	}
next:
	for _, m := range mf.Metric {
		l := labelMap(m)
		for i := 0; i < len(want); i += 2 {
			if l[want[i]] != want[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), nil
		case m.Counter != nil:
			return m.Counter.GetValue(), nil
		case m.Untyped != nil:
			return m.Untyped.GetValue(), nil
		}
		return 0, fmt.Errorf("%s%v: not a gauge or counter", name, want)
	}
	return 0, fmt.Errorf("%s%v: %w", name, want, errNoSeries)
}

// expect checks that the series exists with value v.
func expect(t *testing.T, mfs map[string]*dto.MetricFamily, v float64, name string, labels ...string) {
	t.Helper()
	got, err := value(mfs, name, labels...)
	if err != nil {
		t.Error(err)
		return
	}
	if got != v {
		t.Errorf("%s%v = %v, want %v", name, labels, got, v)
	}
}

// absent checks that no series of name has the labels.
func absent(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) {
	t.Helper()
	if v, err := value(mfs, name, labels...); !errors.Is(err, errNoSeries) {
		t.Errorf("%s%v = %v, want no series", name, labels, v)
	}
}
