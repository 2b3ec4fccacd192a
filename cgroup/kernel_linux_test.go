package cgroup_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/spawn"
)

// These tests run against the host's real cgroupfs in whatever mode the
// host runs: v1 here, v2 in the cgroup v2 stage (scripts/v2vm). Each test
// is one body; where the two versions legitimately differ (which file holds
// a limit, what a lone memory limit means next to swap) it branches on the
// mode it found. Groups live under a random parent that cgtest removes with
// whatever is left in it.

const mib = 1 << 20

// hogEnv makes the test binary an instance program that allocates and
// touches that many bytes, then sleeps: the OOM test's victim.
const hogEnv = "CGROUP_TEST_HOG"

func TestMain(m *testing.M) {
	if v := os.Getenv(hogEnv); v != "" {
		n, _ := strconv.Atoi(v)
		b := make([]byte, n)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		time.Sleep(time.Hour)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func ptr[T any](v T) *T { return &v }

func fullResources() *specs.LinuxResources {
	return &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr[int64](64 * mib), Swap: ptr[int64](128 * mib)},
		CPU:    &specs.LinuxCPU{Shares: ptr[uint64](512), Quota: ptr[int64](50000), Period: ptr[uint64](100000)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](64)},
	}
}

// groupFile is the path of one of g's interface files: in the given v1
// controller's hierarchy, or in the group's one v2 directory.
func groupFile(g *cgroup.Group, v1Controller, file string) string {
	if cgtest.Mode() == cgroup.V2 {
		return filepath.Join(g.Dirs()[0], file)
	}
	return filepath.Join(cgtest.Root, v1Controller, g.Path(), file)
}

func readFile(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// assertKernel checks interface files against values; keys are
// "<v1 controller>/<file>" (the controller is ignored on v2).
func assertKernel(t *testing.T, g *cgroup.Group, want map[string]string) {
	t.Helper()
	for key, w := range want {
		controller, file, _ := strings.Cut(key, "/")
		if got := readFile(t, groupFile(g, controller, file)); got != w {
			t.Errorf("%s = %q, want %q", groupFile(g, controller, file), got, w)
		}
	}
}

// hasSwapAccounting says whether the kernel limits swap for g: v1
// memory.memsw.*, v2 memory.swap.max.
func hasSwapAccounting(g *cgroup.Group) bool {
	file := groupFile(g, "memory", "memory.memsw.limit_in_bytes")
	if cgtest.Mode() == cgroup.V2 {
		file = groupFile(g, "memory", "memory.swap.max")
	}
	_, err := os.Stat(file)
	return err == nil
}

// skipWithoutSwapAccounting skips t on a kernel that cannot limit swap, as
// seen in a throwaway group of m (v2 has no such file at the root).
func skipWithoutSwapAccounting(t *testing.T, m *cgroup.Manager) {
	t.Helper()
	g, err := m.Create("swap-probe", nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := hasSwapAccounting(g)
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Skip("kernel has no swap accounting (v1 memory.memsw.*, v2 memory.swap.max)")
	}
}

// eventsField reads one "key value" line of a v2 events file.
func eventsField(t *testing.T, file, key string) string {
	t.Helper()
	for _, line := range strings.Split(readFile(t, file), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok && k == key {
			return v
		}
	}
	t.Fatalf("%s has no %q line", file, key)
	return ""
}

func assertGone(t *testing.T, dirs []string) {
	t.Helper()
	for _, dir := range dirs {
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want it gone", dir, err)
		}
	}
}

// start runs a command and makes sure it is killed and reaped by the end of
// the test whatever happens. (Kill and Wait after the test's own Wait are
// harmless no-ops: os.Process remembers that it was reaped.)
func start(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// spawnIn starts argv as root inside g the way the agent does: cloned
// into the group on v2, forked from a thread inside it on v1.
func spawnIn(t *testing.T, g *cgroup.Group, env []string, argv ...string) *spawn.Process {
	t.Helper()
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	spec := spawn.Spec{
		Path: argv[0], Args: argv, Env: append([]string{"PATH=/usr/bin:/bin"}, env...), Dir: "/",
		Stdout: out, Stderr: out,
	}
	if cgtest.Mode() == cgroup.V2 {
		spec.CgroupV2Dir = g.Dirs()[0]
	} else {
		spec.CgroupV1Dirs = g.Dirs()
	}
	p, err := spawn.Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = p.Signal(unix.SIGKILL)
		<-p.Done()
	})
	return p
}

// waitFor polls cond until it holds or the (scaled) 10 s pass. It waits for
// the system to reach a state; it does not assert on timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(cgtest.Timeout(10 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestKernelDetectMode(t *testing.T) {
	m := cgtest.NewManager(t)
	detected, err := cgroup.NewManager(cgroup.Config{Parent: m.Parent()})
	if err != nil {
		t.Fatal(err)
	}
	if detected.Mode() != cgtest.Mode() {
		t.Errorf("detected %s, want %s", detected.Mode(), cgtest.Mode())
	}
	t.Logf("cgroup mode %s", detected.Mode())
}

func TestKernelCreateUpdateResources(t *testing.T) {
	m := cgtest.NewManager(t)
	skipWithoutSwapAccounting(t, m)
	g, err := m.Create("web-1", fullResources())
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range g.Dirs() {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", dir, err)
		}
	}
	v2 := m.Mode() == cgroup.V2
	if want := map[bool]int{false: len(cgroup.V1Controllers()), true: 1}[v2]; len(g.Dirs()) != want {
		t.Errorf("Dirs() = %q, want %d", g.Dirs(), want)
	}
	// The v2 weight of 512 shares is spelled out, not computed with
	// SharesToWeight: a v2 path that skipped or botched the conversion
	// would agree with itself.
	if v2 {
		assertKernel(t, g, map[string]string{
			"memory/memory.max":      strconv.Itoa(64 * mib),
			"memory/memory.swap.max": strconv.Itoa(64 * mib), // the 128 MiB total less memory
			"cpu/cpu.weight":         "59",
			"cpu/cpu.max":            "50000 100000",
			"pids/pids.max":          "64",
		})
	} else {
		assertKernel(t, g, map[string]string{
			"memory/memory.limit_in_bytes":       strconv.Itoa(64 * mib),
			"memory/memory.memsw.limit_in_bytes": strconv.Itoa(128 * mib),
			"cpu/cpu.shares":                     "512",
			"cpu/cpu.cfs_quota_us":               "50000",
			"cpu/cpu.cfs_period_us":              "100000",
			"pids/pids.max":                      "64",
		})
	}
	res, err := g.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if *res.Memory.Limit != 64*mib || *res.Memory.Swap != 128*mib || *res.CPU.Quota != 50000 ||
		*res.CPU.Period != 100000 || *res.Pids.Limit != 64 || cgroup.SharesToWeight(*res.CPU.Shares) != 59 {
		t.Errorf("Resources() = mem %d/%d cpu %d %d/%d pids %d", *res.Memory.Limit, *res.Memory.Swap,
			*res.CPU.Shares, *res.CPU.Quota, *res.CPU.Period, *res.Pids.Limit)
	}

	// On v1, raising memory above the current memsw only works memsw-first,
	// and lowering memsw below the current memory only works memory-first:
	// a wrong order is EINVAL from the kernel. On v2 the totals become
	// swap allowances; both must read back as they were set.
	for _, lim := range []struct{ limit, swap int64 }{
		{256 * mib, 512 * mib}, // up, across the old memsw
		{32 * mib, 48 * mib},   // down, across the old memory limit
		{32 * mib, 32 * mib},   // no swap at all
		{-1, -1},               // unlimited
		{16 * mib, 24 * mib},   // down from unlimited
	} {
		res := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(lim.limit), Swap: ptr(lim.swap)}}
		if err := g.Update(res); err != nil {
			t.Fatalf("Update(memory %d, memsw %d): %v", lim.limit, lim.swap, err)
		}
		got, err := g.Resources()
		if err != nil {
			t.Fatal(err)
		}
		if *got.Memory.Limit != lim.limit || *got.Memory.Swap != lim.swap {
			t.Errorf("after Update(%d, %d): Resources() memory %d, memsw %d", lim.limit, lim.swap, *got.Memory.Limit, *got.Memory.Swap)
		}
	}
	if v2 {
		// A lone memory limit keeps the swap allowance (8 MiB here).
		if err := g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](64 * mib)}}); err != nil {
			t.Fatal(err)
		}
		assertKernel(t, g, map[string]string{
			"memory/memory.max":      strconv.Itoa(64 * mib),
			"memory/memory.swap.max": strconv.Itoa(8 * mib),
		})
		if err := g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](16 * mib)}}); err != nil {
			t.Fatal(err)
		}
	} else {
		// A lone memory limit is fine under memsw, even "unlimited" under an
		// unlimited memsw (the kernel's LONG_MAX-ish value is not -1)...
		if err := g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: ptr[int64](-1)}}); err != nil {
			t.Fatal(err)
		}
		for _, lim := range []int64{-1, 16 * mib} {
			if err := g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr(lim)}}); err != nil {
				t.Errorf("Update(memory %d) under an unlimited memsw: %v", lim, err)
			}
		}
		if err := g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: ptr[int64](24 * mib)}}); err != nil {
			t.Fatal(err)
		}
		// ...but above memsw it cannot be applied; say so clearly.
		err = g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](64 * mib)}})
		if err == nil || !strings.Contains(err.Error(), "set Swap too") {
			t.Errorf("Update of memory above memsw = %v", err)
		}
	}

	err = g.Update(&specs.LinuxResources{
		CPU:  &specs.LinuxCPU{Quota: ptr[int64](-1), Shares: ptr[uint64](2048)},
		Pids: &specs.LinuxPids{Limit: ptr[int64](0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if v2 {
		assertKernel(t, g, map[string]string{
			"cpu/cpu.max":            "max 100000",
			"cpu/cpu.weight":         "174",
			"pids/pids.max":          "max",
			"memory/memory.max":      strconv.Itoa(16 * mib),
			"memory/memory.swap.max": strconv.Itoa(8 * mib),
		})
	} else {
		assertKernel(t, g, map[string]string{
			"cpu/cpu.cfs_quota_us":               "-1",
			"cpu/cpu.cfs_period_us":              "100000",
			"cpu/cpu.shares":                     "2048",
			"pids/pids.max":                      "max",
			"memory/memory.limit_in_bytes":       strconv.Itoa(16 * mib),
			"memory/memory.memsw.limit_in_bytes": strconv.Itoa(24 * mib),
		})
	}
	res, err = g.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if *res.CPU.Quota != -1 || *res.CPU.Period != 100000 || cgroup.SharesToWeight(*res.CPU.Shares) != 174 ||
		*res.Pids.Limit != -1 || *res.Memory.Limit != 16*mib || *res.Memory.Swap != 24*mib {
		t.Errorf("Resources() cpu %d/%d shares %d pids %d memory %d/%d", *res.CPU.Quota, *res.CPU.Period,
			*res.CPU.Shares, *res.Pids.Limit, *res.Memory.Limit, *res.Memory.Swap)
	}
}

func TestKernelCreateExistsLoadList(t *testing.T) {
	m := cgtest.NewManager(t)
	if names, err := m.List(); err != nil || len(names) != 0 {
		t.Errorf("List() before the parent exists = %q, %v", names, err)
	}
	if _, err := m.Load("web-1"); !errors.Is(err, cgroup.ErrNotExist) {
		t.Errorf("Load of a missing group = %v, want ErrNotExist", err)
	}
	for _, name := range []string{"web-2", "web-1"} {
		if _, err := m.Create(name, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Create("web-1", fullResources()); !errors.Is(err, cgroup.ErrExist) {
		t.Errorf("second Create = %v, want ErrExist", err)
	}
	// The failed Create must not have taken the existing group with it.
	g, err := m.Load("web-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range g.Dirs() {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("existing group damaged by a refused Create: %v", err)
		}
	}
	if names, err := m.List(); err != nil || !slices.Equal(names, []string{"web-1", "web-2"}) {
		t.Errorf("List() = %q, %v", names, err)
	}
	// A group loaded afresh drives the same kernel files.
	if err := g.Update(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr[int64](7)}}); err != nil {
		t.Fatal(err)
	}
	assertKernel(t, g, map[string]string{"pids/pids.max": "7"})
}

func TestKernelCreateRollsBack(t *testing.T) {
	m := cgtest.NewManager(t)
	// pids.max above PID_MAX_LIMIT is EINVAL, and pids is written after
	// memory and cpu (on v1 after every mkdir): the kernel refuses it late.
	res := fullResources()
	res.Pids.Limit = ptr[int64](1 << 40)
	if _, err := m.Create("web-1", res); err == nil || !strings.Contains(err.Error(), "pids.max") {
		t.Fatalf("Create = %v, want the kernel's refusal of pids.max", err)
	}
	if names, err := m.List(); err != nil || len(names) != 0 {
		t.Errorf("List() after a failed Create = %q, %v", names, err)
	}
	// The parent was made by the failed Create too.
	assertGone(t, cgtest.Dirs(m.Parent()))

	if m.Mode() != cgroup.V1 {
		return
	}
	// A group present in one v1 hierarchy only — a crash mid-Create — makes
	// Create refuse with ErrExist, and leaves only that piece.
	pidsDir := filepath.Join(cgtest.Root, "pids", m.Path("web-2"))
	if err := os.MkdirAll(pidsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("web-2", nil); !errors.Is(err, cgroup.ErrExist) {
		t.Fatalf("Create over a partial group = %v, want ErrExist", err)
	}
	g, err := m.Load("web-2")
	if err != nil {
		t.Fatalf("Load of a partial group: %v", err)
	}
	for _, dir := range g.Dirs() {
		_, err := os.Stat(dir)
		if exists := err == nil; exists != (dir == pidsDir) {
			t.Errorf("%s exists=%v after the refused Create", dir, exists)
		}
	}
	if names, _ := m.List(); !slices.Equal(names, []string{"web-2"}) {
		t.Errorf("List() = %q, want the partial group", names)
	}
	if err := m.Remove("web-2"); err != nil {
		t.Fatal(err)
	}
	assertGone(t, g.Dirs())
	if err := m.Remove("web-2"); err != nil {
		t.Errorf("Remove of a removed group: %v", err)
	}
}

func TestKernelProcesses(t *testing.T) {
	m := cgtest.NewManager(t)
	g, err := m.Create("web-1", fullResources())
	if err != nil {
		t.Fatal(err)
	}

	sleep := start(t, exec.Command("sleep", "100"))
	if err := g.AddProc(sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	pids, err := g.Pids()
	if err != nil || !slices.Equal(pids, []int{sleep.Process.Pid}) {
		t.Errorf("Pids() = %v, %v, want [%d]", pids, err, sleep.Process.Pid)
	}
	for _, dir := range g.Dirs() {
		if procs := readFile(t, filepath.Join(dir, "cgroup.procs")); procs != strconv.Itoa(sleep.Process.Pid) {
			t.Errorf("%s/cgroup.procs = %q", dir, procs)
		}
	}
	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids != 1 || st.MemoryLimit != 64*mib || st.MemoryPeak < st.MemoryUsage || st.OOMKills != 0 {
		t.Errorf("Stats() = %+v", *st)
	}

	// A group with a live process is not deleted, and Delete says why
	// within a bounded time.
	begin := time.Now()
	if err := g.Delete(); !errors.Is(err, cgroup.ErrNotEmpty) {
		t.Errorf("Delete of a busy group = %v, want ErrNotEmpty", err)
	}
	if d := time.Since(begin); d > cgtest.Timeout(5*time.Second) {
		t.Errorf("Delete of a busy group took %v", d)
	}

	if err := g.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = sleep.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != unix.SIGTERM {
		t.Errorf("sleep after Signal(SIGTERM): %v", err)
	}
	if err := g.WaitEmpty(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestKernelKillAllDelete(t *testing.T) {
	m := cgtest.NewManager(t)
	g, err := m.Create("web-1", fullResources())
	if err != nil {
		t.Fatal(err)
	}
	// The shell waits for a line on stdin before forking, so that it is in
	// the group before its children exist (this places it with AddProc,
	// not at birth).
	sh := exec.Command("sh", "-c", "read x; sleep 100 & sleep 100 & sleep 100 & wait")
	stdin, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	start(t, sh)
	if err := g.AddProc(sh.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "shell and 3 sleeps in the group", func() bool {
		pids, err := g.Pids()
		return err == nil && len(pids) == 4
	})
	if m.Mode() == cgroup.V2 {
		if got := eventsField(t, groupFile(g, "", "cgroup.events"), "populated"); got != "1" {
			t.Errorf("cgroup.events populated = %s with 4 processes", got)
		}
	}

	if err := g.KillAll(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(10*time.Second))
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	err = sh.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
		t.Errorf("shell after KillAll: %v", err)
	}
	if m.Mode() == cgroup.V2 {
		if got := eventsField(t, groupFile(g, "", "cgroup.events"), "populated"); got != "0" {
			t.Errorf("cgroup.events populated = %s after KillAll", got)
		}
	} else if got := readFile(t, groupFile(g, "freezer", "freezer.state")); got != "THAWED" {
		t.Errorf("freezer.state after KillAll = %q", got)
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, g.Dirs())
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestKernelRemoveRunning(t *testing.T) {
	m := cgtest.NewManager(t)
	g, err := m.Create("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	sleep := start(t, exec.Command("sleep", "100"))
	if err := g.AddProc(sleep.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove("web-1"); err != nil {
		t.Fatal(err)
	}
	assertGone(t, g.Dirs())
	if err := sleep.Wait(); err == nil {
		t.Error("sleep survived Remove")
	}
}

func TestKernelConcurrentCreate(t *testing.T) {
	m := cgtest.NewManager(t)
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := m.Create("web-1", fullResources())
			errs <- err
		}()
	}
	won := 0
	for range n {
		switch err := <-errs; {
		case err == nil:
			won++
		case !errors.Is(err, cgroup.ErrExist):
			t.Errorf("Create: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent Creates of one name succeeded, want 1", won)
	}
	g, err := m.Load("web-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range g.Dirs() {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("losers' rollback took part of the winner: %v", err)
		}
	}
}

// TestKernelOOMThenKillAll is the instance OOM path: a process born in a
// 32 MiB group (cloned into it on v2) outgrows it, the kernel's OOM killer
// takes it and counts the kill (v2 memory.events oom_kill, v1
// memory.oom_control oom_kill), the rest of the instance survives that,
// and KillAll (v2 cgroup.kill) then empties the group.
func TestKernelOOMThenKillAll(t *testing.T) {
	m := cgtest.NewManager(t)
	limit := int64(32 * mib)
	res := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	g, err := m.Create("hog-1", res)
	if err != nil {
		t.Fatal(err)
	}
	if hasSwapAccounting(g) {
		// No swap to escape into: the hog must meet the OOM killer.
		if err := g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}); err != nil {
			t.Fatal(err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The instance: a shell that starts the hog and becomes a sleeper, the
	// main process that outlives the OOM kill.
	p := spawnIn(t, g, []string{"HOG=" + exe, hogEnv + "=" + strconv.Itoa(128*mib)},
		"/bin/sh", "-c", `"$HOG" & exec sleep 1000`)
	waitFor(t, "an OOM kill counted in the group", func() bool {
		st, err := g.Stats()
		return err == nil && st.OOMKills >= 1
	})
	if m.Mode() == cgroup.V2 {
		if got := eventsField(t, groupFile(g, "", "memory.events"), "oom_kill"); got == "0" {
			t.Errorf("memory.events oom_kill = %s after Stats() counted a kill", got)
		}
		if got := eventsField(t, groupFile(g, "", "cgroup.events"), "populated"); got != "1" {
			t.Errorf("cgroup.events populated = %s while the sleeper runs", got)
		}
	}
	select {
	case <-p.Done():
		t.Fatalf("the OOM killer took the main process, not the hog: %+v", p.Exited())
	default:
	}
	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.MemoryPeak < uint64(limit)/2 || st.MemoryLimit != uint64(limit) || st.CPUUsage == 0 {
		t.Errorf("Stats() after the OOM = %+v, want a peak near the %d limit and the hog's CPU time", *st, limit)
	}

	if err := g.KillAll(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(10*time.Second))
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	if e, err := p.Wait(ctx); err != nil || e.Signal != unix.SIGKILL {
		t.Errorf("main process after KillAll: %+v, %v; want SIGKILL", e, err)
	}
	if m.Mode() == cgroup.V2 {
		if got := eventsField(t, groupFile(g, "", "cgroup.events"), "populated"); got != "0" {
			t.Errorf("cgroup.events populated = %s after KillAll", got)
		}
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, g.Dirs())
}

// TestKernelWaitEmptySeesExit is exit detection for a whole instance: its
// main process exits while a child it forked runs on, so the group stays
// populated and WaitEmpty must keep waiting; once the child is gone
// WaitEmpty returns (on v2 woken by the kernel's cgroup.events
// notification, which a broken watch would never deliver).
func TestKernelWaitEmptySeesExit(t *testing.T) {
	m := cgtest.NewManager(t)
	g, err := m.Create("exit-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The orphaned child is reparented to this process, not to a PID 1
	// that might never reap it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })

	p := spawnIn(t, g, nil, "/bin/sh", "-c", "sleep 1000 & exit 0")
	ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(10*time.Second))
	defer cancel()
	if e, err := p.Wait(ctx); err != nil || !e.Known || e.Code != 0 {
		t.Fatalf("main process: %+v, %v", e, err)
	}
	var child int
	waitFor(t, "the orphaned sleep alone in the group", func() bool {
		pids, err := g.Pids()
		if err == nil && len(pids) == 1 {
			child = pids[0]
		}
		return child != 0
	})
	t.Cleanup(func() {
		unix.Kill(child, unix.SIGKILL)
		unix.Wait4(child, nil, 0, nil)
	})

	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := g.WaitEmpty(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitEmpty with a process left = %v, want DeadlineExceeded", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- g.WaitEmpty(ctx) }()
	if err := unix.Kill(child, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("WaitEmpty after the last process exited: %v", err)
	}
	if pids, err := g.Pids(); err != nil || len(pids) != 0 {
		t.Errorf("WaitEmpty returned with %v (%v) in the group", pids, err)
	}
	if m.Mode() == cgroup.V2 {
		if got := eventsField(t, groupFile(g, "", "cgroup.events"), "populated"); got != "0" {
			t.Errorf("cgroup.events populated = %s after the last exit", got)
		}
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
}
