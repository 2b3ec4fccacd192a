package main

import (
	"bufio"
	"fmt"
	"io"
	"maps"
	"regexp"
	"strconv"
	"strings"
)

// Result is one line of `go test -bench` output: one run of one benchmark.
type Result struct {
	Name    string             // without the -GOMAXPROCS suffix, e.g. BenchmarkSample/ward/instances=10
	Procs   int                // the suffix; 1 when there is none
	N       int64              // iterations
	Metrics map[string]float64 // unit → value, e.g. "cycle-p50-ms" → 4.42
	Config  map[string]string  // the configuration lines in force (pkg, command, date, ...)
}

var (
	// A configuration line, as the Go benchmark format defines it: a key
	// starting with a lower-case letter, a colon, a space and a value.
	configLine = regexp.MustCompile(`^([a-z][^\s:]*): (.*)$`)
	procsTail  = regexp.MustCompile(`^(.*)-(\d+)$`)
)

// Parse reads benchmark output. Lines that are neither configuration nor
// results (test logs, PASS, ok) are skipped. A benchmark whose process
// wrote to the shared output while it ran has its name and figures on
// different lines; the figures are joined to the name before them.
func Parse(r io.Reader) ([]Result, error) {
	var out []Result
	config := map[string]string{}
	pending := "" // a benchmark name whose figures have not come yet
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), " \t\r")
		if m := configLine.FindStringSubmatch(text); m != nil {
			config[m[1]] = m[2]
			continue
		}
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		name, figures := "", fields
		if strings.HasPrefix(fields[0], "Benchmark") {
			name, figures = fields[0], fields[1:]
			if len(figures) == 0 {
				pending = name
				continue
			}
		} else if pending != "" {
			name = pending
		} else {
			continue
		}
		named := strings.HasPrefix(fields[0], "Benchmark")
		res, ok, err := result(name, figures)
		switch {
		case !named && (err != nil || !ok):
			continue // output of the benchmark's process, between name and figures
		case err != nil:
			return nil, fmt.Errorf("line %d: %w", line, err)
		case !ok:
			pending = name // a name followed by output: the figures may follow
			continue
		}
		pending = ""
		res.Config = maps.Clone(config)
		out = append(out, res)
	}
	return out, sc.Err()
}

// result reads "N value unit value unit ...". ok is false when the fields
// do not start with an iteration count.
func result(name string, f []string) (Result, bool, error) {
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || len(f) < 3 {
		return Result{}, false, nil
	}
	if len(f)%2 != 1 {
		return Result{}, false, fmt.Errorf("%s: a value without a unit in %q", name, strings.Join(f, " "))
	}
	res := Result{Name: name, Procs: 1, N: n, Metrics: map[string]float64{}}
	if m := procsTail.FindStringSubmatch(name); m != nil {
		res.Name = m[1]
		res.Procs, _ = strconv.Atoi(m[2])
	}
	for i := 1; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Result{}, false, fmt.Errorf("%s: %q is not a number (unit %s)", name, f[i], f[i+1])
		}
		res.Metrics[f[i+1]] = v
	}
	return res, true, nil
}
