package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
)

// tail reads /dev/zero looking for a newline that never comes, buffering
// all of it: a memory hog found on every host.
const hog = "tail /dev/zero"

// gate is a FIFO instances block on (`read x < gate`) until the test
// releases them, one line each, so that they start hogging together. The
// test keeps it open for reading and writing: opens never block and lines
// written before a reader arrives wait for it.
type gate struct {
	path string
	f    *os.File
}

func newGate(t *testing.T) *gate {
	t.Helper()
	dir, err := os.MkdirTemp("/var/lib", "ward-gate-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	p := filepath.Join(dir, "gate")
	if err := syscallMkfifo(p, 0o666); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); os.RemoveAll(dir) })
	return &gate{path: p, f: f}
}

func (g *gate) open(n int) {
	g.f.Write([]byte(strings.Repeat("\n", n)))
}

// terminalEvents collects the terminal events of every instance until
// stop is called.
type terminalEvents struct {
	mu   sync.Mutex
	byID map[string][]api.Event
	done chan struct{}
}

func collectEvents(t *testing.T, a *Agent) *terminalEvents {
	ch, cancel := a.Events().Subscribe()
	te := &terminalEvents{byID: map[string][]api.Event{}, done: make(chan struct{})}
	go func() {
		defer close(te.done)
		for e := range ch {
			if e.State.Terminal() || e.Kind == api.EventOOMKilled {
				te.mu.Lock()
				te.byID[e.ID] = append(te.byID[e.ID], e)
				te.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-te.done })
	return te
}

func (te *terminalEvents) of(id string) []api.Event {
	te.mu.Lock()
	defer te.mu.Unlock()
	return append([]api.Event(nil), te.byID[id]...)
}

func wantOOMKilled(t *testing.T, inst *api.Instance, limit int64) {
	t.Helper()
	prefix := fmt.Sprintf("out of memory: %d byte limit", limit)
	if inst.State != api.StateOOMKilled || !strings.HasPrefix(inst.Reason, prefix) || inst.OOMKills < 1 {
		t.Fatalf("instance %s: state %s, reason %q, oom_kills %d; want oom_killed, %q", inst.ID, inst.State, inst.Reason, inst.OOMKills, prefix)
	}
}

// TestOOMOfChildKillsWholeInstance: the kernel kills the hog, a child; the
// main process is not over its limit and would live on, but the whole
// instance is killed and reported oom_killed.
func TestOOMOfChildKillsWholeInstance(t *testing.T) {
	a := newTestAgent(t, nil)
	counted := &countingCounters{}
	a.counters.Store(&countersBox{counted})
	te := collectEvents(t, a)
	mem := int64(32 << 20)
	neighbour := mustStart(t, a, api.Request{Name: "neighbour", Command: sh("exec sleep 1000")})
	inst := mustStart(t, a, api.Request{Name: "parent", Limits: api.Limits{MemoryBytes: &mem},
		Command: sh("echo hogging >&2; " + hog + " & exec sleep 1000")})
	end := waitState(t, a, inst.ID, api.StateOOMKilled)
	wantOOMKilled(t, end, mem)
	if end.ExitSignal != "SIGKILL" {
		t.Errorf("main process ended by %q, want SIGKILL from the agent", end.ExitSignal)
	}
	if end.StderrTail != "hogging" {
		t.Errorf("stderr tail %q", end.StderrTail)
	}
	waitFor(t, "the oom_killed event", func() bool { return len(te.of(inst.ID)) > 0 })
	if evs := te.of(inst.ID); len(evs) != 1 || evs[0].Kind != api.EventOOMKilled || evs[0].OOMKills < 1 || evs[0].MemoryPeakBytes == nil {
		t.Fatalf("terminal events %+v, want one oom_killed with its counts", evs)
	}
	if n, _ := a.Info(context.Background(), api.InfoRequest{ID: neighbour.ID}); n.State != api.StateRunning || *n.PID != *neighbour.PID {
		t.Fatalf("neighbour: %+v", n)
	}
	counted.mu.Lock()
	defer counted.mu.Unlock()
	if counted.oomKills != end.OOMKills || counted.starts["ok"] != 2 || counted.events[api.EventOOMKilled] != 1 {
		t.Fatalf("counters: %d OOM kills (instance says %d), starts %v, events %v", counted.oomKills, end.OOMKills, counted.starts, counted.events)
	}
}

type countingCounters struct {
	mu       sync.Mutex
	oomKills uint64
	starts   map[string]int
	events   map[string]int
}

func (c *countingCounters) EventPublished(kind string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events == nil {
		c.events = map[string]int{}
	}
	c.events[kind]++
}
func (c *countingCounters) AddOOMKills(n uint64) { c.mu.Lock(); c.oomKills += n; c.mu.Unlock() }
func (c *countingCounters) InstanceStart(r string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.starts == nil {
		c.starts = map[string]int{}
	}
	c.starts[r]++
}
func (c *countingCounters) InstanceStop(string)              {}
func (c *countingCounters) ObserveSample(took time.Duration) {}

// TestOOMInFirstMillisecond: the watch is in place before the first
// process enters the group, so a hog that runs out of memory at once is
// caught like any other.
func TestOOMInFirstMillisecond(t *testing.T) {
	a := newTestAgent(t, nil)
	mem := int64(8 << 20)
	inst := mustStart(t, a, api.Request{Name: "instant", Limits: api.Limits{MemoryBytes: &mem},
		Command: sh(hog + " & exec sleep 1000")})
	wantOOMKilled(t, waitState(t, a, inst.ID, api.StateOOMKilled), mem)
}

// TestFiftyOOMsAtOnce: fifty instances run out of memory together; each
// gives exactly one oom_killed event, and the neighbour is untouched.
func TestFiftyOOMsAtOnce(t *testing.T) {
	const n = 50
	a := newTestAgent(t, nil)
	te := collectEvents(t, a)
	g := newGate(t)
	mem := int64(16 << 20)
	neighbour := mustStart(t, a, api.Request{Name: "neighbour", Command: sh("exec sleep 1000")})
	ids := make([]string, n)
	for i := range ids {
		ids[i] = mustStart(t, a, api.Request{Name: "hog", Index: i, Limits: api.Limits{MemoryBytes: &mem},
			Command: sh("read x < " + g.path + "; " + hog + " & exec sleep 1000")}).ID
	}
	g.open(n)
	deadline := time.Now().Add(60 * time.Second)
	for _, id := range ids {
		for len(te.of(id)) == 0 {
			if time.Now().After(deadline) {
				inst, _ := a.Info(context.Background(), api.InfoRequest{ID: id})
				t.Fatalf("no terminal event for %s: %+v", id, inst)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	time.Sleep(200 * time.Millisecond) // room for a doubled event to show
	for _, id := range ids {
		evs := te.of(id)
		if len(evs) != 1 || evs[0].Kind != api.EventOOMKilled {
			t.Errorf("%s: events %+v, want exactly one oom_killed", id, evs)
		}
		inst, _ := a.Info(context.Background(), api.InfoRequest{ID: id})
		wantOOMKilled(t, inst, mem)
	}
	if nb, _ := a.Info(context.Background(), api.InfoRequest{ID: neighbour.ID}); nb.State != api.StateRunning || *nb.PID != *neighbour.PID {
		t.Fatalf("neighbour: %+v", nb)
	}
}

// TestStopWhileOOMing races a stop against an OOM kill, at staggered
// moments: whichever wins, the instance ends once — one terminal state on
// record and one terminal event.
func TestStopWhileOOMing(t *testing.T) {
	a := newTestAgent(t, nil)
	te := collectEvents(t, a)
	g := newGate(t)
	mem := int64(16 << 20)
	zero := int64(0)
	for i := 0; i < 16; i++ {
		inst := mustStart(t, a, api.Request{Name: "race", Index: i, Limits: api.Limits{MemoryBytes: &mem},
			Command: sh("read x < " + g.path + "; " + hog + " & exec sleep 1000")})
		g.open(1)
		time.Sleep(time.Duration(i) * 4 * time.Millisecond)
		stopped, err := a.Stop(context.Background(), api.StopRequest{ID: inst.ID, TimeoutMS: &zero})
		if err != nil {
			t.Fatal(err)
		}
		if !stopped.State.Terminal() {
			t.Fatalf("after stop: %s", stopped.State)
		}
		waitFor(t, "a terminal event", func() bool { return len(te.of(inst.ID)) > 0 })
		time.Sleep(50 * time.Millisecond)
		evs := te.of(inst.ID)
		final, _ := a.Info(context.Background(), api.InfoRequest{ID: inst.ID})
		if len(evs) != 1 || evs[0].State != final.State || final.State != stopped.State {
			t.Fatalf("round %d: stop said %s, record says %s, events %+v: want one end", i, stopped.State, final.State, evs)
		}
		t.Logf("round %d: %s", i, final.State)
	}
}

// TestOOMPolicyNotify: the kernel kills the hog and the instance lives
// on; everyone hears of it.
func TestOOMPolicyNotify(t *testing.T) {
	a := newTestAgent(t, func(c *config.Config) { c.OOM.Policy = config.OOMNotify })
	te := collectEvents(t, a)
	mem := int64(32 << 20)
	inst := mustStart(t, a, api.Request{Name: "notify", Limits: api.Limits{MemoryBytes: &mem},
		Command: sh(hog + "; exec sleep 1000")})
	waitFor(t, "the OOM notice", func() bool { return len(te.of(inst.ID)) > 0 })
	ev := te.of(inst.ID)[0]
	if ev.Kind != api.EventOOMKilled || ev.State != api.StateRunning || !strings.Contains(ev.Reason, "leaves the instance running") {
		t.Fatalf("event %+v, want oom_killed with state running", ev)
	}
	if ev.OOMKills < 1 {
		t.Errorf("notice without oom_kills: %+v", ev)
	}
	time.Sleep(2 * notifyGrace)
	now, _ := a.Info(context.Background(), api.InfoRequest{ID: inst.ID})
	if now.State != api.StateRunning || *now.PID != *inst.PID || now.OOMKills != ev.OOMKills {
		t.Fatalf("instance %s pid %v oom_kills %d after a notify OOM; want running, pid %d", now.State, now.PID, now.OOMKills, *inst.PID)
	}
	if evs := te.of(inst.ID); len(evs) != 1 {
		t.Fatalf("events %+v, want the one notice", evs)
	}

	// When the kernel's victim is the main process, the instance has
	// ended: one oom_killed event, the terminal one, and no notice.
	main := mustStart(t, a, api.Request{Name: "notify-main", Limits: api.Limits{MemoryBytes: &mem}, Command: sh("exec " + hog)})
	end := waitState(t, a, main.ID, api.StateOOMKilled)
	wantOOMKilled(t, end, mem)
	time.Sleep(2 * notifyGrace)
	if evs := te.of(main.ID); len(evs) != 1 || evs[0].State != api.StateOOMKilled {
		t.Fatalf("main process OOM-killed under notify: events %+v, want one terminal oom_killed", evs)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func syscallMkfifo(p string, mode uint32) error {
	if err := unix.Mkfifo(p, mode); err != nil {
		return err
	}
	return os.Chmod(p, os.FileMode(mode)|os.ModeNamedPipe)
}
