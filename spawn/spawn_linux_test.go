package spawn

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/testroot"
)

const (
	testUID = 29990 // from the top of the default pool; no passwd entry needed
	testGID = 29990
)

// TestMain lets the test binary double as the instance program for cases
// that need behaviour no base tool gives (allocating memory).
func TestMain(m *testing.M) {
	if os.Getenv("SPAWN_TEST_HOG") != "" {
		n, _ := strconv.Atoi(os.Getenv("SPAWN_TEST_HOG"))
		b := make([]byte, n)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// newGroup makes a throwaway group for one instance, in the host's cgroup
// mode (so these tests clone into a v2 group on a unified host and fork
// from a thread inside the v1 groups elsewhere), removed with whatever is
// left in it when the test ends.
func newGroup(t *testing.T) *cgroup.Group {
	t.Helper()
	m := cgtest.NewManager(t)
	g, err := m.Create("inst", nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// place puts spec's process into g the way the agent does.
func place(spec *Spec, g *cgroup.Group) {
	if cgtest.Mode() == cgroup.V2 {
		spec.CgroupV2Dir = g.Dirs()[0]
	} else {
		spec.CgroupV1Dirs = g.Dirs()
	}
}

func outputFiles(t *testing.T) (*os.File, *os.File) {
	dir := t.TempDir()
	out, err := os.Create(filepath.Join(dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	errf, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close(); errf.Close() })
	return out, errf
}

func shell(script string, g *cgroup.Group, out, errf *os.File) Spec {
	spec := Spec{
		Path: "/bin/sh", Args: []string{"sh", "-c", script},
		Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/",
		UID: testUID, GID: testGID,
		Stdout: out, Stderr: errf,
	}
	place(&spec, g)
	return spec
}

func wait(t *testing.T, p *Process) Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(10*time.Second))
	defer cancel()
	e, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("wait %d: %v", p.Pid, err)
	}
	return e
}

func TestStartInCgroupAsUser(t *testing.T) {
	g := newGroup(t)
	out, errf := outputFiles(t)
	p, err := Start(shell(`cat /proc/self/cgroup; id -u; id -g; id -G; cut -d' ' -f6 /proc/self/stat; echo $$; pwd; echo err >&2`, g, out, errf))
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); !e.Known || e.Code != 0 || e.Signal != 0 {
		t.Fatalf("exit %+v", e)
	}
	b, _ := os.ReadFile(out.Name())
	got := string(b)
	if cgtest.Mode() == cgroup.V2 {
		// Cloned straight into the group: its first instruction ran there.
		if !strings.HasPrefix(got, "0::"+g.Path()+"\n") {
			t.Errorf("not in v2 group %s:\n%s", g.Path(), got)
		}
	} else {
		for _, c := range cgroup.V1Controllers() {
			if !strings.Contains(got, ":"+c+":"+g.Path()+"\n") {
				t.Errorf("not in %s group %s:\n%s", c, g.Path(), got)
			}
		}
	}
	lines := strings.Split(strings.TrimSpace(got), "\n")
	n := len(lines)
	id := lines[n-6 : n]
	want := []string{strconv.Itoa(testUID), strconv.Itoa(testGID), strconv.Itoa(testGID)}
	for i, w := range want {
		if id[i] != w {
			t.Errorf("id line %d = %q, want %q (uid, gid, groups)", i, id[i], w)
		}
	}
	if id[3] != id[4] {
		t.Errorf("session id %s != pid %s: not a new session", id[3], id[4])
	}
	if id[5] != "/" {
		t.Errorf("cwd %q", id[5])
	}
	if b, _ := os.ReadFile(errf.Name()); string(b) != "err\n" {
		t.Errorf("stderr %q", b)
	}
}

func TestAgentThreadLeavesGroup(t *testing.T) {
	g := newGroup(t)
	out, errf := outputFiles(t)
	// The files listing a group's threads: v1 moves one of the agent's
	// threads in and out; v2 never moves any, and must not start to.
	threads := "tasks"
	if cgtest.Mode() == cgroup.V2 {
		threads = "cgroup.threads"
	}
	for i := 0; i < 50; i++ {
		// A failed exec returns early: the thread must be gone then too.
		spec := shell("exit 0", g, out, errf)
		if i%2 == 1 {
			spec.Path = "/nonexistent"
		}
		p, err := Start(spec)
		// Checked at once: a kill-all right after Start must not find the
		// agent in the group.
		for _, d := range g.Dirs() {
			b, rerr := os.ReadFile(filepath.Join(d, threads))
			if rerr != nil {
				t.Fatal(rerr)
			}
			for _, tid := range strings.Fields(string(b)) {
				if _, serr := os.Stat("/proc/self/task/" + tid); serr == nil {
					t.Fatalf("agent thread %s still in %s after Start returned", tid, d)
				}
			}
		}
		if err == nil {
			wait(t, p)
		}
	}
}

func TestExitStatus(t *testing.T) {
	g := newGroup(t)
	out, errf := outputFiles(t)
	p, err := Start(shell("exit 3", g, out, errf))
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); !e.Known || e.Code != 3 || e.Signal != 0 {
		t.Fatalf("exit %+v, want code 3", e)
	}
	p, err = Start(shell("kill -KILL $$", g, out, errf))
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); !e.Known || e.Signal != syscall.SIGKILL {
		t.Fatalf("exit %+v, want SIGKILL", e)
	}
	p, err = Start(shell("sleep 100", g, out, errf))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); e.Signal != syscall.SIGTERM {
		t.Fatalf("exit %+v, want SIGTERM", e)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal after exit: %v", err)
	}
}

func TestMemoryChargedToInstance(t *testing.T) {
	g := newGroup(t)
	limit := int64(32 << 20)
	if err := g.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); err != nil {
		t.Fatal(err)
	}
	out, errf := outputFiles(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary must be readable by the pool uid.
	binDir, err := os.MkdirTemp("", "ward-spawn-hog-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(binDir) })
	os.Chmod(binDir, 0o755)
	bin := filepath.Join(binDir, "hog")
	copyFile(t, exe, bin)
	spec := Spec{
		Path: bin, Args: []string{"hog"}, Dir: "/",
		Env: []string{"SPAWN_TEST_HOG=" + strconv.Itoa(128<<20)},
		UID: testUID, GID: testGID, Stdout: out, Stderr: errf,
	}
	place(&spec, g)
	p, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); e.Signal != syscall.SIGKILL {
		t.Fatalf("128 MiB allocation under a 32 MiB limit ended %+v, want OOM SIGKILL", e)
	}
	spec.Env = []string{"SPAWN_TEST_HOG=" + strconv.Itoa(4<<20)}
	p, err = Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); !e.Known || e.Code != 0 {
		t.Fatalf("4 MiB allocation ended %+v", e)
	}
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestAdopt(t *testing.T) {
	testroot.Require(t)
	cmd := exec.Command("sleep", "100")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	st, err := StartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Adopt(cmd.Process.Pid, st+1); !errors.Is(err, ErrGone) {
		t.Fatalf("adopt with another start time: %v, want ErrGone", err)
	}
	p, err := Adopt(cmd.Process.Pid, st)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
		t.Fatal("adopted process reported done while running")
	case <-time.After(20 * time.Millisecond):
	}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); e.Known {
		t.Fatalf("adopted exit %+v claims a known status", e)
	}
	cmd.Wait()
	if _, err := Adopt(cmd.Process.Pid, st); !errors.Is(err, ErrGone) {
		t.Fatalf("adopt of a reaped process: %v, want ErrGone", err)
	}
}

func TestStartErrors(t *testing.T) {
	g := newGroup(t)
	out, errf := outputFiles(t)
	spec := shell("true", g, out, errf)
	spec.Path = "/nonexistent/bin"
	if _, err := Start(spec); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing binary: %v", err)
	}
	spec = shell("true", g, out, errf)
	spec.CgroupV2Dir, spec.CgroupV1Dirs = "", nil
	if cgtest.Mode() == cgroup.V2 {
		spec.CgroupV2Dir = filepath.Join(cgtest.Root, "ward-no-such-group")
	} else {
		spec.CgroupV1Dirs = []string{filepath.Join(cgtest.Root, "memory", "ward-no-such-group")}
	}
	if _, err := Start(spec); err == nil {
		t.Fatal("start into a missing group succeeded")
	}
	spec.CgroupV2Dir, spec.CgroupV1Dirs = "", nil
	if _, err := Start(spec); err == nil {
		t.Fatal("start without placement succeeded")
	}
}
