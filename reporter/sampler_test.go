package reporter

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostward/ward/cgroup"
)

// fakeFS copies the v2 group fixture to one directory per name, and the
// proc fixture, into a temp dir that the test then edits between samples.
type fakeFS struct {
	t    testing.TB
	root string
}

func newFakeFS(t testing.TB, groups ...string) *fakeFS {
	f := &fakeFS{t: t, root: t.TempDir()}
	for _, g := range groups {
		f.copyDir("v2", g)
	}
	f.copyDir("proc", "proc")
	return f
}

func (f *fakeFS) copyDir(from, to string) {
	ents, err := os.ReadDir(filepath.Join("testdata", from))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.root, to), 0o755); err != nil {
		f.t.Fatal(err)
	}
	for _, e := range ents {
		f.write(filepath.Join(to, e.Name()), string(fixture(f.t, filepath.Join(from, e.Name()))))
	}
}

// write rewrites a file in place (same inode), as the kernel's files change
// under the sampler's open descriptors.
func (f *fakeFS) write(name, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.root, name), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeFS) dir(name string) string { return filepath.Join(f.root, name) }

func newFakeSampler(t *testing.T, f *fakeFS, clock *time.Time) *Sampler {
	t.Helper()
	s, err := NewSampler(SamplerOptions{Mode: cgroup.V2, Weights: defaultWeights, Proc: f.dir("proc")})
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return *clock }
	t.Cleanup(func() { s.Close() })
	return s
}

func val(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

func wantNear(t *testing.T, what string, got *float64, want float64) {
	t.Helper()
	if got == nil || !near(*got, want) {
		t.Errorf("%s = %v, want %v", what, val(got), want)
	}
}

// TestSampleV2 drives the sampler over a fake v2 cgroupfs and a fake
// /proc with a fake clock, and checks every figure against the arithmetic
// of the package doc.
func TestSampleV2(t *testing.T) {
	f := newFakeFS(t, "a", "b")
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	clock := t0
	s := newFakeSampler(t, f, &clock)

	const mib = 1 << 20
	disk := int64(3 * mib)
	list := []Instance{
		{ID: "a", Name: "web", Index: 2, Dirs: []string{f.dir("a")}, MemoryLimit: 100 * mib, CPUShares: 1024,
			Started: t0.Add(-10 * time.Second), Disk: func() (int64, bool) { return disk, true }},
		{ID: "b", Name: "worker", Dirs: []string{f.dir("b")}, CPUShares: 3072,
			Disk: func() (int64, bool) { return 0, false }},
	}

	// First sample: rates of a are averages since it started, b has none.
	s1, err := s.Sample(list)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1.Instances) != 2 {
		t.Fatalf("got %d instances, want 2", len(s1.Instances))
	}
	a, b := s1.Instances[0], s1.Instances[1]
	if a.ID != "a" || a.Name != "web" || a.Index != 2 || b.ID != "b" {
		t.Errorf("identity or order lost: %+v %+v", a, b)
	}
	wantNear(t, "a cpu_pct since start", a.CPUPct, 2.5/10*100)
	wantNear(t, "a io_read_bps since start", a.IOReadBps, (1048576+4096)/10.0)
	wantNear(t, "a io_write_bps since start", a.IOWriteBps, (20971520+8192)/10.0)
	if b.CPUPct != nil || b.IOReadBps != nil || b.CPUSharePct != nil {
		t.Errorf("b has no start time and no previous reading, yet cpu %v io %v share %v", val(b.CPUPct), val(b.IOReadBps), val(b.CPUSharePct))
	}
	if a.DiskBytes == nil || *a.DiskBytes != disk || b.DiskBytes != nil {
		t.Errorf("disk: a %v b %v", a.DiskBytes, b.DiskBytes)
	}
	ct, _ := parseProcStat(fixture(t, "proc/stat"))
	h := s1.Host
	if h.Cores != 2 || !near(h.CPUPct, float64(ct.busy)/float64(ct.total)*100) {
		t.Errorf("first host sample: cores %d cpu %v, want 2 cores and the average since boot", h.Cores, h.CPUPct)
	}
	memTotal, memAvail := uint64(24684092*1024), uint64(14810455*1024)
	hostMemPct := float64(memTotal-memAvail) / float64(memTotal) * 100
	if h.MemTotalBytes != memTotal || h.MemAvailableBytes != memAvail || !near(h.MemPct, hostMemPct) || h.LoadAvg != [3]float64{3.02, 1.45, 0.07} {
		t.Errorf("host memory/loadavg = %+v", h)
	}

	// Two seconds on: a used one more CPU second and wrote 2 MiB, the host
	// had 100 busy and 100 idle ticks.
	f.write("a/cpu.stat", "usage_usec 3500000\nuser_usec 3000000\n")
	f.write("a/io.stat", "254:0 rbytes=1048576 wbytes=23068672\n7:0 rbytes=4096 wbytes=8192\n")
	f.write("proc/stat", "cpu  139500 0 78410 627052 5503 0 1940 148 0 0\ncpu0 1\ncpu1 1\nintr 1\n")
	clock = t0.Add(2 * time.Second)
	s2, err := s.Sample(list)
	if err != nil {
		t.Fatal(err)
	}
	a, b = s2.Instances[0], s2.Instances[1]
	wantNear(t, "a cpu_pct", a.CPUPct, 50)
	wantNear(t, "a io_write_bps", a.IOWriteBps, mib)
	wantNear(t, "a io_read_bps", a.IOReadBps, 0)
	wantNear(t, "b cpu_pct", b.CPUPct, 0)
	if !near(s2.Host.CPUPct, 50) {
		t.Errorf("host cpu_pct = %v, want 50 (100 busy of 200 ticks)", s2.Host.CPUPct)
	}
	// Fair shares: 2 cores split 1024:3072.
	if !near(a.FairShareCores, 0.5) || !near(b.FairShareCores, 1.5) {
		t.Errorf("fair shares a %v b %v, want 0.5 and 1.5 cores", a.FairShareCores, b.FairShareCores)
	}
	wantNear(t, "a cpu_share_pct", a.CPUSharePct, 100)
	ws := uint64(52428800 + 8388608 - 6291456)
	if a.MemBytes != ws || a.MemLimitBytes != 100*mib || !near(a.MemPct, float64(ws)/(100*mib)*100) {
		t.Errorf("a memory = %d of %d (%v%%)", a.MemBytes, a.MemLimitBytes, a.MemPct)
	}
	if b.MemLimitBytes != memTotal {
		t.Errorf("b has no limit: mem_limit_bytes = %d, want host memory %d", b.MemLimitBytes, memTotal)
	}
	if a.Pids != 7 {
		t.Errorf("a pids = %d", a.Pids)
	}
	hostLoad := 0.3*50 + 0.7*hostMemPct
	if !near(s2.Host.Load, hostLoad) {
		t.Errorf("host load = %v, want %v", s2.Host.Load, hostLoad)
	}
	aLoad := 0.3*hostLoad + 0.7*(0.3*100+0.7*a.MemPct)
	if !near(a.Load, aLoad) || a.Weight != Weight(aLoad) {
		t.Errorf("a load %v weight %d, want %v and %d", a.Load, a.Weight, aLoad, Weight(aLoad))
	}

	// Latest and Lookup serve the sample just taken.
	if s.Latest() != s2 {
		t.Error("Latest is not the last sample")
	}
	if got, ok := s.Lookup("a"); !ok || got.Load != a.Load {
		t.Errorf("Lookup(a) = %+v, %v", got, ok)
	}
	if _, ok := s.Lookup("nope"); ok {
		t.Error("Lookup of an unknown id succeeded")
	}

	// b stops being listed: its state and descriptors go.
	clock = t0.Add(4 * time.Second)
	if _, err := s.Sample(list[:1]); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.insts["b"]; ok || len(s.insts) != 1 {
		t.Errorf("state of b kept after it left: %d states", len(s.insts))
	}
	if _, ok := s.Lookup("b"); ok {
		t.Error("Lookup(b) after b left")
	}

	// A counter that went backwards is a new group: no negative rate, the
	// average since start instead.
	f.write("a/cpu.stat", "usage_usec 1000000\n")
	clock = t0.Add(6 * time.Second)
	s4, err := s.Sample(list[:1])
	if err != nil {
		t.Fatal(err)
	}
	wantNear(t, "a cpu_pct after a counter reset", s4.Instances[0].CPUPct, 1.0/16*100)
}

func TestSampleLeavesOutBadInstances(t *testing.T) {
	f := newFakeFS(t, "a", "noio")
	os.Remove(f.dir("noio/io.stat")) // io controller not enabled
	clock := time.Now()
	s := newFakeSampler(t, f, &clock)
	list := []Instance{
		{ID: "", Dirs: []string{f.dir("a")}},
		{ID: "two", Dirs: []string{f.dir("a"), f.dir("a")}},
		{ID: "rel", Dirs: []string{"a"}},
		{ID: "a", Dirs: []string{f.dir("a")}},
		{ID: "a", Dirs: []string{f.dir("a")}},
		{ID: "noio", Dirs: []string{f.dir("noio")}},
		{ID: "gone", Dirs: []string{f.dir("gone")}},
	}
	smp, err := s.Sample(list)
	if smp == nil || len(smp.Instances) != 2 || smp.Instances[0].ID != "a" || smp.Instances[1].ID != "noio" {
		t.Fatalf("sample = %+v, want a and noio", smp)
	}
	for _, want := range []string{`instance: id: required`, `"two": dirs: want 1`, `"rel": dirs: "a" is not absolute`, `"a": id: listed twice`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to say %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "gone") || strings.Contains(err.Error(), "noio") {
		t.Errorf("a vanished group or a missing io controller is not an error: %v", err)
	}
	if n := smp.Instances[1]; n.IOReadBps != nil || n.IOWriteBytes != 0 || n.Pids != 7 {
		t.Errorf("noio: %+v", n)
	}

	// Many failures read as a few errors and a count.
	var bad []Instance
	for i := range 15 {
		bad = append(bad, Instance{ID: fmt.Sprintf("bad%d", i), Dirs: []string{"rel"}})
	}
	_, err = s.Sample(bad)
	if err == nil || strings.Count(err.Error(), "is not absolute") != maxInstanceErrors || !strings.Contains(err.Error(), "5 more instances left out") {
		t.Errorf("15 bad instances: %v", err)
	}

	// A file that is not what the kernel writes is an error naming it.
	f.write("a/memory.stat", "anon x\n")
	smp, err = s.Sample(list[3:4])
	if err == nil || !strings.Contains(err.Error(), "memory.stat") || len(smp.Instances) != 0 {
		t.Errorf("malformed memory.stat: %v, %d instances", err, len(smp.Instances))
	}

	s.Close()
	if smp, err := s.Sample(list); err != ErrClosed || smp != nil {
		t.Errorf("Sample after Close = %v, %v", smp, err)
	}
	if s.Latest() == nil {
		t.Error("Latest lost by Close")
	}
}

func TestNewSamplerRejectsBadOptions(t *testing.T) {
	for field, o := range map[string]SamplerOptions{
		"mode": {Mode: 3, Weights: defaultWeights},
		"proc": {Mode: cgroup.V2, Weights: defaultWeights, Proc: "proc"},
	} {
		if _, err := NewSampler(o); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%+v: err = %v, want one naming %s", o, err, field)
		}
	}
	if _, err := NewSampler(SamplerOptions{Mode: cgroup.V2, Weights: defaultWeights, Proc: t.TempDir()}); err == nil {
		t.Error("a proc dir without stat/meminfo/loadavg was accepted")
	}
}

// TestLookupDuringSample is for the race detector: lookups run while
// samples replace the snapshot.
func TestLookupDuringSample(t *testing.T) {
	f := newFakeFS(t, "a")
	clock := time.Now()
	s := newFakeSampler(t, f, &clock)
	list := []Instance{{ID: "a", Dirs: []string{f.dir("a")}}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if in, ok := s.Lookup("a"); ok && in.ID != "a" {
					t.Error("torn read")
				}
			}
		}()
	}
	for range 200 {
		clock = clock.Add(time.Second)
		if _, err := s.Sample(list); err != nil {
			t.Error(err)
			break
		}
	}
	close(stop)
	wg.Wait()
}

// BenchmarkLookup is what an info request pays for an instance's figures
// once it reads the reporter's snapshot (1,000 instances sampled).
func BenchmarkLookup(b *testing.B) {
	f := newFakeFS(b, "a")
	s, err := NewSampler(SamplerOptions{Mode: cgroup.V2, Weights: defaultWeights, Proc: f.dir("proc")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	list := make([]Instance, 1000)
	for i := range list {
		list[i] = Instance{ID: "i" + strconv.Itoa(i), Dirs: []string{f.dir("a")}}
	}
	if _, err := s.Sample(list); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := s.Lookup("i500"); !ok {
				b.Fatal("not found")
			}
		}
	})
}
