package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/leakcheck"
	"github.com/hostward/ward/internal/testroot"
)

// Pool ranges of this package's tests; other packages use other ranges, so
// `go test ./...` running packages side by side never shares a uid.
const (
	testUIDMin = 28000
	testUIDMax = 28999
)

// testStateBase holds the tests' state dirs: on the disk a real state_dir
// (/var/lib/ward) lives on, not on a tmpfs or a /tmp with other habits.
const testStateBase = "/var/tmp"

// newTestAgent makes an agent over a fresh state dir and a random cgroup
// parent, and on cleanup stops whatever is left and checks nothing leaked.
func newTestAgent(t testing.TB, mutate func(*config.Config)) *Agent {
	t.Helper()
	testroot.Require(t)
	cfg := testConfig(t)
	if mutate != nil {
		mutate(cfg)
	}
	a, err := New(Options{Config: cfg, Init: testInit})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopAll(t, a)
		a.Close()
		checkNoLeaks(t, a.cfg)
		removeParent(a.cfg.Cgroup.Parent)
	})
	return a
}

// testInit is the ward-init newTestAgent's agents use: "" for this test
// binary (TestMain serves as one), or a real one built by a benchmark
// (buildInit), whose start costs what production's does.
var testInit string

// buildInit builds cmd/ward-init for the rest of the test binary's run:
// a benchmark measures the real one, not this much larger binary.
func buildInit(b *testing.B) {
	if testInit != "" {
		return
	}
	dir, err := os.MkdirTemp("", "ward-init-")
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(dir, "ward-init")
	if msg, err := exec.Command("go", "build", "-o", out, "github.com/hostward/ward/cmd/ward-init").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		b.Fatalf("build ward-init: %v\n%s", err, msg)
	}
	testInit = out
	// Kept until the binary exits: later benchmarks of the run use it.
}

func testConfig(t testing.TB) *config.Config {
	dir, err := os.MkdirTemp(testStateBase, "ward-agent-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o711)
	cfg := config.Default()
	cfg.HostID = "test"
	cfg.StateDir = dir
	cfg.Socket = filepath.Join(dir, "ward.sock")
	cfg.Cgroup.Parent = fmt.Sprintf("/ward-test-%08x", rand.Uint32())
	cfg.Users.UIDMin, cfg.Users.UIDMax = testUIDMin, testUIDMax
	cfg.Users.GID = testUIDMin
	cfg.Ports.Min, cfg.Ports.Max = 40000+rand.IntN(1000)*10, 0
	cfg.Ports.Max = cfg.Ports.Min + 9
	cfg.Stop.Timeout = config.Duration(2 * time.Second)
	cfg.Reconcile.Interval = config.Duration(time.Second)
	cfg.Isolation.NOFILE = 4096 // below this host's hard limit, which root here may not raise
	t.Cleanup(func() { removeParent(cfg.Cgroup.Parent) })
	return cfg
}

func removeParent(parent string) { leakcheck.RemoveParent(parent) }

func stopAll(t testing.TB, a *Agent) {
	l, _ := a.List(context.Background(), api.ListRequest{})
	for _, in := range l.Instances {
		if !in.State.Terminal() {
			zero := int64(0)
			if _, err := a.Stop(context.Background(), api.StopRequest{ID: in.ID, TimeoutMS: &zero}); err != nil {
				t.Errorf("cleanup stop %s: %v", in.ID, err)
			}
		}
	}
}

func checkNoLeaks(t testing.TB, cfg *config.Config) {
	t.Helper()
	leakcheck.Check(t, cfg, nil)
}

func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

func mustStart(t *testing.T, a *Agent, req api.Request) *api.Instance {
	t.Helper()
	inst, err := a.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("start %+v: %v", req, err)
	}
	return inst
}

// waitState polls info until the instance reaches state.
func waitState(t *testing.T, a *Agent, id string, state api.State) *api.Instance {
	t.Helper()
	deadline := time.Now().Add(cgtest.Timeout(10 * time.Second))
	for {
		inst, err := a.Info(context.Background(), api.InfoRequest{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		if inst.State == state {
			return inst
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s is %s (%s), want %s", id, inst.State, inst.Reason, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestExitDetection(t *testing.T) {
	for _, mode := range config.IsolationModes {
		t.Run(string(mode), func(t *testing.T) { testExitDetection(t, mode) })
	}
}

func testExitDetection(t *testing.T, mode config.IsolationMode) {
	a := newTestAgent(t, func(c *config.Config) { c.Isolation.Mode = mode })
	cases := []struct {
		script string
		state  api.State
		code   *int
		signal string
	}{
		{"exit 0", api.StateExited, intp(0), ""},
		{"exit 3", api.StateCrashed, intp(3), ""},
		{"kill -KILL $$", api.StateCrashed, nil, "SIGKILL"},
		// the main process goes, a child stays: the child must die too
		{"sleep 1000 & exit 0", api.StateExited, intp(0), ""},
	}
	if mode == config.IsolationNamespaces {
		// The main process is its PID namespace's init, which no signal
		// from inside the namespace reaches without a handler — SIGKILL
		// included — as in every container runtime without an init.
		cases[2] = struct {
			script string
			state  api.State
			code   *int
			signal string
		}{"kill -KILL $$; exit 4", api.StateCrashed, intp(4), ""}
	}
	for i, c := range cases {
		inst := mustStart(t, a, api.Request{Name: "exit", Index: i, Command: sh(c.script)})
		got := waitState(t, a, inst.ID, c.state)
		if (got.ExitCode == nil) != (c.code == nil) || (c.code != nil && *got.ExitCode != *c.code) || got.ExitSignal != c.signal {
			t.Errorf("%q: exit_code %v signal %q, want %v %q", c.script, got.ExitCode, got.ExitSignal, c.code, c.signal)
		}
		if got.PID != nil || got.UID != nil || got.ExitedAt == nil || got.Reason == "" {
			t.Errorf("%q: terminal instance %+v", c.script, got)
		}
	}
	checkNoLeaks(t, a.cfg)
}

func TestDuplicateID(t *testing.T) {
	a := newTestAgent(t, nil)
	req := api.Request{ID: "dup-1", Name: "dup", Command: sh("sleep 1000")}
	first := mustStart(t, a, req)
	again := mustStart(t, a, req)
	if *again.PID != *first.PID {
		t.Fatalf("same request started a second copy: pid %d then %d", *first.PID, *again.PID)
	}
	req.Command = sh("sleep 999")
	_, err := a.Start(context.Background(), req)
	if !errors.Is(err, api.ErrConflict) || api.AsError(err).Field != "id" {
		t.Fatalf("different spec, same id: %v", err)
	}
}

func TestStartRollsBackOnSpawnFailure(t *testing.T) {
	a := newTestAgent(t, nil)
	// Executable by root's check, not by the pool uid: exec fails after the
	// record, dir and cgroup exist.
	// Not under /tmp, which a namespaced instance does not see.
	dir, err := os.MkdirTemp("/var/lib", "ward-noexec-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o700)
	exe := filepath.Join(dir, "prog")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = a.Start(context.Background(), api.Request{ID: "rb", Name: "rb", Port: new(int), Command: []string{exe}})
	if !errors.Is(err, api.ErrInvalidArgument) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("start of an unreachable program: %v", err)
	}
	if _, err := a.Info(context.Background(), api.InfoRequest{ID: "rb"}); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("rolled-back instance still known: %v", err)
	}
	checkNoLeaks(t, a.cfg)
	if n := len(a.ports.Leased()) + len(a.uids.Leased()); n != 0 {
		t.Fatalf("%d leases left after rollback", n)
	}
}

func TestLeakScanRemovesUnownedAfterTwoScans(t *testing.T) {
	a := newTestAgent(t, nil)
	keep := mustStart(t, a, api.Request{Name: "keep", Command: sh("sleep 1000")})
	stray := "stray-0-x"
	// In every v1 hierarchy, or once under the cgroup2 mount.
	parentDirs := cgtest.Dirs(a.cfg.Cgroup.Parent)
	for _, d := range parentDirs {
		if err := os.MkdirAll(filepath.Join(d, stray), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	strayDir := filepath.Join(a.instDir, "stray")
	os.Mkdir(strayDir, 0o700)
	// A mount below the instance directories, in a stray one and in a
	// live instance's, as a namespaced view that leaked out would leave.
	mounts := []string{filepath.Join(strayDir, "m"), filepath.Join(keep.Dir, "m")}
	for _, m := range mounts {
		os.Mkdir(m, 0o700)
		if err := unix.Mount("tmpfs", m, "tmpfs", 0, "size=4k"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(m, unix.MNT_DETACH) })
	}

	a.scanLeaks(false)
	if _, err := os.Stat(filepath.Join(parentDirs[0], stray)); err != nil {
		t.Fatal("unowned cgroup removed on first sighting")
	}
	a.scanLeaks(false)
	for _, d := range parentDirs {
		if _, err := os.Stat(filepath.Join(d, stray)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("unowned cgroup %s survived two scans", filepath.Join(d, stray))
		}
	}
	if _, err := os.Stat(strayDir); !errors.Is(err, os.ErrNotExist) {
		t.Error("unowned instance dir survived two scans")
	}
	if ms, _ := mountsUnder(a.instDir); len(ms) != 0 {
		t.Errorf("mounts below the instance directories survived two scans: %v", ms)
	}
	if inst, _ := a.Info(context.Background(), api.InfoRequest{ID: keep.ID}); inst.State != api.StateRunning {
		t.Fatalf("owned instance hit by the scan: %s", inst.State)
	}
}

func TestLogRotation(t *testing.T) {
	a := newTestAgent(t, func(c *config.Config) { c.Logs.MaxBytes = 64 << 10; c.Logs.Keep = 2 })
	inst := mustStart(t, a, api.Request{Name: "chatty", Command: sh("head -c 200000 /dev/zero | tr '\\0' x; sleep 1000")})
	log := filepath.Join(inst.Dir, "logs", "stdout.log")
	deadline := time.Now().Add(cgtest.Timeout(5 * time.Second))
	for {
		st, err := os.Stat(log)
		if err == nil && st.Size() == 200000 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance did not write its log: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	a.rotateLogs()
	if st, _ := os.Stat(log); st.Size() != 0 {
		t.Fatalf("log not truncated: %d bytes", st.Size())
	}
	if st, err := os.Stat(log + ".1"); err != nil || st.Size() != 200000 {
		t.Fatalf("rotated copy: %v", err)
	}
	// A symlink planted by the instance must not make the agent write elsewhere.
	target := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(target, []byte(strings.Repeat("v", 100000)), 0o600)
	os.Remove(log)
	os.Symlink(target, log)
	a.rotateLogs()
	if st, _ := os.Stat(target); st.Size() != 100000 {
		t.Fatal("rotation followed a symlink out of the instance dir")
	}
}

func TestTornRecords(t *testing.T) {
	testroot.Require(t)
	cfg := testConfig(t)
	recs := filepath.Join(cfg.StateDir, "records")
	if err := os.MkdirAll(recs, 0o700); err != nil {
		t.Fatal(err)
	}
	torn := filepath.Join(recs, "torn-1.json")
	os.WriteFile(torn, nil, 0o600)
	boot, err := bootTime()
	if err != nil {
		t.Fatal(err)
	}
	// Written after this boot: a real corruption, the agent must refuse.
	if _, err := New(Options{Config: cfg}); err == nil || !strings.Contains(err.Error(), "torn-1.json") {
		t.Fatalf("agent started over an unreadable record of this boot: %v", err)
	}
	// From before this boot: the remains of an unsynced write cut by a power
	// loss; set aside, and the agent starts.
	old := boot.Add(-time.Minute)
	os.Chtimes(torn, old, old)
	a, err := New(Options{Config: cfg})
	if err != nil {
		t.Fatalf("agent refused a pre-boot torn record: %v", err)
	}
	a.Close()
	if _, err := os.Stat(torn + ".torn"); err != nil {
		t.Fatalf("torn record not set aside: %v", err)
	}
}

func TestSecondAgentOnSameParentRefused(t *testing.T) {
	a := newTestAgent(t, nil)
	cfg := testConfig(t)
	cfg.Cgroup.Parent = a.cfg.Cgroup.Parent // another state dir, same parent
	if _, err := New(Options{Config: cfg}); !errors.Is(err, cgroup.ErrLocked) {
		t.Fatalf("second agent on %s: %v, want ErrLocked", cfg.Cgroup.Parent, err)
	}
}

func TestLogRotationHostileFiles(t *testing.T) {
	a := newTestAgent(t, func(c *config.Config) { c.Logs.MaxBytes = 4096; c.Logs.Keep = 1 })
	inst := mustStart(t, a, api.Request{Name: "hostile", Command: sh("sleep 1000")})
	logs := filepath.Join(inst.Dir, "logs")
	// A FIFO where the rotated copy goes would block an open forever.
	if err := syscall.Mkfifo(filepath.Join(logs, "stdout.log.1"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A sparse terabyte log must not be copied whole.
	if err := os.Truncate(filepath.Join(logs, "stdout.log"), 1<<40); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { a.rotateLogs(); close(done) }()
	select {
	case <-done:
	case <-time.After(cgtest.Timeout(10 * time.Second)):
		t.Fatal("rotation blocked on a FIFO or a sparse file")
	}
	st, err := os.Lstat(filepath.Join(logs, "stdout.log.1"))
	if err != nil || !st.Mode().IsRegular() || st.Size() != 4*4096 {
		t.Fatalf("rotated copy: %v %v", st, err)
	}
}

// TestDetectsCgroupMode: New leaves the cgroup version to detection, and
// must find the one the host runs (v2 in the cgroup v2 stage's VM).
func TestDetectsCgroupMode(t *testing.T) {
	a := newTestAgent(t, nil)
	if a.CgroupMode() != cgtest.Mode() {
		t.Fatalf("agent drives cgroup %s on a %s host", a.CgroupMode(), cgtest.Mode())
	}
	t.Logf("cgroup %s", a.CgroupMode())
}

// A stop whose request is abandoned mid-grace (the caller went away, or
// the agent is shutting down and has answered it) stops waiting for
// SIGTERM to work: the instance is killed and the stop finished, not left
// to run out a grace period nobody waits for.
func TestAbandonedStopCutsTheGraceShort(t *testing.T) {
	a := newTestAgent(t, nil)
	in := mustStart(t, a, api.Request{Name: "deaf", Command: sh(`trap "" TERM; while :; do sleep 1; done`)})
	ctx, cancel := context.WithCancel(context.Background())
	grace := int64(60_000)
	done := make(chan error, 1)
	go func() {
		_, err := a.Stop(ctx, api.StopRequest{ID: in.ID, TimeoutMS: &grace})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond) // into the grace period
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stop ran on into its 60 s grace period after its request was abandoned")
	}
	if got := waitState(t, a, in.ID, api.StateStopped); got.Reason != "stopped by request" {
		t.Fatalf("reason %q", got.Reason)
	}
}
