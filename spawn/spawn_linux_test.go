package spawn

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/testroot"
	"github.com/hostward/ward/nsinit"
)

const (
	testUID = 29990 // from the top of the default pool; no passwd entry needed
	testGID = 29990
)

// TestMain lets the test binary double as the instance program for cases
// that need behaviour no base tool gives (allocating memory).
func TestMain(m *testing.M) {
	nsinit.ServeSelf()
	if os.Getenv("SPAWN_TEST_HOG") != "" {
		n, _ := strconv.Atoi(os.Getenv("SPAWN_TEST_HOG"))
		b := make([]byte, n)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		os.Exit(0)
	}
	if os.Getenv("SPAWN_TEST_MAIN_THREAD") != "" {
		mainThreadChild()
	}
	os.Exit(m.Run())
}

// newGroup makes a throwaway group for one instance, in the host's cgroup
// mode (so these tests clone into a v2 group on a unified host and fork
// from a thread inside the v1 groups elsewhere), removed with whatever is
// left in it when the test ends.
func newGroup(t testing.TB) *cgroup.Group {
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

func outputFiles(t testing.TB) (*os.File, *os.File) {
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

// worldDir is a fresh directory the pool uid may search (t.TempDir's are
// 0700), removed when t ends.
func worldDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ward-spawn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

// TestStartErrorSteps makes each step of Start fail for real and checks
// that the error names the step and keeps the errno, for errors.Is and
// errors.As alone.
func TestStartErrorSteps(t *testing.T) {
	g := newGroup(t)
	out, errf := outputFiles(t)
	dir := worldDir(t)
	private := filepath.Join(dir, "private") // root's, 0700: the pool uid may not search it
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	hidden := writeFile(t, filepath.Join(private, "prog"), "#!/bin/sh\nexit 0\n", 0o755)
	plain := writeFile(t, filepath.Join(dir, "plain"), "#!/bin/sh\nexit 0\n", 0o644)
	garbage := writeFile(t, filepath.Join(dir, "garbage"), "\x00\x01 not a program\n", 0o755)
	noInterp := writeFile(t, filepath.Join(dir, "nointerp"), "#!/nonexistent/interpreter\n", 0o755)
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		edit  func(*Spec)
		step  Step
		path  func(Spec) string
		errno syscall.Errno
	}{
		{"missing program", func(s *Spec) { s.Path = "/nonexistent/bin" }, StepExec, nil, syscall.ENOENT},
		{"missing interpreter", func(s *Spec) { s.Path = noInterp }, StepExec, nil, syscall.ENOENT},
		{"not executable", func(s *Spec) { s.Path = plain }, StepExec, nil, syscall.EACCES},
		{"a directory", func(s *Spec) { s.Path = dir }, StepExec, nil, syscall.EACCES},
		{"not a program", func(s *Spec) { s.Path = garbage }, StepExec, nil, syscall.ENOEXEC},
		{"symlink loop", func(s *Spec) { s.Path = loop }, StepExec, nil, syscall.ELOOP},
		{"program the uid cannot reach", func(s *Spec) { s.Path = hidden }, StepExec, nil, syscall.EACCES},
		{"dir the uid cannot enter", func(s *Spec) { s.Dir = private }, StepChdir, func(s Spec) string { return s.Dir }, syscall.EACCES},
		{"missing dir", func(s *Spec) { s.Dir = filepath.Join(dir, "gone") }, StepChdir, func(s Spec) string { return s.Dir }, syscall.ENOENT},
		// uid and gid -1 are no ids: setgid/setuid refuse them.
		{"invalid uid", func(s *Spec) { s.UID, s.GID = ^uint32(0), ^uint32(0) }, StepCredentials, nil, syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := shell("exit 0", g, out, errf)
			tc.edit(&spec)
			_, err := Start(spec)
			ee, ok := errors.AsType[*ExecError](err)
			if !ok {
				t.Fatalf("%v (%T), want an *ExecError", err, err)
			}
			want := spec.Path
			if tc.path != nil {
				want = tc.path(spec)
			}
			if ee.Step != tc.step || ee.Errno != tc.errno || ee.Path != want || !errors.Is(err, tc.errno) {
				t.Fatalf("%+v, want step %s, errno %v, path %s", *ee, tc.step, tc.errno, want)
			}
			for _, parent := range []error{ErrSpec, ErrCgroup, ErrFork, ErrWatch} {
				if errors.Is(err, parent) {
					t.Errorf("child's failure %v also is %v", err, parent)
				}
			}
		})
	}

	t.Run("missing cgroup", func(t *testing.T) {
		spec := shell("exit 0", g, out, errf)
		spec.CgroupV2Dir, spec.CgroupV1Dirs = "", nil
		if cgtest.Mode() == cgroup.V2 {
			spec.CgroupV2Dir = filepath.Join(cgtest.Root, "ward-no-such-group")
		} else {
			spec.CgroupV1Dirs = []string{filepath.Join(cgtest.Root, "memory", "ward-no-such-group")}
		}
		_, err := Start(spec)
		if !errors.Is(err, ErrCgroup) || !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("%v, want ErrCgroup with ENOENT", err)
		}
		if _, ok := errors.AsType[*ExecError](err); ok {
			t.Fatalf("%v: the parent's failure is an *ExecError", err)
		}
	})

	t.Run("cgroup removed before attach", func(t *testing.T) {
		gone, err := cgtest.NewManager(t).Create("gone", nil)
		if err != nil {
			t.Fatal(err)
		}
		spec := shell("exit 0", gone, out, errf)
		if err := gone.Remove(); err != nil {
			t.Fatal(err)
		}
		if _, err := Start(spec); !errors.Is(err, ErrCgroup) {
			t.Fatalf("%v, want ErrCgroup", err)
		}
	})

	t.Run("pids limit", func(t *testing.T) {
		full, err := cgtest.NewManager(t).Create("full", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Written directly: OCI reads a pids limit of 0 as no limit.
		for _, d := range full.Dirs() {
			if _, err := os.Stat(filepath.Join(d, "pids.max")); err == nil {
				if err := os.WriteFile(filepath.Join(d, "pids.max"), []byte("0"), 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		_, err = Start(shell("exit 0", full, out, errf))
		if !errors.Is(err, ErrFork) || !errors.Is(err, syscall.EAGAIN) {
			t.Fatalf("%v, want ErrFork with EAGAIN", err)
		}
		if _, ok := errors.AsType[*ExecError](err); ok {
			t.Fatalf("%v: the clone's failure is an *ExecError", err)
		}
	})

	t.Run("spec", func(t *testing.T) {
		for name, edit := range map[string]func(*Spec){
			"no placement": func(s *Spec) { s.CgroupV2Dir, s.CgroupV1Dirs = "", nil },
			"no command":   func(s *Spec) { s.Args = nil },
			"NUL in env":   func(s *Spec) { s.Env = append(s.Env, "A=\x00") },
			"no stderr":    func(s *Spec) { s.Stderr = nil },
			"closed stdout": func(s *Spec) {
				f, err := os.Create(filepath.Join(t.TempDir(), "closed"))
				if err != nil {
					t.Fatal(err)
				}
				f.Close()
				s.Stdout = f
			},
		} {
			spec := shell("exit 0", g, out, errf)
			edit(&spec)
			if _, err := Start(spec); !errors.Is(err, ErrSpec) {
				t.Errorf("%s: %v, want ErrSpec", name, err)
			}
		}
	})
}

// TestDisposableThreadNeverMain: the thread that joins an instance's v1
// groups is never the main thread, even when the scheduler hands the
// spawning goroutine to it. Run in a child process with one P, where a
// goroutine started just before the main goroutine blocks runs next on the
// main thread.
func TestDisposableThreadNeverMain(t *testing.T) {
	// Not os.Args[0]: the v2 VM runs the test binary by a bare name.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "SPAWN_TEST_MAIN_THREAD=1")
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, b)
	}
	var dodges, onMain int
	if _, err := fmt.Sscanf(string(b), "dodges %d on-main %d", &dodges, &onMain); err != nil {
		t.Fatalf("child said %q: %v", b, err)
	}
	if onMain != 0 {
		t.Fatalf("%d of the calls ran on the main thread (child: %s)", onMain, b)
	}
	if dodges == 0 {
		t.Fatal("no call landed on the main thread: the case was not covered")
	}
}

// mainThreadChild is TestDisposableThreadNeverMain's child: the main
// goroutine starts on the main thread (runtime.main runs it there), and
// with GOMAXPROCS 1 the goroutine onDisposableThread starts runs next on
// the thread its caller blocks.
func mainThreadChild() {
	runtime.GOMAXPROCS(1)
	onMain := 0
	for i := 0; i < 20; i++ {
		runtime.LockOSThread()
		if unix.Gettid() != os.Getpid() {
			// Nothing else moves the main goroutine off the main thread
			// for good: an earlier call left it wedged.
			fmt.Printf("dodges %d on-main %d lost-main-at %d\n", mainThreadDodges.Load(), max(onMain, 1), i)
			os.Exit(0)
		}
		runtime.UnlockOSThread()
		if tid := onDisposableThread(func(int) {}); tid == os.Getpid() {
			onMain++
		}
	}
	fmt.Printf("dodges %d on-main %d\n", mainThreadDodges.Load(), onMain)
	os.Exit(0)
}
