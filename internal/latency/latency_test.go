package latency

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var s Sample
	for i := 100; i >= 1; i-- {
		s.Add(time.Duration(i) * time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 1: time.Millisecond} {
		if got := s.Percentile(p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if (Sample{}).Percentile(50) != 0 {
		t.Error("empty sample")
	}
}

func TestRoundsRoundTrip(t *testing.T) {
	rounds := []Sample{{3 * time.Millisecond, time.Microsecond, 1}, {42 * time.Second}}
	var buf bytes.Buffer
	for _, r := range rounds {
		if err := r.WriteLine(&buf); err != nil {
			t.Fatal(err)
		}
	}
	if got := buf.String(); got != "3000000 1000 1\n42000000000\n" {
		t.Fatalf("written %q", got)
	}
	got, err := ReadRounds(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.Equal(got[0], rounds[0]) || !slices.Equal(got[1], rounds[1]) {
		t.Fatalf("read %v, want %v", got, rounds)
	}
}

func TestReadRoundsRejectsGarbage(t *testing.T) {
	for _, in := range []string{"1 2 x\n", "5\n-3\n", "1.5\n"} {
		_, err := ReadRounds(strings.NewReader(in))
		if !errors.Is(err, ErrBadSamples) {
			t.Errorf("%q: err %v, want ErrBadSamples", in, err)
		}
	}
}

// Report appends one line per measured run and leaves out the b.N = 1
// probe runs, whose sample has a single duration.
func TestReportWritesSamples(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(SamplesEnv, dir)
	testing.Benchmark(func(b *testing.B) {
		Sample{time.Millisecond, 2 * time.Millisecond, 3 * time.Millisecond}.Report(b, "three")
		Sample{time.Millisecond}.Report(b, "one")
	})
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || !strings.HasSuffix(ents[0].Name(), ".three.txt") {
		t.Fatalf("files %v, want one *.three.txt", ents)
	}
	f, err := os.Open(filepath.Join(dir, ents[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rounds, err := ReadRounds(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rounds) == 0 {
		t.Fatal("no rounds written")
	}
	for _, r := range rounds {
		if len(r) != 3 || r[2] != 3*time.Millisecond {
			t.Errorf("round %v, want the three durations", r)
		}
	}
}

func TestSamplesFileNamesSubBenchmarks(t *testing.T) {
	got := SamplesFile("/d", "BenchmarkSample/ward/instances=10", "cycle")
	if want := "/d/BenchmarkSample~ward~instances=10.cycle.txt"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}
