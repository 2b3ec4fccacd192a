package cgroup

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// The v2 tests run against a fake cgroupfs: this host's cgroup2 mount has no
// memory, cpu or pids controller. The fake is an ordinary directory tree;
// fakeMkdir and fakeRmdir stand in for what the kernel does on mkdir and
// rmdir, so that the package's own logic — parent chain, subtree_control,
// the files written and their values, rollback, children-first delete — is
// what is tested, not the fake.

// fakeChildFiles are the interface files the kernel gives a non-root group
// whose parent enabled memory, cpu, pids and io, with their initial values.
// Only the ones the package or containerd's cgroup2 read are listed.
var fakeChildFiles = map[string]string{
	"cgroup.controllers":     "cpu io memory pids\n",
	"cgroup.subtree_control": "\n",
	"cgroup.procs":           "",
	"cgroup.events":          "populated 0\nfrozen 0\n",
	"cgroup.freeze":          "0\n",
	"cgroup.kill":            "", // write-only in the kernel
	"memory.max":             "max\n",
	"memory.swap.max":        "max\n",
	"memory.current":         "0\n",
	"memory.peak":            "0\n",
	"memory.events":          "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
	"memory.stat":            "anon 0\nfile 0\n",
	"cpu.weight":             "100\n",
	"cpu.max":                "max 100000\n",
	"cpu.stat":               "usage_usec 0\nuser_usec 0\nsystem_usec 0\n",
	"pids.max":               "max\n",
	"pids.current":           "0\n",
}

func fakeMkdirOmitting(omit ...string) func(string) error {
	return func(dir string) error {
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		for name, content := range fakeChildFiles {
			if slices.Contains(omit, name) {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
}

// fakeRmdir refuses like the kernel (EBUSY) while the group has processes
// or child groups, and otherwise removes the group with its files.
func fakeRmdir(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			return &fs.PathError{Op: "rmdir", Path: dir, Err: unix.EBUSY}
		}
	}
	if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil && len(strings.TrimSpace(string(procs))) > 0 {
		return &fs.PathError{Op: "rmdir", Path: dir, Err: unix.EBUSY}
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return unix.Rmdir(dir)
}

func newFakeV2(t *testing.T, parent string) (*Manager, string) {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{
		"cgroup.controllers":     "cpuset cpu io memory hugetlb pids rdma misc\n",
		"cgroup.subtree_control": "\n",
		"cgroup.procs":           "",
	} {
		writeTestFile(t, filepath.Join(root, name), content)
	}
	m, err := NewManager(Config{Mode: V2, Root: root, Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	m.mkdir = fakeMkdirOmitting()
	m.rmdir = fakeRmdir
	return m, root
}

func writeTestFile(t *testing.T, file, content string) {
	t.Helper()
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readTestFile(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func ptr[T any](v T) *T { return &v }

const mib = 1 << 20

func fullResources() *specs.LinuxResources {
	return &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr[int64](64 * mib), Swap: ptr[int64](128 * mib)},
		CPU:    &specs.LinuxCPU{Shares: ptr[uint64](512), Quota: ptr[int64](50000), Period: ptr[uint64](100000)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](64)},
	}
}

func TestV2CreateWritesLimits(t *testing.T) {
	m, root := newFakeV2(t, "/ward/apps")
	g, err := m.Create("web-1", fullResources())
	if err != nil {
		t.Fatal(err)
	}
	if g.Path() != "/ward/apps/web-1" || g.Name() != "web-1" {
		t.Errorf("path %q name %q", g.Path(), g.Name())
	}
	dir := filepath.Join(root, "ward/apps/web-1")
	if d := g.Dirs(); len(d) != 1 || d[0] != dir {
		t.Errorf("Dirs() = %q, want [%q]", d, dir)
	}
	for file, want := range map[string]string{
		"memory.max":      strconv.Itoa(64 * mib),
		"memory.swap.max": strconv.Itoa(64 * mib), // Swap - Limit
		"cpu.weight":      strconv.FormatUint(SharesToWeight(512), 10),
		"cpu.max":         "50000 100000",
		"pids.max":        "64",
	} {
		if got := readTestFile(t, filepath.Join(dir, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// Every level from the mount down to the parent hands the controllers on.
	for _, level := range []string{"", "ward", "ward/apps"} {
		got := strings.Fields(readTestFile(t, filepath.Join(root, level, "cgroup.subtree_control")))
		for _, c := range []string{"+memory", "+cpu", "+pids", "+io"} {
			if !slices.Contains(got, c) {
				t.Errorf("/%s cgroup.subtree_control = %q, missing %s", level, got, c)
			}
		}
	}

	res, err := g.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if *res.Memory.Limit != 64*mib || *res.Memory.Swap != 128*mib || *res.CPU.Quota != 50000 ||
		*res.CPU.Period != 100000 || *res.Pids.Limit != 64 || SharesToWeight(*res.CPU.Shares) != SharesToWeight(512) {
		t.Errorf("Resources() = mem %d/%d cpu %d %d/%d pids %d", *res.Memory.Limit, *res.Memory.Swap,
			*res.CPU.Shares, *res.CPU.Quota, *res.CPU.Period, *res.Pids.Limit)
	}
}

func TestV2Update(t *testing.T) {
	m, root := newFakeV2(t, "/ward")
	g, err := m.Create("web-1", fullResources())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "ward/web-1")
	steps := []struct {
		res  *specs.LinuxResources
		want map[string]string
	}{
		{ // quota alone keeps the period
			&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](20000)}},
			map[string]string{"cpu.max": "20000 100000", "cpu.weight": strconv.FormatUint(SharesToWeight(512), 10)},
		},
		{ // period alone keeps the quota
			&specs.LinuxResources{CPU: &specs.LinuxCPU{Period: ptr[uint64](250000)}},
			map[string]string{"cpu.max": "20000 250000"},
		},
		{
			&specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: ptr[int64](-1), Period: ptr[uint64](100000), Shares: ptr[uint64](1024)}},
			map[string]string{"cpu.max": "max 100000", "cpu.weight": "100"},
		},
		{
			&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](256 * mib), Swap: ptr[int64](256 * mib)}},
			map[string]string{"memory.max": strconv.Itoa(256 * mib), "memory.swap.max": "0"},
		},
		{ // swap alone is a total over the current memory.max
			&specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: ptr[int64](300 * mib)}},
			map[string]string{"memory.max": strconv.Itoa(256 * mib), "memory.swap.max": strconv.Itoa(44 * mib)},
		},
		{
			&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](-1), Swap: ptr[int64](-1)}},
			map[string]string{"memory.max": "max", "memory.swap.max": "max"},
		},
		{
			&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr[int64](0)}},
			map[string]string{"pids.max": "max"},
		},
	}
	for i, s := range steps {
		if err := g.Update(s.res); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for file, want := range s.want {
			if got := readTestFile(t, filepath.Join(dir, file)); got != want {
				t.Errorf("step %d: %s = %q, want %q", i, file, got, want)
			}
		}
	}
	res, err := g.Resources()
	if err != nil {
		t.Fatal(err)
	}
	if *res.Memory.Limit != -1 || *res.Memory.Swap != -1 || *res.CPU.Quota != -1 || *res.CPU.Shares != 1024 || *res.Pids.Limit != -1 {
		t.Errorf("Resources() = mem %d/%d cpu %d %d pids %d", *res.Memory.Limit, *res.Memory.Swap,
			*res.CPU.Shares, *res.CPU.Quota, *res.Pids.Limit)
	}

	// Refused before anything is written.
	bad := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](64 * mib), Swap: ptr[int64](32 * mib)}}
	if err := g.Update(bad); err == nil {
		t.Error("Update with Swap < Limit succeeded")
	}
	if got := readTestFile(t, filepath.Join(dir, "memory.max")); got != "max" {
		t.Errorf("refused update wrote memory.max = %q", got)
	}
	swapOnly := &specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: ptr[int64](64 * mib)}}
	if err := g.Update(swapOnly); err == nil {
		t.Error("Update of a bounded Swap with unlimited memory succeeded")
	}
}

func TestV2KillStatsPids(t *testing.T) {
	m, root := newFakeV2(t, "/ward")
	g, err := m.Create("web-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "ward/web-1")
	if err := g.KillAll(); err != nil {
		t.Fatal(err)
	}
	if got := readTestFile(t, filepath.Join(dir, "cgroup.kill")); got != "1" {
		t.Errorf("cgroup.kill = %q, want 1", got)
	}

	writeTestFile(t, filepath.Join(dir, "memory.current"), "1234\n")
	writeTestFile(t, filepath.Join(dir, "memory.max"), "65536\n")
	writeTestFile(t, filepath.Join(dir, "memory.peak"), "4321\n")
	writeTestFile(t, filepath.Join(dir, "memory.events"), "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n")
	writeTestFile(t, filepath.Join(dir, "cpu.stat"), "usage_usec 7\nuser_usec 5\nsystem_usec 2\n")
	writeTestFile(t, filepath.Join(dir, "pids.current"), "3\n")
	st, err := g.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{MemoryUsage: 1234, MemoryLimit: 65536, MemoryPeak: 4321, OOMKills: 2, CPUUsage: 7000, Pids: 3}
	if *st != want {
		t.Errorf("Stats() = %+v, want %+v", *st, want)
	}

	// Pids recurse into child groups. (Fake pids: nothing is signalled.)
	if err := m.mkdir(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(dir, "cgroup.procs"), "12\n11\n")
	writeTestFile(t, filepath.Join(dir, "sub", "cgroup.procs"), "10\n12\n")
	pids, err := g.Pids()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pids, []int{10, 11, 12}) {
		t.Errorf("Pids() = %v, want [10 11 12]", pids)
	}

	// WaitEmpty goes by cgroup.events: it gives up with ctx's error while
	// the group is populated, and wakes up when the file changes to say
	// it is not.
	events := filepath.Join(dir, "cgroup.events")
	writeTestFile(t, events, "populated 1\nfrozen 0\n")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.WaitEmpty(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitEmpty on a busy group = %v, want context.Canceled", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- g.WaitEmpty(context.Background()) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitEmpty on a populated group returned %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	writeTestFile(t, filepath.Join(dir, "cgroup.procs"), "")
	writeTestFile(t, filepath.Join(dir, "sub", "cgroup.procs"), "")
	// In place, in one write, as the kernel changes it: a truncating
	// write would show the waiter an empty file.
	f, err := os.OpenFile(events, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("populated 0\nfrozen 0\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("WaitEmpty once unpopulated: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitEmpty did not wake up when cgroup.events said populated 0")
	}

	// Children go first; the fake, like the kernel, refuses otherwise.
	if err := g.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("group dir after Delete: %v", err)
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func TestV2CreateLoadListRemove(t *testing.T) {
	m, root := newFakeV2(t, "/ward")
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
	if _, err := m.Create("web-1", nil); !errors.Is(err, ErrExist) {
		t.Errorf("second Create = %v, want ErrExist", err)
	}
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := m.Create(name, nil); err == nil {
			t.Errorf("Create(%q) succeeded", name)
		}
	}
	names, err := m.List()
	if err != nil || !slices.Equal(names, []string{"web-1", "web-2"}) {
		t.Errorf("List() = %q, %v", names, err)
	}
	g, err := m.Load("web-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Update(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr[int64](7)}}); err != nil {
		t.Fatal(err)
	}
	if got := readTestFile(t, filepath.Join(root, "ward/web-1/pids.max")); got != "7" {
		t.Errorf("pids.max after Update via Load = %q", got)
	}
	if err := m.Remove("web-1"); err != nil {
		t.Fatal(err)
	}
	if got := readTestFile(t, filepath.Join(root, "ward/web-2/cgroup.kill")); got != "" {
		t.Errorf("Remove of web-1 killed web-2: cgroup.kill = %q", got)
	}
	if err := m.Remove("web-1"); err != nil {
		t.Errorf("Remove of a removed group: %v", err)
	}
	if names, _ := m.List(); !slices.Equal(names, []string{"web-2"}) {
		t.Errorf("List() after Remove = %q", names)
	}
}

func TestV2CreateRollsBack(t *testing.T) {
	m, root := newFakeV2(t, "/ward/apps")
	// A group whose memory.max is missing, as if the controller vanished:
	// Create gets past every mkdir and fails on its first write.
	m.mkdir = fakeMkdirOmitting("memory.max")
	if _, err := m.Create("web-1", fullResources()); err == nil || !strings.Contains(err.Error(), "memory.max") {
		t.Fatalf("Create = %v, want an error naming memory.max", err)
	}
	// The parents were made by this Create, so they go too.
	if _, err := os.Stat(filepath.Join(root, "ward")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after rollback, /ward: %v", err)
	}

	// A parent that existed before stays.
	m.mkdir = fakeMkdirOmitting()
	if _, err := m.Create("web-0", nil); err != nil {
		t.Fatal(err)
	}
	m.mkdir = fakeMkdirOmitting("memory.max")
	if _, err := m.Create("web-1", fullResources()); err == nil {
		t.Fatal("Create succeeded")
	}
	if names, _ := m.List(); !slices.Equal(names, []string{"web-0"}) {
		t.Errorf("List() after rollback = %q, want [web-0]", names)
	}
}

func TestV2NewManagerChecksControllers(t *testing.T) {
	root := t.TempDir()
	writeTestFile(t, filepath.Join(root, "cgroup.controllers"), "cpu io pids\n")
	_, err := NewManager(Config{Mode: V2, Root: root, Parent: "/ward"})
	if err == nil || !strings.Contains(err.Error(), "memory") {
		t.Errorf("NewManager without memory = %v, want an error naming memory", err)
	}
	if _, err := NewManager(Config{Mode: V2, Root: t.TempDir(), Parent: "/ward"}); err == nil {
		t.Error("NewManager on a non-cgroup2 dir succeeded")
	}
	m, _ := newFakeV2(t, "/ward")
	if m.Mode() != V2 || m.Parent() != "/ward" || m.Path("x") != "/ward/x" ||
		!slices.Equal(m.Controllers(), []string{"memory", "cpu", "pids", "io"}) {
		t.Errorf("mode %s parent %q path %q controllers %q", m.Mode(), m.Parent(), m.Path("x"), m.Controllers())
	}
}

func TestV1NewManagerNamesMissingController(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"memory", "cpu", "cpuacct"} {
		if err := os.Mkdir(filepath.Join(root, c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := NewManager(Config{Mode: V1, Root: root, Parent: "/ward"})
	if err == nil || !strings.Contains(err.Error(), "pids") {
		t.Errorf("NewManager = %v, want an error naming pids", err)
	}
}
