package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hostward/ward/internal/latency"
)

// Run is what one invocation of scripts/bench left in its directory:
//
//	run.txt    "key: value" lines about the whole run (started, finished,
//	           rounds, kernel, rcu_expedited, parts, failed)
//	*.bench    each part's `go test -bench` output, headed by "part:",
//	           "command:", "date:" and "load:" lines, in the order run
//	samples/   raw durations, as internal/latency writes them
type Run struct {
	Dir     string
	Info    map[string]string
	Results []Result
}

// LoadRun reads a run directory.
func LoadRun(dir string) (*Run, error) {
	r := &Run{Dir: dir, Info: map[string]string{}}
	info, err := os.Open(filepath.Join(dir, "run.txt"))
	if err != nil {
		return nil, fmt.Errorf("run directory %s: %w", dir, err)
	}
	defer info.Close()
	sc := bufio.NewScanner(info)
	for sc.Scan() {
		if m := configLine.FindStringSubmatch(strings.TrimSpace(sc.Text())); m != nil {
			r.Info[m[1]] = m[2]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	outs, err := filepath.Glob(filepath.Join(dir, "*.bench"))
	if err != nil {
		return nil, err
	}
	slices.Sort(outs)
	for _, p := range outs {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		res, err := Parse(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		r.Results = append(r.Results, res...)
	}
	return r, nil
}

// Rounds returns the runs of the named benchmark in the order they ran:
// with -count N, round i of every benchmark is its i-th run.
func (r *Run) Rounds(name string) []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Name == name {
			out = append(out, res)
		}
	}
	return out
}

// Samples returns the raw durations of one metric of one benchmark, a
// Sample per round, or nil when the run kept none.
func (r *Run) Samples(bench, metric string) ([]latency.Sample, error) {
	f, err := os.Open(latency.SamplesFile(filepath.Join(r.Dir, "samples"), bench, metric))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rounds, err := latency.ReadRounds(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return rounds, nil
}
