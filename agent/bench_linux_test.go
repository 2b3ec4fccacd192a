package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/latency"
	"github.com/hostward/ward/internal/leakcheck"
	"github.com/hostward/ward/internal/testroot"
)

// BenchmarkStartStop measures ward's start→running (the Start call returns
// once the process runs in its cgroup, recorded on disk) and stop→gone
// (SIGTERM, exit, kill-all, cgroup deleted, dir removed, leases released,
// recorded), with the default limits. Run with -benchtime=200x or more.
func BenchmarkStartStop(b *testing.B) {
	w := newWardCycler(b)
	var start, stop, cycle latency.Sample
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, t := w.cycle(b, i)
		start.Add(s)
		stop.Add(t)
		cycle.Add(s + t)
	}
	b.StopTimer()
	start.Report(b, "start")
	stop.Report(b, "stop")
	cycle.Report(b, "cycle")
}

// BenchmarkCompareCycle is the start/stop comparison of the benchmark
// suite: ward's cycle (as in BenchmarkStartStop), `runc run` (as in
// BenchmarkRuncRun) and cgcreate+cgset+cgexec+cgdelete (as in
// BenchmarkCgexec), all with the same limits, interleaved in one loop so
// that whatever else the machine is doing weighs on the three alike. The
// order rotates every iteration, so none of them always runs right after
// another's cleanup. Run with -benchtime=300x; needs root, runc, busybox
// and cgroup-tools (scripts/bench installs them).
//
// A fourth, interleaved the same way, is the disk: a 4 KiB write and fsync
// on the filesystem of ward's state. ward's cycle syncs its records and
// events several times, runc's and cgexec's write nothing durable, so a
// disk slowed by other work moves ward's cycle and the ratios; the fsync
// figures show when that happened.
func BenchmarkCompareCycle(b *testing.B) {
	w := newWardCycler(b)
	r := newRuncCycler(b)
	c := newCgexecCycler(b)
	disk := newFsyncProbe(b, filepath.Dir(w.stateDir))
	var start, stop, ward, runc, cg, fsync latency.Sample
	var steps [len(cgexecSteps)]latency.Sample
	runs := []func(i int){
		func(int) { fsync.Add(disk.once(b)) },
		func(i int) {
			s, t := w.cycle(b, i)
			start.Add(s)
			stop.Add(t)
			ward.Add(s + t)
		},
		func(i int) { runc.Add(r.cycle(b, i)) },
		func(int) { cg.Add(c.timedCycle(b, &steps)) },
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range runs {
			runs[(i+k)%len(runs)](i)
		}
	}
	b.StopTimer()
	start.Report(b, "start")
	stop.Report(b, "stop")
	ward.Report(b, "cycle")
	runc.Report(b, "runc-cycle")
	cg.Report(b, "cgexec-cycle")
	fsync.Report(b, "fsync")
	for k, name := range cgexecSteps {
		b.ReportMetric(float64(steps[k].Percentile(50).Microseconds())/1000, "cgexec-"+name+"-p50-ms")
	}
	b.ReportMetric(ratio(runc, ward), "runc/ward-p50")
	b.ReportMetric(ratio(cg, ward), "cgexec/ward-p50")
}

func ratio(num, den latency.Sample) float64 {
	return float64(num.Percentile(50)) / float64(den.Percentile(50))
}

// fsyncProbe rewrites and syncs one 4 KiB file.
type fsyncProbe struct {
	f   *os.File
	buf []byte
}

func newFsyncProbe(b *testing.B, dir string) *fsyncProbe {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
	return &fsyncProbe{f: f, buf: make([]byte, 4096)}
}

func (p *fsyncProbe) once(b *testing.B) time.Duration {
	t0 := time.Now()
	if _, err := p.f.WriteAt(p.buf, 0); err != nil {
		b.Fatal(err)
	}
	if err := p.f.Sync(); err != nil {
		b.Fatal(err)
	}
	return time.Since(t0)
}

// wardCycler starts and stops `/bin/sleep 1000` instances with the default
// limits through an in-process agent.
type wardCycler struct {
	a        *Agent
	stateDir string
}

func newWardCycler(b *testing.B) *wardCycler {
	buildInit(b)
	w := &wardCycler{stateDir: benchStateDir(b)}
	w.a = newTestAgent(b, func(c *config.Config) { c.StateDir = w.stateDir })
	// Steady state: the first start also creates the parent group in
	// every hierarchy and warms caches; a few cycles go unmeasured.
	for i := 0; i < 5; i++ {
		w.run(b, "warmup", i)
	}
	return w
}

// cycle returns how long the Start and the Stop call took.
func (w *wardCycler) cycle(b *testing.B, i int) (start, stop time.Duration) {
	return w.run(b, "bench", i)
}

func (w *wardCycler) run(b *testing.B, name string, i int) (start, stop time.Duration) {
	ctx := context.Background()
	t0 := time.Now()
	inst, err := w.a.Start(ctx, api.Request{Name: name, Index: i, Command: []string{"/bin/sleep", "1000"}})
	if err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	if _, err := w.a.Stop(ctx, api.StopRequest{ID: inst.ID}); err != nil {
		b.Fatal(err)
	}
	return t1.Sub(t0), time.Since(t1)
}

// benchStateDir is a fresh state dir in a new top-level directory. ext4
// places a top-level directory in a block group of its own choosing,
// spread over the disk (the Orlov allocator), where a subdirectory goes
// near its parent. Under a fixed parent such as /var/lib the benchmark
// measures the churn of every earlier run in the same block group: on this
// VM's ext4, creating a file there went from 20 µs to 150 µs and ward's
// cycle from 7 to 15 ms over four rounds of one run, while in fresh
// top-level directories it stayed at 5–6.5 ms. (Earlier, /tmp and /var/tmp
// were the churned ones; which directory suffers depends on history.)
func benchStateDir(b *testing.B) string {
	dir, err := os.MkdirTemp("/", "ward-bench-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	b.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "state")
}

// BenchmarkRuncRun is the reference: `runc run` of a busybox /bin/true
// bundle with the same limits (create, start, exit, delete). Needs
// Debian's runc and busybox-static (scripts/bench installs them).
func BenchmarkRuncRun(b *testing.B) {
	r := newRuncCycler(b)
	var cycle latency.Sample
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cycle.Add(r.cycle(b, i))
	}
	b.StopTimer()
	cycle.Report(b, "cycle")
}

type runcCycler struct{ runc, bundle string }

func newRuncCycler(b *testing.B) *runcCycler {
	testroot.Require(b)
	runc, err := exec.LookPath("runc")
	if err != nil {
		b.Skip("runc not installed (apt-get install runc busybox-static)")
	}
	return &runcCycler{runc: runc, bundle: runcBundle(b)}
}

func (r *runcCycler) cycle(b *testing.B, i int) time.Duration {
	t0 := time.Now()
	cmd := exec.Command(r.runc, "--root", filepath.Join(r.bundle, "state"), "run", "--bundle", r.bundle, fmt.Sprintf("bench-%d", i))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("runc run: %v: %s", err, out)
	}
	return time.Since(t0)
}

func runcBundle(b *testing.B) string {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		b.Skip("busybox not installed (apt-get install busybox-static)")
	}
	dir, err := os.MkdirTemp("", "ward-bench-runc-")
	if err != nil {
		b.Fatal(err)
	}
	parent := fmt.Sprintf("/ward-bench-runc-%08x", rand.Uint32())
	b.Cleanup(func() {
		os.RemoveAll(dir)
		leakcheck.RemoveParent(parent)
		// runc leaves the parent in the hierarchies ward does not use too.
		for _, c := range []string{"cpuset", "devices", "systemd", "unified", "hugetlb", "net_cls", "perf_event"} {
			os.Remove(filepath.Join("/sys/fs/cgroup", c, parent, "c"))
			os.Remove(filepath.Join("/sys/fs/cgroup", c, parent))
		}
	})
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(bin, "busybox"), data, 0o755)
	os.Symlink("busybox", filepath.Join(bin, "true"))
	if out, err := exec.Command("runc", "spec", "--bundle", dir).CombinedOutput(); err != nil {
		b.Fatalf("runc spec: %v %s", err, out)
	}
	var spec map[string]any
	raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if err := json.Unmarshal(raw, &spec); err != nil {
		b.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["args"] = []string{"/bin/true"}
	proc["terminal"] = false
	linux := spec["linux"].(map[string]any)
	// Without an explicit path runc nests under the caller's own cgroup.
	linux["cgroupsPath"] = parent + "/c"
	linux["resources"] = map[string]any{
		"memory": map[string]any{"limit": 268435456, "swap": 268435456},
		"cpu":    map[string]any{"shares": 1024},
		"pids":   map[string]any{"limit": 512},
	}
	raw, _ = json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), raw, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// BenchmarkCgexec is the second reference: the cgroup-tools way to run
// busybox /bin/true in a fresh group with the same limits — cgcreate in
// the six hierarchies ward uses, cgset of the memory (and memory+swap),
// cpu shares and pids limits, cgexec, then cgdelete. Needs Debian's
// cgroup-tools and busybox-static (scripts/bench installs them).
func BenchmarkCgexec(b *testing.B) {
	c := newCgexecCycler(b)
	var cycle latency.Sample
	var steps [len(cgexecSteps)]latency.Sample
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cycle.Add(c.timedCycle(b, &steps))
	}
	b.StopTimer()
	cycle.Report(b, "cycle")
	for k, name := range cgexecSteps {
		b.ReportMetric(float64(steps[k].Percentile(50).Microseconds())/1000, name+"-p50-ms")
	}
}

// cgexecSteps name the parts of a cgexec cycle, in order.
var cgexecSteps = [...]string{"create", "set", "exec", "delete"}

type cgexecCycler struct {
	tool    map[string]string // cgcreate, cgset, cgexec, cgdelete → path
	busybox string
	group   string // e.g. /ward-bench-cgexec-1a2b3c4d/c
}

// cgexecControllers are the v1 hierarchies ward puts an instance in.
var cgexecControllers = []string{"memory", "cpu", "cpuacct", "pids", "blkio", "freezer"}

func newCgexecCycler(b *testing.B) *cgexecCycler {
	testroot.Require(b)
	if cgtest.Mode() != cgroup.V1 {
		b.Skip("the cgexec reference is measured on cgroup v1 hierarchies")
	}
	c := &cgexecCycler{tool: map[string]string{}}
	for _, t := range []string{"cgcreate", "cgset", "cgexec", "cgdelete"} {
		p, err := exec.LookPath(t)
		if err != nil {
			b.Skip("cgroup-tools not installed (apt-get install cgroup-tools)")
		}
		c.tool[t] = p
	}
	var err error
	if c.busybox, err = exec.LookPath("busybox"); err != nil {
		b.Skip("busybox not installed (apt-get install busybox-static)")
	}
	parent := fmt.Sprintf("/ward-bench-cgexec-%08x", rand.Uint32())
	c.group = parent + "/c"
	b.Cleanup(func() { leakcheck.RemoveParent(parent) })
	for range 5 { // warm-up, and a check that the cycle cleans up
		c.cycle(b)
	}
	return c
}

// cycle creates the group, sets its limits, runs busybox true in it and
// deletes it, and returns how long each step took. cgroup-tools 2.0.2
// deletes only the first controller of a cgdelete, however the
// controllers are given (one -g list, several -g flags or several
// arguments), and reports success: a full cleanup takes one cgdelete per
// hierarchy, which is what the delete step measures. The group's absence
// in every hierarchy is checked after the clock stops.
// timedCycle runs one cycle, adds each step's time to steps, and returns
// the whole cycle's.
func (c *cgexecCycler) timedCycle(b *testing.B, steps *[len(cgexecSteps)]latency.Sample) time.Duration {
	var sum time.Duration
	for k, d := range c.cycle(b) {
		steps[k].Add(d)
		sum += d
	}
	return sum
}

func (c *cgexecCycler) cycle(b *testing.B) (steps [len(cgexecSteps)]time.Duration) {
	spec := strings.Join(cgexecControllers, ",") + ":" + c.group
	run := func(step int, argv ...string) {
		t0 := time.Now()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
		steps[step] += time.Since(t0)
	}
	run(0, c.tool["cgcreate"], "-g", spec)
	// memory.limit_in_bytes first: memory+swap may never be below it.
	run(1, c.tool["cgset"], "-r", "memory.limit_in_bytes=268435456", "-r", "memory.memsw.limit_in_bytes=268435456",
		"-r", "cpu.shares=1024", "-r", "pids.max=512", c.group)
	run(2, c.tool["cgexec"], "-g", spec, c.busybox, "true")
	for _, ctrl := range cgexecControllers {
		run(3, c.tool["cgdelete"], "-g", ctrl+":"+c.group)
	}
	for _, ctrl := range cgexecControllers {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctrl, c.group)); !errors.Is(err, os.ErrNotExist) {
			b.Fatalf("cgdelete left %s in the %s hierarchy (%v)", c.group, ctrl, err)
		}
	}
	return steps
}
