// Package latency collects durations in benchmarks and reports their
// percentiles: on a noisy machine medians and tails say more than a mean.
package latency

import (
	"slices"
	"testing"
	"time"
)

// Sample is a set of measured durations.
type Sample []time.Duration

// Add records one duration.
func (s *Sample) Add(d time.Duration) { *s = append(*s, d) }

// Since records the time elapsed since t0.
func (s *Sample) Since(t0 time.Time) { s.Add(time.Since(t0)) }

// Percentile returns the p-th percentile (0 < p ≤ 100), nearest rank.
func (s Sample) Percentile(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	i := int(float64(len(c))*p/100+0.5) - 1
	return c[max(0, min(i, len(c)-1))]
}

// Report adds name-p50-ms and name-p99-ms metrics to b.
func (s Sample) Report(b *testing.B, name string) {
	b.ReportMetric(float64(s.Percentile(50).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(s.Percentile(99).Microseconds())/1000, name+"-p99-ms")
}
