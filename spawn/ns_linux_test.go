package spawn

import (
	"os"
	"strings"
	"testing"
)

// nsShell is shell with ward-init and a namespaced view.
func nsShell(t *testing.T, script string, out, errf *os.File) Spec {
	t.Helper()
	g := newGroup(t)
	spec := shell(script, g, out, errf)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	spec.Helper, spec.NOFILE = exe, 1024
	spec.Isolation = &Isolation{Hostname: "web-3", Writable: dir, TmpBytes: 8 << 20}
	spec.Dir = dir
	return spec
}

func TestNamespacedSmoke(t *testing.T) {
	out, errf := outputFiles(t)
	p, err := Start(nsShell(t, `echo pid=$$; hostname; id -u; ulimit -n; cat /proc/self/oom_score_adj; ls /proc | grep -c '^[0-9]'; touch /tmp/x && echo tmp-ok; touch /etc/x 2>&1; grep -c . /proc/self/mountinfo; grep Cap /proc/self/status; grep -E 'NoNewPrivs|Seccomp:' /proc/self/status`, out, errf))
	if err != nil {
		t.Fatal(err)
	}
	e := wait(t, p)
	b, _ := os.ReadFile(out.Name())
	eb, _ := os.ReadFile(errf.Name())
	t.Logf("exit %+v\n%s\nstderr:\n%s", e, b, eb)
	if !strings.Contains(string(b), "pid=1\n") {
		t.Error("not pid 1")
	}
}
