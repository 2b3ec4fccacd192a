package metrics

import (
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/hostward/ward/reporter"
)

// bigSample is a sample of n instances with every figure known, the most
// series a sample of n can give.
func bigSample(n int) *reporter.Sample {
	s := fixedSample()
	s.Instances = make([]reporter.InstanceSample, n)
	for i := range s.Instances {
		s.Instances[i] = reporter.InstanceSample{
			ID: fmt.Sprintf("c0ffee%010d", i), Name: fmt.Sprintf("app-%d", i%50), Index: i / 50,
			CPUPct: f64(float64(i % 100)), MemBytes: uint64(i) << 20, MemLimitBytes: 256 << 20,
			MemPct: float64(i%100) / 2, IOReadBps: f64(float64(i)), IOWriteBps: f64(float64(2 * i)),
			Pids: uint64(i%30 + 1), DiskBytes: i64(int64(i) << 16), Load: 42.5, Weight: 57,
		}
	}
	return s
}

// BenchmarkScrape1000 is one Prometheus scrape through the real HTTP
// server, gzip included as Prometheus asks for it, with 1,000 instances and
// the Go and process collectors. Allocations are the whole process's:
// server, registry and client.
func BenchmarkScrape1000(b *testing.B) {
	src := &source{}
	src.p.Store(bigSample(1000))
	base := serve(b, newSelf(b, Options{Samples: src}))
	client := &http.Client{Timeout: 30 * time.Second}
	var n int64
	b.ReportAllocs()
	for b.Loop() {
		resp, err := client.Get(base + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		n, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("scrape: %s %v", resp.Status, err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/scrape")
	b.ReportMetric(float64(n), "text-bytes/scrape")
}

// BenchmarkGather1000 is the part that grows with instances: gathering the
// sample collector alone and encoding the text exposition, no HTTP.
func BenchmarkGather1000(b *testing.B) {
	src := &source{}
	src.p.Store(bigSample(1000))
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewSampleCollector(src))
	series := 0
	b.ReportAllocs()
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		series = 0
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
			series += len(mf.Metric)
		}
	}
	b.ReportMetric(float64(series), "series/scrape")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/scrape")
}
