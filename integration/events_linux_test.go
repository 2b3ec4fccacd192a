package integration

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hostward/ward/api"
)

// TestEventsCommand: `ward events --json` streams what the agent does.
func TestEventsCommand(t *testing.T) {
	h := newHost(t)
	h.start("")
	cmd := exec.Command(wardBin, "events", "--json")
	cmd.Env = append(os.Environ(), "WARD_SOCKET="+h.cfg.Socket)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// The stream is subscribed once the command has connected; retry the
	// instance until its events show up.
	deadline := time.After(10 * time.Second)
	var kinds []string
	for len(kinds) < 2 {
		o, e, code := h.run("run", "--name", "ev", "--", "sh", "-c", "echo first >&2; echo boom >&2; exit 3")
		if code != 0 {
			t.Fatalf("ward run: %s", e)
		}
		id := strings.TrimSpace(o)
		kinds = kinds[:0]
		for len(kinds) < 2 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("event stream ended")
				}
				var ev api.Event
				if err := json.Unmarshal([]byte(l), &ev); err != nil {
					t.Fatalf("not JSON: %q", l)
				}
				if ev.ID != id {
					continue
				}
				kinds = append(kinds, ev.Kind)
				if ev.Kind == api.EventCrashed && (ev.State != api.StateCrashed || ev.ExitCode == nil || *ev.ExitCode != 3 || ev.Seq == 0 || ev.StderrTail != "first\nboom") {
					t.Fatalf("exit event %+v", ev)
				}
			case <-time.After(500 * time.Millisecond):
				kinds = append(kinds, "") // not subscribed yet: try again
			case <-deadline:
				t.Fatal("no events")
			}
		}
		if kinds[0] == api.EventStarted && kinds[1] == api.EventCrashed {
			break
		}
		kinds = kinds[:0]
	}
}
