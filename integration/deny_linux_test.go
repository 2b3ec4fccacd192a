package integration

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/hostward/ward/acl"
	"github.com/hostward/ward/api"
)

type execResult struct {
	Started  bool   `json:"started"`
	Errno    string `json:"errno"`
	ExitCode *int   `json:"exit_code"`
	Stdout   string `json:"stdout"`
}

// TestContainDeniedCommand denies a command to the pool's group the way
// `ward setup` does and runs it from inside an instance: execve refuses
// with EACCES (a shell says 126), while an allowed copy of the very same
// binary runs in the neighbour and in the instance itself.
func TestContainDeniedCommand(t *testing.T) {
	ty := newTenancy(t)
	dir, err := os.MkdirTemp("/var/lib", "ward-deny-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	denied, allowed := filepath.Join(dir, "id-denied"), filepath.Join(dir, "id-allowed")
	for _, p := range []string{denied, allowed} {
		copyFile(t, "/usr/bin/id", p, 0o755)
	}
	journal := filepath.Join(dir, "acl.journal")
	rep, err := acl.ApplyDeny([]string{denied}, uint32(ty.cfg.Users.GID), journal)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acl.UndoDeny(journal) })
	if len(rep.Denied) != 1 {
		t.Fatalf("apply: %+v", rep)
	}

	neighbour := ty.start("neighbour", api.Limits{}, "exec", "-stay", "--", allowed, "-u")
	var nr execResult
	neighbour.result(phaseDone, &nr)
	if !nr.Started || nr.ExitCode == nil || *nr.ExitCode != 0 || strings.TrimSpace(nr.Stdout) != strconv.Itoa(*neighbour.inst.UID) {
		t.Fatalf("allowed copy in the neighbour: %+v", nr)
	}

	direct := ty.start("direct", api.Limits{}, "exec", "-stay", "--", denied, "-u")
	var dr execResult
	direct.result(phaseDone, &dr)
	if dr.Started || dr.Errno != "EACCES" {
		t.Fatalf("denied command executed directly: %+v, want execve EACCES", dr)
	}

	shell := ty.start("shell", api.Limits{}, "exec", "-stay", "--", "/bin/sh", "-c", denied+" -u; echo status=$?; "+allowed+" -u")
	var sr execResult
	shell.result(phaseDone, &sr)
	want := "status=126\n" + strconv.Itoa(*shell.inst.UID) + "\n"
	if !sr.Started || sr.Stdout != want {
		t.Fatalf("through a shell: %+v, want stdout %q", sr, want)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
