// Package latency collects durations in benchmarks and reports their
// percentiles: on a noisy machine medians and tails say more than a mean.
// It also owns the raw-sample files benchmarks leave for the report
// generator (scripts/bench), so both sides read and write one format.
package latency

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// SamplesEnv names the directory Report appends raw samples to. Unset,
// Report writes nothing.
const SamplesEnv = "WARD_BENCH_SAMPLES"

// Report adds name-p50-ms and name-p99-ms metrics to b and, when
// $WARD_BENCH_SAMPLES names a directory, appends the raw durations to
// SamplesFile(dir, b.Name(), name) as one line: one line per run, so with
// -count N a file holds N rounds in order.
//
// A sample of fewer than two durations is not written: the testing package
// calls every benchmark once with b.N = 1 before the measured run (and
// again before each -count round), and that probe's single duration would
// otherwise pass for a round of its own.
func (s Sample) Report(b *testing.B, name string) {
	b.ReportMetric(float64(s.Percentile(50).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(s.Percentile(99).Microseconds())/1000, name+"-p99-ms")
	dir := os.Getenv(SamplesEnv)
	if dir == "" || len(s) < 2 {
		return
	}
	if err := s.appendTo(SamplesFile(dir, b.Name(), name)); err != nil {
		b.Errorf("saving raw samples: %v", err)
	}
}

// SamplesFile is where the raw samples of metric name of the benchmark
// called bench (as b.Name() spells it; a sub-benchmark's slashes become
// "~") are kept under dir.
func SamplesFile(dir, bench, name string) string {
	return filepath.Join(dir, strings.ReplaceAll(bench, "/", "~")+"."+name+".txt")
}

func (s Sample) appendTo(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	werr := s.WriteLine(f)
	if err := f.Close(); werr == nil {
		werr = err
	}
	return werr
}

// WriteLine writes s as one line of nanosecond counts separated by spaces,
// in the order they were measured.
func (s Sample) WriteLine(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for i, d := range s {
		if i > 0 {
			bw.WriteByte(' ')
		}
		bw.WriteString(strconv.FormatInt(int64(d), 10))
	}
	bw.WriteByte('\n')
	return bw.Flush()
}

// ErrBadSamples is returned for a samples file that is not lines of
// nanosecond counts.
var ErrBadSamples = errors.New("malformed samples file")

// ReadRounds reads what WriteLine wrote, one Sample per line (per round).
func ReadRounds(r io.Reader) ([]Sample, error) {
	var rounds []Sample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		s := make(Sample, 0, len(fields))
		for _, f := range fields {
			ns, err := strconv.ParseInt(f, 10, 64)
			if err != nil || ns < 0 {
				return nil, fmt.Errorf("%w: line %d: %q is not a duration in ns", ErrBadSamples, line, f)
			}
			s = append(s, time.Duration(ns))
		}
		rounds = append(rounds, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return rounds, nil
}
