package spawn

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/nsinit"
)

// nsShell is shell started through ward-init (this test binary, see
// TestMain) in namespaces of its own, its directory a fresh one under
// /var/lib (a namespaced process has a /tmp of its own).
func nsShell(t *testing.T, script string, out, errf *os.File) Spec {
	t.Helper()
	spec := shell(script, newGroup(t), out, errf)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/var/lib", "ward-spawn-ns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chown(dir, testUID, testGID)
	spec.Helper, spec.NOFILE, spec.Dir = exe, 1024, dir
	spec.Isolation = &Isolation{Hostname: "web-3", Writable: dir, TmpBytes: 8 << 20, Hide: []string{"/etc/hostname"}}
	return spec
}

func TestNamespacedView(t *testing.T) {
	out, errf := outputFiles(t)
	spec := nsShell(t, `echo $$; hostname; id -u; ulimit -n; cat /proc/self/oom_score_adj
ls /proc | grep -c '^[0-9]'
touch "$HOME_DIR/w" && echo dir-writable
touch /tmp/x && echo tmp-writable
touch /etc/x 2>/dev/null || echo etc-read-only
test -s /etc/hostname || echo hostname-hidden
grep -E '^(Cap[A-Za-z]+|NoNewPrivs|Seccomp):' /proc/self/status`, out, errf)
	spec.Env = append(spec.Env, "HOME_DIR="+spec.Dir)
	p, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	if e := wait(t, p); e.Code != 0 {
		b, _ := os.ReadFile(errf.Name())
		t.Fatalf("exit %+v: %s", e, b)
	}
	b, _ := os.ReadFile(out.Name())
	want := "1\nweb-3\n29990\n1024\n0\n3\ndir-writable\ntmp-writable\netc-read-only\nhostname-hidden\n" +
		"CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\n" +
		"NoNewPrivs:\t1\nSeccomp:\t2\n"
	if string(b) != want {
		t.Errorf("the instance saw\n%s\nwant\n%s", b, want)
	}
}

// TestNamespacedStartErrors: what ward-init reports comes back as the
// same errors a direct start gives (the program, the directory), or as
// ErrIsolation for what is ward's to fix; and the child is gone.
func TestNamespacedStartErrors(t *testing.T) {
	out, errf := outputFiles(t)
	t.Run("missing program", func(t *testing.T) {
		spec := nsShell(t, "", out, errf)
		spec.Path = "/nonexistent/prog"
		_, err := Start(spec)
		ee, ok := errors.AsType[*ExecError](err)
		if !ok || ee.Step != StepExec || !errors.Is(err, syscall.ENOENT) || ee.Path != spec.Path {
			t.Fatalf("Start: %v, want an exec ExecError with ENOENT", err)
		}
	})
	t.Run("directory the user cannot enter", func(t *testing.T) {
		spec := nsShell(t, "", out, errf)
		os.Chmod(spec.Dir, 0o700)
		os.Chown(spec.Dir, 0, 0)
		_, err := Start(spec)
		ee, ok := errors.AsType[*ExecError](err)
		if !ok || ee.Step != StepChdir || !errors.Is(err, syscall.EACCES) {
			t.Fatalf("Start: %v, want a chdir ExecError with EACCES", err)
		}
	})
	t.Run("writable path missing", func(t *testing.T) {
		spec := nsShell(t, "", out, errf)
		spec.Isolation.Writable = "/var/lib/ward-spawn-none/x"
		_, err := Start(spec)
		f, ok := errors.AsType[*nsinit.Failure](err)
		if !errors.Is(err, ErrIsolation) || !ok || f.Step != nsinit.StepMounts || !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("Start: %v, want ErrIsolation with a mounts failure", err)
		}
	})
	t.Run("no ward-init", func(t *testing.T) {
		spec := nsShell(t, "", out, errf)
		spec.Helper = "/nonexistent/ward-init"
		if _, err := Start(spec); !errors.Is(err, ErrIsolation) || !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("Start: %v, want ErrIsolation with ENOENT", err)
		}
	})
}

// TestTermInit: a namespace's init without a SIGTERM handler is immune to
// SIGTERM; TermInit gives it the SIGKILL SIGTERM's default action comes
// to. One with a handler gets its chance.
func TestTermInit(t *testing.T) {
	out, errf := outputFiles(t)
	deaf, err := Start(nsShell(t, "exec sleep 1000", out, errf))
	if err != nil {
		t.Fatal(err)
	}
	polite, err := Start(nsShell(t, `trap 'echo term; exit 7' TERM; echo ready; while :; do sleep 0.05; done`, out, errf))
	if err != nil {
		t.Fatal(err)
	}
	// A SIGTERM before the trap is set would be dropped, as for any init.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(out.Name()); strings.Contains(string(b), "ready") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the polite init never set its trap")
		}
	}
	for _, p := range []*Process{deaf, polite} {
		p.Signal(unix.SIGTERM)
	}
	select {
	case <-deaf.Done():
		t.Fatal("a namespace's init without a handler died of SIGTERM alone: TermInit is not needed")
	case <-time.After(200 * time.Millisecond):
	}
	for _, p := range []*Process{deaf, polite} {
		if err := p.TermInit(); err != nil {
			t.Fatal(err)
		}
	}
	if e := wait(t, deaf); e.Signal != syscall.SIGKILL {
		t.Errorf("deaf init: %+v, want SIGKILL", e)
	}
	if e := wait(t, polite); e.Code != 7 {
		t.Errorf("init with a handler: %+v, want its own exit 7", e)
	}
	if b, _ := os.ReadFile(out.Name()); !strings.Contains(string(b), "term") {
		t.Errorf("the handler did not run: %q", b)
	}
}

// TestNamespacedMountsStayInside: on a host whose mounts are shared (a
// systemd host's are), the mounts ward-init makes must not propagate back
// into the host's namespace. The test makes its own shared mount, hides a
// directory under it and puts the instance's directory there, and looks
// for either in the host's mount table while the instance runs.
func TestNamespacedMountsStayInside(t *testing.T) {
	shared, err := os.MkdirTemp("/var/lib", "ward-spawn-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	os.Chmod(shared, 0o755)
	if err := unix.Mount(shared, shared, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(shared, unix.MNT_DETACH) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	secret, home := shared+"/secret", shared+"/home"
	for _, d := range []string{secret, home} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chown(home, testUID, testGID)
	out, errf := outputFiles(t)
	spec := nsShell(t, "ls "+secret+" | wc -l; exec sleep 1000", out, errf)
	os.WriteFile(secret+"/key", []byte("k"), 0o644)
	spec.Dir, spec.Isolation.Writable = home, home
	spec.Isolation.Hide = []string{secret}
	p, err := Start(spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Signal(unix.SIGKILL); wait(t, p) })
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(out.Name()); len(b) > 0 {
			if strings.TrimSpace(string(b)) != "0" {
				t.Errorf("the instance saw %s entries in the hidden directory", b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no output")
		}
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], shared+"/") {
			t.Errorf("an instance's mount reached the host: %s", l)
		}
	}
}
