package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hostward/ward/internal/latency"
)

var update = flag.Bool("update", false, "rewrite testdata/doc.golden.md from the current output")

func TestParse(t *testing.T) {
	in := `part: start
command: go test -bench x ./agent/
goos: linux
pkg: github.com/hostward/ward/agent
BenchmarkCompareCycle-2   	     300	  76126797 ns/op	         4.594 cgexec-create-p50-ms	        7.712 cycle-p50-ms
    bench_linux_test.go:60: a log line: 12 things
BenchmarkOOMKill-2   	2026/11/22 05:38:47 WARN instance out of memory
2026/11/22 05:38:47 INFO instance ended
12 of them were killed
     200	  48405510 ns/op	         9.185 notified-to-dead-p50-ms
pkg: github.com/hostward/ward/reporter
BenchmarkAgent/ward/instances=1000/interval=2s-2  	       1	12228821900 ns/op	         1.426 cpu-%
--- BENCH: BenchmarkAgent/ward/instances=1000/interval=2s-2
BenchmarkSample/ward/host-only 	 23730	 107663 ns/op	 84.67 cpu-µs/sample
PASS
ok  	github.com/hostward/ward/reporter	128.772s
`
	res, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name   string
		procs  int
		n      int64
		metric string
		value  float64
		pkg    string
	}{
		{"BenchmarkCompareCycle", 2, 300, "cycle-p50-ms", 7.712, "github.com/hostward/ward/agent"},
		{"BenchmarkOOMKill", 2, 200, "notified-to-dead-p50-ms", 9.185, "github.com/hostward/ward/agent"},
		{"BenchmarkAgent/ward/instances=1000/interval=2s", 2, 1, "cpu-%", 1.426, "github.com/hostward/ward/reporter"},
		{"BenchmarkSample/ward/host-only", 1, 23730, "cpu-µs/sample", 84.67, "github.com/hostward/ward/reporter"},
	}
	if len(res) != len(want) {
		t.Fatalf("parsed %d results, want %d: %+v", len(res), len(want), res)
	}
	for i, w := range want {
		r := res[i]
		if r.Name != w.name || r.Procs != w.procs || r.N != w.n || r.Metrics[w.metric] != w.value || r.Config["pkg"] != w.pkg {
			t.Errorf("result %d = %+v, want %+v", i, r, w)
		}
	}
	if res[0].Config["command"] != "go test -bench x ./agent/" || res[0].Metrics["ns/op"] != 76126797 {
		t.Errorf("first result: %+v", res[0])
	}
}

func TestParseRejectsBrokenFigures(t *testing.T) {
	for _, in := range []string{
		"BenchmarkX-2 \t 10 \t 5 ns/op \t 7\n",
		"BenchmarkX-2 \t 10 \t 5 ns/op \t seven cycle-p50-ms\n",
	} {
		if _, err := Parse(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "BenchmarkX") {
			t.Errorf("%q: err %v, want one naming the benchmark", in, err)
		}
	}
}

// generate runs the generator over testdata/run and testdata/doc.md.
func generate(t *testing.T) (in, out string) {
	t.Helper()
	run, err := LoadRun("testdata/run")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/doc.md")
	if err != nil {
		t.Fatal(err)
	}
	out, updated, err := Generate(string(raw), run)
	if err != nil {
		t.Fatal(err)
	}
	want := "[start oomkill oomdetect sampling bus quota startquota acl scale goals]"
	if got := fmt.Sprint(updated); got != want {
		t.Errorf("updated %s, want %s", got, want)
	}
	return string(raw), out
}

// The tables of a real run (trimmed), against a reviewed copy.
func TestGenerateGolden(t *testing.T) {
	_, out := generate(t)
	const golden = "testdata/doc.golden.md"
	if *update {
		if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("generated document differs from %s (go test -update to rewrite it after review):\n%s", golden, out)
	}
}

var markedBody = regexp.MustCompile(`(?s)(<!-- bench:begin (\w+) -->\n).*?(<!-- bench:end (\w+) -->)`)

func TestGenerateTouchesOnlyMarkedText(t *testing.T) {
	in, out := generate(t)
	strip := func(s string) string { return markedBody.ReplaceAllString(s, "$1$3") }
	if strip(in) != strip(out) {
		t.Errorf("text outside the markers changed:\n%s", strip(out))
	}
	if in == out {
		t.Error("nothing was generated")
	}
}

func TestGenerateSpecificFigures(t *testing.T) {
	_, out := generate(t)
	for _, want := range []string{
		// start, round 1: ward cycle 7.71 ms, runc 33.59 ms → 4.36×; the
		// rounds' runc/ward ratios are 61 % apart and flagged.
		"| 1 | 7.71 | 23.93 | 33.59 | 53.95 | 30.51 | 51.37 | 4.36× | 3.96× |",
		"**61 % > 15 %**",
		"**Rounds more than 15 % apart:** start/stop: runc/ward p50 (61 %); start/stop: cgexec/ward p50 (54 %).",
		// goals, named with their figures
		"| start p99 ≤ 10 ms | 19.75 ms / 19.64 ms / 23.52 ms | **MISSED** |",
		"| sampling ≤ 20 µs CPU per instance per sample (1,000 instances) | 20.2 µs / 19.6 µs / 19.7 µs | **MISSED in 1 of 3 rounds** |",
		"| agent-like process < 2 % of a core at 1,000 instances | 1.43 % / 1.52 % / 1.20 % | met |",
		"| 2,000 instances started and stopped, nothing leaked | 0 | met |",
		// the split name/figures of BenchmarkOOMKill
		"| 1 | 9.19 | 26.28 |",
		// the command and date of the part
		"go test -run '^$' -bench '^BenchmarkCompareCycle$' -benchtime 300x -count 3 ./agent/",
		"the run of 2026-11-22 05:37 UTC",
		// the rerun check against the ratios the old goals section kept
		"| start/stop cycle, runc/ward p50 | 4.80× | 3.47× | **-28 %** |",
		"| sampling at 1,000 instances, containerd/ward CPU | 25.00× | 25.47× | +2 % |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// A run without figures for a section leaves that section as it was;
// the goals it would have measured say so.
func TestGenerateKeepsSectionsWithoutData(t *testing.T) {
	dir := writeRun(t, "started: 2026-11-22T06:00:00Z\nparts: start oom bus acl\nfailed:  oom\n", map[string]string{
		"01-bus.bench": "part: bus\ncommand: go test -bench Info ./bus/\ndate: 2026-11-22T06:00:01Z\nload: 1.5 1 1\n" +
			"BenchmarkInfo-2 \t 5000 \t 1 ns/op \t 0.9 info-p50-ms \t 3.7 info-p99-ms \t 7374 req/s\n",
	}, nil)
	raw, _ := os.ReadFile("testdata/doc.md")
	out := mustGenerate(t, dir, string(raw))
	for _, want := range []string{
		"old start table\n",
		"old scale table, kept when a run has no scale figures\n",
		"| 1 | 0.900 | 3.70 | 7,374 |",
		"| bus ≥ 2,000 `info` requests/s | 7,374/s | met |",
		"| bus `info` p99 < 1 ms with 8 clients flat out | 3.70 ms | **MISSED** |",
		"| start p50 ≤ 3 ms | – | **not measured: the start part reported no figures for it** |",
		"| disk quota adds ≤ 0.5 ms to a start (p50) | – | not measured in this run |",
		"| OOM kill, notified to dead, p99 < 20 ms | – | **not measured: the oom part failed** |",
		"not measured in this run (`scripts/bench --with-scale`)",
		"load average 1.5 when this part began",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func compareLine(runcMs, wardMs float64) string {
	return fmt.Sprintf("BenchmarkCompareCycle-2 \t 300 \t 1 ns/op \t %g cycle-p50-ms \t %g runc-cycle-p50-ms \t %g cgexec-cycle-p50-ms\n",
		wardMs, runcMs, runcMs)
}

func TestSpreadFlagsOnlyComparisonsOver15Percent(t *testing.T) {
	head := "part: start\ncommand: c\ndate: 2026-11-22T06:00:00Z\n"
	cases := []struct {
		name  string
		lines string
		flag  bool
	}{
		{"10 % apart", compareLine(25, 5) + compareLine(27.5, 5), false},
		{"20 % apart", compareLine(25, 5) + compareLine(30, 5), true},
		{"absolute figures apart, ratios equal", compareLine(25, 5) + compareLine(50, 10), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeRun(t, "started: 2026-11-22T06:00:00Z\n", map[string]string{"01-start.bench": head + c.lines}, nil)
			out := mustGenerate(t, dir, "<!-- bench:begin goals -->\n<!-- bench:end goals -->\n<!-- bench:begin start -->\n<!-- bench:end start -->\n")
			flagged := strings.Contains(out, "**Rounds more than 15 % apart:** start/stop: runc/ward p50")
			if flagged != c.flag || strings.Contains(out, "within 15 %") == c.flag {
				t.Errorf("flagged %v, want %v:\n%s", flagged, c.flag, out)
			}
		})
	}
}

func TestRerunCheck(t *testing.T) {
	head := "part: start\ncommand: c\ndate: 2026-11-22T06:00:00Z\n"
	doc := "<!-- bench:begin goals -->\n<!-- bench:ratios {\"date\":\"2026-11-21T06:00:00Z\",\"ratios\":{\"start/stop cycle, runc/ward p50\":4}} -->\n<!-- bench:end goals -->\n" +
		"<!-- bench:begin start -->\n<!-- bench:end start -->\n"
	dir := writeRun(t, "started: 2026-11-22T06:00:00Z\n", map[string]string{"01-start.bench": head + compareLine(25, 5) + compareLine(25, 5)}, nil)
	out := mustGenerate(t, dir, doc)
	if want := "| start/stop cycle, runc/ward p50 | 4.00× | 5.00× | **+25 %** |"; !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	if !strings.Contains(out, "previous run's (2026-11-21 06:00 UTC)") {
		t.Errorf("the previous run is not named:\n%s", out)
	}
	// Generated again from the same run: still compared with the run
	// before, not with itself.
	again := mustGenerate(t, dir, out)
	if again != out {
		t.Errorf("regenerating the same run changed the document:\n%s", again)
	}
}

func TestMarkerErrors(t *testing.T) {
	for _, doc := range []string{
		"no markers at all\n",
		"<!-- bench:begin start -->\n",
		"<!-- bench:end start -->\n<!-- bench:begin start -->\n",
		"<!-- bench:begin start -->\n<!-- bench:end start -->\n<!-- bench:begin start -->\n<!-- bench:end start -->\n",
	} {
		_, err := ReplaceSection(doc, "start", "x\n")
		if !errors.Is(err, ErrMarkers) || !strings.Contains(err.Error(), "bench:begin start") && !strings.Contains(err.Error(), "bench:end start") {
			t.Errorf("%q: err %v, want ErrMarkers naming the section", doc, err)
		}
	}
	got, err := ReplaceSection("a\n  <!-- bench:begin s -->\nold\n<!-- bench:end s -->\nb", "s", "new")
	if err != nil || got != "a\n  <!-- bench:begin s -->\nnew\n<!-- bench:end s -->\nb" {
		t.Errorf("got %q, %v", got, err)
	}
	// A run with start figures and a document without start markers: an
	// error naming the section, and nothing written.
	dir := writeRun(t, "", map[string]string{"01-start.bench": "date: x\n" + compareLine(25, 5)}, nil)
	run, err := LoadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Generate("<!-- bench:begin goals -->\n<!-- bench:end goals -->\n", run); !errors.Is(err, ErrMarkers) || !strings.Contains(err.Error(), "section start") {
		t.Errorf("err %v, want ErrMarkers for section start", err)
	}
}

func TestNoResults(t *testing.T) {
	dir := writeRun(t, "started: 2026-11-22T06:00:00Z\n", map[string]string{"01-start.bench": "FAIL\n"}, nil)
	run, err := LoadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Generate("", run); !errors.Is(err, ErrNoResults) {
		t.Errorf("err %v, want ErrNoResults", err)
	}
	if _, err := LoadRun(t.TempDir()); err == nil {
		t.Error("a directory without run.txt was accepted")
	}
}

// The plot has one panel per group with samples, and each series is
// drawn in its colour inside its panel.
func TestPlot(t *testing.T) {
	run, err := LoadRun("testdata/run")
	if err != nil {
		t.Fatal(err)
	}
	panels, err := run.panels()
	if err != nil {
		t.Fatal(err)
	}
	if len(panels) != 3 || len(panels[0].series) != 3 || len(panels[1].series) != 1 || len(panels[2].series) != 1 {
		t.Fatalf("panels: %d", len(panels))
	}
	if n := len(panels[0].series[0].data); n != 120 {
		t.Errorf("ward series has %d samples, want 3 rounds × 40", n)
	}
	raw, err := Plot(panels)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != plotWidth || b.Dy() != 3*panelHeight {
		t.Fatalf("size %v", b)
	}
	for i, p := range panels {
		for _, s := range p.series {
			found := 0
			// Inside the plot area, above the legend.
			for y := i*panelHeight + marginTop; y < (i+1)*panelHeight-marginBot; y++ {
				for x := marginLeft; x < plotWidth-marginRight; x++ {
					r, g, b, _ := img.At(x, y).RGBA()
					if uint8(r>>8) == s.color.R && uint8(g>>8) == s.color.G && uint8(b>>8) == s.color.B {
						found++
					}
				}
			}
			if found < 50 {
				t.Errorf("panel %q: series %q has %d pixels drawn", p.title, s.label, found)
			}
		}
	}
	if _, err := Plot(nil); err == nil {
		t.Error("a plot of nothing was drawn")
	}
	// Only the bus kept samples: one panel, the others left out.
	dir := writeRun(t, "", map[string]string{"01-bus.bench": "BenchmarkInfo-2 \t 3 \t 1 ns/op \t 1 info-p50-ms\n"},
		map[string][]latency.Sample{"BenchmarkInfo.info.txt": {{time.Millisecond, 2 * time.Millisecond}}})
	run, err = LoadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	if panels, err := run.panels(); err != nil || len(panels) != 1 || panels[0].series[0].label != "info" {
		t.Errorf("panels %+v, %v; want the bus panel alone", panels, err)
	}
}

func TestYScale(t *testing.T) {
	for p, want := range map[float64]float64{0: 0, 0.25: 0.5, 0.5: 1, 0.9: 2, 0.99: 3, 0.999: 4} {
		if got := yOf(p); got < want-1e-9 || got > want+1e-9 {
			t.Errorf("yOf(%v) = %v, want %v", p, got, want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		u    unit
		v    float64
		want string
	}{
		{ms, 0.0384, "0.038"}, {ms, 7.712, "7.71"}, {ms, 1234.4, "1234"}, {ratio, 4.3567, "4.36×"},
		{pct, 1.426, "1.43 %"}, {rate, 7373.6, "7,374"}, {rate, 999, "999"}, {rate, 1234567, "1,234,567"},
		{usec, 19.65, "19.6"}, {count, 0, "0"},
	} {
		if got := c.u.format(c.v); got != c.want {
			t.Errorf("format(%v, %v) = %q, want %q", c.u, c.v, got, c.want)
		}
	}
}

func writeRun(t *testing.T, runTxt string, outs map[string]string, samples map[string][]latency.Sample) string {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "run.txt"), []byte(runTxt), 0o644))
	for name, text := range outs {
		must(os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	must(os.MkdirAll(filepath.Join(dir, "samples"), 0o755))
	for name, rounds := range samples {
		var buf bytes.Buffer
		for _, r := range rounds {
			must(r.WriteLine(&buf))
		}
		must(os.WriteFile(filepath.Join(dir, "samples", name), buf.Bytes(), 0o644))
	}
	return dir
}

func mustGenerate(t *testing.T, dir, doc string) string {
	t.Helper()
	run, err := LoadRun(dir)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := Generate(doc, run)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
