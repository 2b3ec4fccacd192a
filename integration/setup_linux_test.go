package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/acl"
	"github.com/hostward/ward/internal/testroot"
)

// Ids of the setup tests: outside the agent tests' range above.
const (
	setupGID    = 23300
	setupUIDMin = 23300
	setupUIDMax = 23349
)

func runWard(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(wardBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// fileState is a file's ACL xattr (verbatim, or none) and st_mode.
type fileState struct {
	acl  string
	has  bool
	mode uint32
}

func statAll(t *testing.T, paths ...string) map[string]fileState {
	t.Helper()
	m := map[string]fileState{}
	for _, p := range paths {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		s := fileState{mode: st.Mode}
		m[p] = s
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			continue // no ACL on a symlink
		}
		buf := make([]byte, 4096)
		n, err := unix.Lgetxattr(p, "system.posix_acl_access", buf)
		switch {
		case errors.Is(err, unix.ENODATA):
		case err != nil:
			t.Fatal(err)
		default:
			s.acl, s.has = string(buf[:n]), true
		}
		m[p] = s
	}
	return m
}

// copyEtc copies the host's account files (reading only) into a temp dir,
// with their modes, for `ward setup --etc-dir`.
func copyEtc(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"passwd", "group", "shadow", "gshadow"} {
		b, err := os.ReadFile(filepath.Join("/etc", n))
		if errors.Is(err, os.ErrNotExist) && (n == "shadow" || n == "gshadow") {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join("/etc", n))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, st.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if err := os.Chown(p, int(sys.Uid), int(sys.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func readAll(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() == ".pwd.lock" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func TestSetupThroughCLI(t *testing.T) {
	testroot.Require(t)
	work, err := os.MkdirTemp("", "ward-setup-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	p := func(n string) string { return filepath.Join(work, n) }
	for _, n := range []string{"plain", "named"} {
		if err := os.WriteFile(p(n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	named := acl.ACL{{Tag: acl.TagUserObj, Perm: 7, ID: acl.UndefinedID}, {Tag: acl.TagUser, Perm: 5, ID: 1000},
		{Tag: acl.TagGroupObj, Perm: 5, ID: acl.UndefinedID}, {Tag: acl.TagMask, Perm: 5, ID: acl.UndefinedID}, {Tag: acl.TagOther, Perm: 1, ID: acl.UndefinedID}}
	if err := unix.Setxattr(p("named"), "system.posix_acl_access", named.Encode(), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(p("plain"), p("link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(p("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	etc := copyEtc(t)
	state := p("state")
	cfgPath := p("ward.yaml")
	writeCfg := func(deny ...string) {
		cfg := fmt.Sprintf(`state_dir: %s
socket: %s
users: {uid_min: %d, uid_max: %d, group: wardsetup, gid: %d, create_passwd: true}
nats: {servers: [nats://127.0.0.1:1]}
acl:
  deny: [%s]
`, state, p("no.sock"), setupUIDMin, setupUIDMax, setupGID, strings.Join(deny, ", "))
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(p("plain"), p("named"), p("link"), p("missing"), p("dir"))
	targets := []string{p("plain"), p("named"), p("dir")}
	before := statAll(t, append(targets, p("link"))...)
	etcBefore := readAll(t, etc)

	out, errOut, code := runWard(t, "setup", "--config", cfgPath, "--etc-dir", etc)
	if code != 0 {
		t.Fatalf("ward setup: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"accounts  group wardsetup (gid 23300) created; 50 users created, 0 existed\n",
		"acl       3 paths denied, 1 absent, 0 already denied\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("ward setup printed\n%s\nwithout %q", out, want)
		}
	}
	for _, f := range targets {
		if ok, err := acl.DeniesGroup(f, setupGID); !ok || err != nil {
			t.Errorf("%s not denied: %v", f, err)
		}
	}
	pw, _ := os.ReadFile(filepath.Join(etc, "passwd"))
	if !strings.Contains(string(pw), "\nwardsetup-23349:x:23349:23300::/nonexistent:/usr/sbin/nologin\n") {
		t.Errorf("passwd lacks the pool's last user:\n%s", pw)
	}
	doctorACL := func() string {
		out, _, _ := runWard(t, "doctor", "--config", cfgPath, "--socket", p("no.sock"))
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, " acl ") {
				return l
			}
		}
		t.Fatalf("doctor printed no acl line:\n%s", out)
		return ""
	}
	if l := doctorACL(); !strings.HasPrefix(l, "OK") || !strings.Contains(l, "3 deny-list targets denied") {
		t.Errorf("doctor after setup: %q", l)
	}

	// Drift: the ACL of the symlink's target is lost; doctor sees it
	// through the symlink, and setup puts it back.
	if err := unix.Removexattr(p("plain"), "system.posix_acl_access"); err != nil {
		t.Fatal(err)
	}
	if l := doctorACL(); !strings.HasPrefix(l, "FAIL") || !strings.Contains(l, p("plain")) {
		t.Errorf("doctor after drift: %q", l)
	}
	out, errOut, code = runWard(t, "setup", "--config", cfgPath, "--etc-dir", etc)
	if code != 0 || !strings.Contains(out, "1 paths denied, 1 absent, 2 already denied") || !strings.Contains(out, "0 users created, 50 existed") {
		t.Errorf("second ward setup: exit %d\n%s%s", code, out, errOut)
	}

	out, errOut, code = runWard(t, "setup", "--config", cfgPath, "--etc-dir", etc, "--undo")
	if code != 0 {
		t.Fatalf("ward setup --undo: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "acl       3 ACLs restored\n") || !strings.Contains(out, "accounts  group removed; 50 users removed\n") {
		t.Errorf("ward setup --undo printed\n%s", out)
	}
	after := statAll(t, append(targets, p("link"))...)
	for f, b := range before {
		if after[f] != b {
			t.Errorf("%s after setup, setup, undo: %+v, was %+v", f, after[f], b)
		}
	}
	etcAfter := readAll(t, etc)
	for n, b := range etcBefore {
		if etcAfter[n] != b {
			t.Errorf("%s differs after undo", n)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(state, "setup")); len(ents) != 1 || ents[0].Name() != "lock" {
		t.Errorf("left in %s/setup: %v", state, ents)
	}
}

func TestSetupExitCodes(t *testing.T) {
	testroot.Require(t)
	work := t.TempDir()
	if _, _, code := runWard(t, "setup", "extra"); code != 2 {
		t.Errorf("ward setup extra: exit %d, want 2", code)
	}
	if _, _, code := runWard(t, "setup", "--etc-dir", "relative"); code != 2 {
		t.Errorf("ward setup --etc-dir relative: exit %d, want 2", code)
	}
	// A clash: a user holds a pool uid. Nothing changes, the message names
	// the user, exit 1.
	etc := copyEtc(t)
	f, err := os.OpenFile(filepath.Join(etc, "passwd"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "mallory:x:%d:100::/home/m:/bin/sh\n", setupUIDMin+3)
	f.Close()
	target := filepath.Join(work, "cmd")
	if err := os.WriteFile(target, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(work, "ward.yaml")
	cfg := fmt.Sprintf("state_dir: %s\nusers: {uid_min: %d, uid_max: %d, group: wardsetup, gid: %d, create_passwd: true}\nacl: {deny: [%s]}\n",
		filepath.Join(work, "state"), setupUIDMin, setupUIDMax, setupGID, target)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	etcBefore := readAll(t, etc)
	_, errOut, code := runWard(t, "setup", "--config", cfgPath, "--etc-dir", etc)
	if code != 1 || !strings.Contains(errOut, `uid 23303 belongs to user "mallory"`) {
		t.Errorf("ward setup with a clash: exit %d, %s", code, errOut)
	}
	if ok, _ := acl.DeniesGroup(target, setupGID); ok {
		t.Error("the ACL step ran after the accounts step failed")
	}
	etcAfter := readAll(t, etc)
	for n, b := range etcBefore {
		if etcAfter[n] != b {
			t.Errorf("%s changed by a refused setup", n)
		}
	}
	// A bad configuration: exit 1 naming the key.
	if err := os.WriteFile(cfgPath, []byte("acl: {deny: [relative/path]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runWard(t, "setup", "--config", cfgPath, "--etc-dir", etc); code != 1 || !strings.Contains(errOut, "acl.deny[0]") {
		t.Errorf("ward setup with a bad config: exit %d, %s", code, errOut)
	}
}
