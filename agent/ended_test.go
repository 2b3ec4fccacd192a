package agent

import (
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
