package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/spawn"
)

func TestClassifyEnd(t *testing.T) {
	oom := endFacts{known: true, oomKills: 2, peak: 1 << 20, limit: 1 << 20}
	notified := endFacts{known: true, oomKills: 1, reported: 1, limit: 5}
	for _, c := range []struct {
		name   string
		exit   spawn.Exit
		f      endFacts
		killed bool
		kill   bool // policy kill
		want   api.State
		reason string
	}{
		{"clean exit", spawn.Exit{Known: true}, endFacts{known: true}, false, true, api.StateExited, "main process exited with code 0"},
		{"crash", spawn.Exit{Known: true, Code: 3}, endFacts{known: true}, false, true, api.StateCrashed, "main process exited with code 3"},
		{"SIGKILL, no OOM", spawn.Exit{Known: true, Signal: unix.SIGKILL}, endFacts{known: true}, false, true, api.StateCrashed, "main process killed by signal SIGKILL"},
		{"kernel OOM-killed main", spawn.Exit{Known: true, Signal: unix.SIGKILL}, oom, false, false, api.StateOOMKilled, "out of memory: 1048576 byte limit, peak 1048576 bytes, 2 OOM kills"},
		{"agent killed for OOM, main died of SIGTERM first", spawn.Exit{Known: true, Signal: unix.SIGTERM}, oom, true, true, api.StateOOMKilled, "out of memory"},
		{"policy kill: child OOM, main exited 3 before the kill", spawn.Exit{Known: true, Code: 3}, oom, false, true, api.StateOOMKilled, "out of memory"},
		{"unknown end after OOM", spawn.Exit{}, endFacts{known: true, oomKills: 1, limit: 5}, false, false, api.StateOOMKilled, "out of memory: 5 byte limit, 1 OOM kill"},
		{"notify: child OOM, main exits 0", spawn.Exit{Known: true}, oom, false, false, api.StateExited, "main process exited with code 0"},
		{"notify: child OOM, main exits 1", spawn.Exit{Known: true, Code: 1}, oom, false, false, api.StateCrashed, "main process exited with code 1"},
		{"notify: reported OOM, re-adopted main ends", spawn.Exit{}, notified, false, false, api.StateExited, "main process exited"},
		{"notify: reported OOM, main SIGKILLed", spawn.Exit{Known: true, Signal: unix.SIGKILL}, notified, false, false, api.StateCrashed, "main process killed by signal SIGKILL"},
	} {
		state, reason := classifyEnd(c.exit, c.f, c.killed, c.kill)
		if state != c.want || !strings.HasPrefix(reason, c.reason) {
			t.Errorf("%s: got %s %q, want %s %q", c.name, state, reason, c.want, c.reason)
		}
	}
}

func TestStderrTail(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "logs"), 0o700)
	p := filepath.Join(dir, "logs", "stderr.log")
	uid := os.Getuid()
	if got := stderrTail(dir, uid); got != "" {
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
	got := stderrTail(dir, uid)
	lines := strings.Split(got, "\n")
	if len(lines) != stderrTailLines || lines[len(lines)-2] != "panic: boom" || lines[len(lines)-1] != "\uFFFD" {
		t.Errorf("tail %q", got)
	}
	if got := stderrTail(dir, uid+1); got != "" {
		t.Errorf("a file of another uid was read: %q", got)
	}
	// A symlink planted by the instance is not followed.
	os.Remove(p)
	os.Symlink("/etc/hostname", p)
	if got := stderrTail(dir, uid); got != "" {
		t.Errorf("symlink followed: %q", got)
	}
	// A FIFO in its place neither blocks the agent nor is read.
	os.Remove(p)
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := stderrTail(dir, uid); got != "" {
		t.Errorf("FIFO read: %q", got)
	}
	// A short log is read whole, its first line kept.
	os.Remove(p)
	os.WriteFile(p, []byte("only\n"), 0o600)
	if got := stderrTail(dir, uid); got != "only" {
		t.Errorf("short log: %q", got)
	}
}
