// Command benchreport turns a run of the comparative benchmark suite
// (scripts/bench) into BENCHMARKS.md's generated sections and a plot of the
// latency distributions. It owns the report's layout: which figures go in
// which table, how rounds are compared (a comparison whose rounds are more
// than 15 % apart is flagged) and which goals are checked. It rewrites only
// the text between `<!-- bench:begin NAME -->` and `<!-- bench:end NAME -->`
// lines; prose and history outside them stay byte for byte, and a section
// the run has no figures for keeps its old text.
//
//	go run ./internal/benchreport -run DIR [-doc BENCHMARKS.md] [-plot docs/bench-latency.png]
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/hostward/ward/atomicfile"
)

// ErrNoResults is returned for a run directory without benchmark results.
var ErrNoResults = errors.New("no benchmark results")

func main() {
	runDir := flag.String("run", "", "directory scripts/bench wrote the run to (required)")
	docPath := flag.String("doc", "BENCHMARKS.md", "document whose generated sections are rewritten")
	plotPath := flag.String("plot", "docs/bench-latency.png", "PNG of the latency distributions; empty: none")
	flag.Parse()
	if *runDir == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: benchreport -run DIR [-doc FILE] [-plot FILE]")
		os.Exit(2)
	}
	if err := run(*runDir, *docPath, *plotPath); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(dir, docPath, plotPath string) error {
	r, err := LoadRun(dir)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	doc, updated, err := Generate(string(old), r)
	if err != nil {
		return fmt.Errorf("%s: %w", docPath, err)
	}
	// The plot first: a document that links a plot of another run would
	// be worse than an old document.
	if plotPath != "" {
		panels, err := r.panels()
		if err != nil {
			return err
		}
		if len(panels) > 0 {
			img, err := Plot(panels)
			if err != nil {
				return err
			}
			if err := atomicfile.WriteFile(plotPath, img, 0o644); err != nil {
				return err
			}
			fmt.Printf("benchreport: wrote %s (%d panels)\n", plotPath, len(panels))
		}
	}
	if err := atomicfile.WriteFile(docPath, []byte(doc), 0o644); err != nil {
		return err
	}
	fmt.Printf("benchreport: rewrote %v in %s\n", updated, docPath)
	return nil
}

// Generate returns doc with the sections the run has figures for
// rewritten, and the names of those sections.
func Generate(doc string, run *Run) (string, []string, error) {
	if len(run.Results) == 0 {
		return "", nil, fmt.Errorf("%w in %s", ErrNoResults, run.Dir)
	}
	r := &report{run: run, ratios: map[string]float64{}}
	var updated []string
	for _, s := range sections {
		body, ok := s.gen(r)
		if !ok {
			continue
		}
		var err error
		if doc, err = ReplaceSection(doc, s.name, body); err != nil {
			return "", nil, fmt.Errorf("section %s: %w", s.name, err)
		}
		updated = append(updated, s.name)
	}
	previous, err := Section(doc, "goals")
	if err != nil {
		return "", nil, fmt.Errorf("section goals: %w", err)
	}
	if doc, err = ReplaceSection(doc, "goals", r.goals(previous)); err != nil {
		return "", nil, fmt.Errorf("section goals: %w", err)
	}
	return doc, append(updated, "goals"), nil
}
