package instdir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/internal/testroot"
)

// testUID and testGID are this package's ids (other packages use other
// ranges); no process runs as them.
const (
	testUID = 23200
	testGID = 23201
)

func TestStderrTail(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, logsDir), 0o700)
	p := LogPath(dir, Stderr)
	uid := os.Getuid()
	if got := StderrTail(dir, uid); got != "" {
		t.Errorf("no log: %q", got)
	}
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		b.WriteString("line ")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString("\n")
	}
	b.WriteString("panic: boom\n\xff\n")
	os.WriteFile(p, []byte(b.String()), 0o600)
	got := StderrTail(dir, uid)
	lines := strings.Split(got, "\n")
	if len(lines) != TailLines || lines[len(lines)-2] != "panic: boom" || lines[len(lines)-1] != "\uFFFD" {
		t.Errorf("tail %q", got)
	}
	if got := StderrTail(dir, uid+1); got != "" {
		t.Errorf("a file of another uid was read: %q", got)
	}
	// A symlink planted by the instance is not followed.
	os.Remove(p)
	os.Symlink("/etc/hostname", p)
	if got := StderrTail(dir, uid); got != "" {
		t.Errorf("symlink followed: %q", got)
	}
	// A FIFO in its place neither blocks the agent nor is read.
	os.Remove(p)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := StderrTail(dir, uid); got != "" {
		t.Errorf("FIFO read: %q", got)
	}
	// A short log is read whole, its first line kept.
	os.Remove(p)
	os.WriteFile(p, []byte("only\n"), 0o600)
	if got := StderrTail(dir, uid); got != "only" {
		t.Errorf("short log: %q", got)
	}
	// A logs directory swapped for a symlink is not followed either.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, string(Stderr)), []byte("elsewhere\n"), 0o600)
	os.RemoveAll(filepath.Join(dir, logsDir))
	os.Symlink(other, filepath.Join(dir, logsDir))
	if got := StderrTail(dir, uid); got != "" {
		t.Errorf("logs symlink followed: %q", got)
	}
}

func TestRotate(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, logsDir), 0o700)
	uid := os.Getuid()
	p := LogPath(dir, Stdout)
	if err := Rotate(dir, Stdout, uid, 10, 2); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("no log: %v, want ENOENT", err)
	}
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	write("short\n")
	if err := Rotate(dir, Stdout, uid, 10, 2); err != nil || read(p) != "short\n" {
		t.Fatalf("under the cap: %v, log %q", err, read(p))
	}
	write("first run of output\n")
	if err := Rotate(dir, Stdout, uid, 10, 2); err != nil {
		t.Fatal(err)
	}
	write("second run of output\n")
	if err := Rotate(dir, Stdout, uid, 10, 2); err != nil {
		t.Fatal(err)
	}
	if read(p) != "" || read(p+".1") != "second run of output\n" || read(p+".2") != "first run of output\n" {
		t.Fatalf("after two rotations: %q, .1 %q, .2 %q", read(p), read(p+".1"), read(p+".2"))
	}
	// keep 0: truncated, no copy.
	write("third run of output\n")
	if err := Rotate(dir, Stdout, uid, 10, 0); err != nil || read(p) != "" || read(p+".1") != "second run of output\n" {
		t.Fatalf("keep 0: %v, log %q, .1 %q", err, read(p), read(p+".1"))
	}
	// A log of another uid is left alone.
	write("not the instance's own file\n")
	if err := Rotate(dir, Stdout, uid+1, 10, 1); err == nil || read(p) != "not the instance's own file\n" {
		t.Fatalf("another uid's log: %v, log %q", err, read(p))
	}
	// A symlink planted in place of the log is not followed.
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte(strings.Repeat("v", 100)), 0o600)
	os.Remove(p)
	os.Symlink(victim, p)
	if err := Rotate(dir, Stdout, uid, 10, 1); err == nil || read(victim) != strings.Repeat("v", 100) {
		t.Fatalf("symlinked log: %v, victim %q", err, read(victim))
	}
}

func TestPrepare(t *testing.T) {
	testroot.Require(t)
	dir := filepath.Join(t.TempDir(), "inst")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := Prepare(dir, testUID, testGID)
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	defer stderr.Close()
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, os.ModeDir | 0o700},
		{filepath.Join(dir, logsDir), os.ModeDir | 0o700},
		{LogPath(dir, Stdout), 0o600},
		{LogPath(dir, Stderr), 0o600},
	} {
		var st unix.Stat_t
		if err := unix.Lstat(c.path, &st); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(c.path)
		if st.Uid != testUID || st.Gid != testGID || fi.Mode() != c.mode {
			t.Errorf("%s: %d:%d %v, want %d:%d %v", c.path, st.Uid, st.Gid, fi.Mode(), testUID, testGID, c.mode)
		}
	}
	if _, err := stderr.WriteString("boom\n"); err != nil {
		t.Fatal(err)
	}
	if got := StderrTail(dir, testUID); got != "boom" {
		t.Errorf("tail of the opened stderr: %q", got)
	}
	// A directory already handed over (here: the one just prepared) is
	// refused: an earlier holder of the uid could have planted anything.
	if _, _, err := Prepare(dir, testUID, testGID); err == nil {
		t.Error("Prepare of a directory not root's succeeded")
	}
}
