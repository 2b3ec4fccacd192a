package cgroup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
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

	"github.com/containerd/cgroups/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/internal/testroot"
)

// The v1 tests run against the real kernel, under a random parent of their
// own that t.Cleanup removes from every hierarchy.

func newV1(t *testing.T) *Manager {
	t.Helper()
	testroot.Require(t)
	if _, err := os.Stat(filepath.Join(defaultRoot, "memory", "memory.limit_in_bytes")); err != nil {
		t.Skip("no cgroup v1 memory hierarchy on this host")
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	m, err := NewManager(Config{Mode: V1, Parent: "/ward-test-" + hex.EncodeToString(b)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupParent(t, m) })
	return m
}

// cleanupParent removes every group under m's parent, then the parent, from
// every hierarchy. It only ever kills processes inside the test's own
// random parent, which hold nothing but what the test started.
func cleanupParent(t *testing.T, m *Manager) {
	names, err := m.List()
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, name := range names {
		if err := m.Remove(name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
	for _, dir := range m.parentDirs() {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Errorf("cleanup: rmdir %s: %v", dir, err)
		}
	}
}

func readKernel(t *testing.T, g *Group, controller, file string) string {
	t.Helper()
	return readTestFile(t, filepath.Join(defaultRoot, controller, g.Path(), file))
}

func assertKernel(t *testing.T, g *Group, want map[string]string) {
	t.Helper()
	for key, w := range want {
		controller, file, _ := strings.Cut(key, "/")
		if got := readKernel(t, g, controller, file); got != w {
			t.Errorf("%s = %q, want %q", key, got, w)
		}
	}
}

func assertGone(t *testing.T, g *Group) {
	t.Helper()
	for _, dir := range g.Dirs() {
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

// waitFor polls cond until it holds or 10s pass. It waits for the system to
// reach a state; it does not assert on timing.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestV1CreateUpdateResources(t *testing.T) {
	m := newV1(t)
	if !m.memsw {
		t.Skip("kernel has no swap accounting (memory.memsw.*)")
	}
	g, err := m.Create("web-1", fullResources())
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range g.Dirs() {
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			t.Errorf("%s: %v", dir, err)
		}
	}
	if len(g.Dirs()) != 6 {
		t.Errorf("Dirs() = %q, want one per controller", g.Dirs())
	}
	assertKernel(t, g, map[string]string{
		"memory/memory.limit_in_bytes":       strconv.Itoa(64 * mib),
		"memory/memory.memsw.limit_in_bytes": strconv.Itoa(128 * mib),
		"cpu/cpu.shares":                     "512",
		"cpu/cpu.cfs_quota_us":               "50000",
		"cpu/cpu.cfs_period_us":              "100000",
		"pids/pids.max":                      "64",
	})

	// Raising memory above the current memsw only works memsw-first, and
	// lowering memsw below the current memory only works memory-first: a
	// wrong order is EINVAL from the kernel.
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

	err = g.Update(&specs.LinuxResources{
		CPU:  &specs.LinuxCPU{Quota: ptr[int64](-1), Shares: ptr[uint64](2048)},
		Pids: &specs.LinuxPids{Limit: ptr[int64](0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	assertKernel(t, g, map[string]string{
		"cpu/cpu.cfs_quota_us":               "-1",
		"cpu/cpu.cfs_period_us":              "100000",
		"cpu/cpu.shares":                     "2048",
		"pids/pids.max":                      "max",
		"memory/memory.limit_in_bytes":       strconv.Itoa(16 * mib),
		"memory/memory.memsw.limit_in_bytes": strconv.Itoa(24 * mib),
	})
	res, err := g.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if *res.CPU.Quota != -1 || *res.CPU.Period != 100000 || *res.CPU.Shares != 2048 || *res.Pids.Limit != -1 {
		t.Errorf("Resources() cpu %d/%d shares %d pids %d", *res.CPU.Quota, *res.CPU.Period, *res.CPU.Shares, *res.Pids.Limit)
	}
}

func TestV1CreateExistsLoadList(t *testing.T) {
	m := newV1(t)
	if names, err := m.List(); err != nil || len(names) != 0 {
		t.Errorf("List() before the parent exists = %q, %v", names, err)
	}
	if _, err := m.Load("web-1"); !errors.Is(err, ErrNotExist) {
		t.Errorf("Load of a missing group = %v, want ErrNotExist", err)
	}
	for _, name := range []string{"web-2", "web-1"} {
		if _, err := m.Create(name, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Create("web-1", fullResources()); !errors.Is(err, ErrExist) {
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
}

func TestV1CreateRollsBack(t *testing.T) {
	m := newV1(t)
	// pids.max above PID_MAX_LIMIT is EINVAL, and pids comes after memory,
	// cpu and cpuacct: the kernel refuses it after every mkdir.
	res := fullResources()
	res.Pids.Limit = ptr[int64](1 << 40)
	if _, err := m.Create("web-1", res); err == nil || !strings.Contains(err.Error(), "pids.max") {
		t.Fatalf("Create = %v, want the kernel's refusal of pids.max", err)
	}
	assertGone(t, m.group("web-1"))
	// The parent was made by the failed Create too.
	for _, dir := range m.parentDirs() {
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("parent %s: %v, want it rolled back", dir, err)
		}
	}

	// A group present in one hierarchy only — a crash mid-Create — makes
	// Create refuse with ErrExist, and leaves only that piece.
	pidsDir := filepath.Join(defaultRoot, "pids", m.Path("web-2"))
	if err := os.MkdirAll(pidsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create("web-2", nil); !errors.Is(err, ErrExist) {
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
	assertGone(t, g)
	if err := m.Remove("web-2"); err != nil {
		t.Errorf("Remove of a removed group: %v", err)
	}
}

func TestV1Processes(t *testing.T) {
	m := newV1(t)
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
	for _, c := range v1Controllers {
		procs := readKernel(t, g, c, "cgroup.procs")
		if procs != strconv.Itoa(sleep.Process.Pid) {
			t.Errorf("%s cgroup.procs = %q", c, procs)
		}
	}
	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids < 1 || st.MemoryLimit != 64*mib || st.MemoryPeak < st.MemoryUsage {
		t.Errorf("Stats() = %+v", *st)
	}

	// A group with a live process is not deleted, and Delete says why
	// within a bounded time.
	begin := time.Now()
	if err := g.Delete(); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("Delete of a busy group = %v, want ErrNotEmpty", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
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

func TestV1KillAllDelete(t *testing.T) {
	m := newV1(t)
	g, err := m.Create("web-1", fullResources())
	if err != nil {
		t.Fatal(err)
	}
	// The shell waits for a line on stdin before forking, so that it is in
	// the group before its children exist: v1 has no clone-into-cgroup.
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

	if err := g.KillAll(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	err = sh.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != unix.SIGKILL {
		t.Errorf("shell after KillAll: %v", err)
	}
	if got := readKernel(t, g, "freezer", "freezer.state"); got != "THAWED" {
		t.Errorf("freezer.state after KillAll = %q", got)
	}
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, g)
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestV1RemoveRunning(t *testing.T) {
	m := newV1(t)
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
	assertGone(t, g)
	if err := sleep.Wait(); err == nil {
		t.Error("sleep survived Remove")
	}
}

func TestV1ConcurrentCreate(t *testing.T) {
	m := newV1(t)
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
		case !errors.Is(err, ErrExist):
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

func TestDetectMode(t *testing.T) {
	m, err := NewManager(Config{Parent: "/ward-test-detect"})
	if err != nil {
		t.Skipf("no usable cgroup hierarchy here: %v", err)
	}
	want := V1
	if cgroups.Mode() == cgroups.Unified {
		want = V2
	}
	if m.Mode() != want {
		t.Errorf("detected %s, want %s", m.Mode(), want)
	}
}
