package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/latency"
	"github.com/hostward/ward/internal/leakcheck"
	"github.com/hostward/ward/internal/testroot"
)

// BenchmarkStartStop measures ward's start→running (the Start call returns
// once the process runs in its cgroup, recorded on disk) and stop→gone
// (SIGTERM, exit, kill-all, cgroup deleted, dir removed, leases released,
// recorded), with the default limits. Run with -benchtime=200x or more.
func BenchmarkStartStop(b *testing.B) {
	a := newTestAgent(b, func(c *config.Config) { c.StateDir = benchStateDir(b) })
	ctx := context.Background()
	var start, stop, cycle latency.Sample
	// Steady state: the first start also creates the parent group in
	// every hierarchy and warms caches; a few cycles go unmeasured.
	for i := 0; i < 5; i++ {
		inst, err := a.Start(ctx, Request{Name: "warmup", Index: i, Command: []string{"/bin/sleep", "1000"}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := a.Stop(ctx, StopRequest{ID: inst.ID}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		inst, err := a.Start(ctx, Request{Name: "bench", Index: i, Command: []string{"/bin/sleep", "1000"}})
		if err != nil {
			b.Fatal(err)
		}
		start.Since(t0)
		t1 := time.Now()
		if _, err := a.Stop(ctx, StopRequest{ID: inst.ID}); err != nil {
			b.Fatal(err)
		}
		stop.Since(t1)
		cycle.Since(t0)
	}
	b.StopTimer()
	start.Report(b, "start")
	stop.Report(b, "stop")
	cycle.Report(b, "cycle")
}

// benchStateDir is a fresh state dir under /var/lib, where a real one
// lives. Not under /var/tmp: on this VM's ext4, file creation in a
// directory whose block group has seen heavy churn (the tests') costs 0.5
// ms instead of 20 µs, and the benchmark would measure that.
func benchStateDir(b *testing.B) string {
	dir, err := os.MkdirTemp("/var/lib", "ward-bench-")
	if err != nil {
		b.Fatal(err)
	}
	os.Chmod(dir, 0o711)
	b.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "state")
}

// BenchmarkRuncRun is the reference: `runc run` of a busybox /bin/true
// bundle with the same limits (create, start, exit, delete). Needs
// Debian's runc and busybox-static (scripts/bench/start installs them).
func BenchmarkRuncRun(b *testing.B) {
	testroot.Require(b)
	runc, err := exec.LookPath("runc")
	if err != nil {
		b.Skip("runc not installed (apt-get install runc busybox-static)")
	}
	bundle := runcBundle(b)
	var cycle latency.Sample
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		cmd := exec.Command(runc, "--root", filepath.Join(bundle, "state"), "run", "--bundle", bundle, fmt.Sprintf("bench-%d", i))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("runc run: %v: %s", err, out)
		}
		cycle.Since(t0)
	}
	b.StopTimer()
	cycle.Report(b, "cycle")
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
