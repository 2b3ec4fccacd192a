package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/outbox"
)

// TestNoEventLostToACrash: an agent killed between recording a change and
// storing the event that announces it — a start recorded running, a limit
// change recorded, an end recorded before its release — leaves the
// announcement to the next agent, which finds it named by the record and
// missing from the outbox; and a start killed before it was recorded
// running was never announced, so its rollback announces nothing: no
// consumer hears of an instance that never ran, or misses one that did.
func TestNoEventLostToACrash(t *testing.T) {
	h := newHost(t) // no bus: every event stays in the outbox to be read
	ctx := context.Background()

	// (Sections, not subtests: the host's helpers fail the test they were
	// made for.)
	{
		h.start("start:running")
		if _, err := h.client.Start(ctx, api.Request{ID: "rec", Name: "rec", Command: []string{"sleep", "1000"}}); err == nil {
			t.Fatal("start succeeded through its crash point")
		}
		h.waitDead()
		h.start("")
		if in := h.info("rec"); in.State != api.StateRunning {
			t.Fatalf("start:running: after the crash: %s, want running", in.State)
		}
		if kinds := outboxKinds(t, h, "rec"); len(kinds) != 1 || kinds[0] != api.EventStarted {
			t.Fatalf("start:running: events %v, want [started]", kinds)
		}
	}
	{
		h.kill()
		h.start("start:announced")
		if _, err := h.client.Start(ctx, api.Request{ID: "ann", Name: "ann", Command: []string{"sleep", "1000"}}); err == nil {
			t.Fatal("start succeeded through its crash point")
		}
		h.waitDead()
		h.start("")
		if in := h.info("ann"); in.State != api.StateRunning {
			t.Fatalf("start:announced: after the crash: %s, want running (it was recorded running)", in.State)
		}
		if kinds := outboxKinds(t, h, "ann"); len(kinds) != 1 || kinds[0] != api.EventStarted {
			t.Fatalf("start:announced: events %v, want [started], announced by the next agent", kinds)
		}
	}

	// A start dies after its spawn, before it is recorded running; the
	// next agent dies too, inside its rollback, after the record is gone.
	// Nothing was announced, so nothing is owed: a third agent finds no
	// record, and removes what is left as a leak.
	{
		h.start("start:spawned")
		if _, err := h.client.Start(ctx, api.Request{ID: "rb", Name: "rb", Command: []string{"sleep", "1000"}}); err == nil {
			t.Fatal("start succeeded through its crash point")
		}
		h.waitDead()
		h.startDying("rollback:removed")
		h.start("")
		for _, in := range h.list() {
			if in.ID == "rb" {
				t.Fatalf("rollback:removed: unrecorded start not rolled back: %+v", in)
			}
		}
		if _, err := os.Stat(filepath.Join(cgtest.Root, "pids", h.cfg.Cgroup.Parent, "rb-0-rb")); cgtest.Mode() == cgroup.V1 && !os.IsNotExist(err) {
			t.Fatalf("rollback:removed: the start's cgroup is still there: %v", err)
		}
		if kinds := outboxKinds(t, h, "rb"); len(kinds) != 0 {
			t.Fatalf("rollback:removed: events %v, want none: the start was never announced", kinds)
		}
	}

	// An instance ends on its own; its release is cut short. The record
	// already says crashed: the next agent finishes the release, and must
	// announce the end the dead one never did.
	{
		h.kill()
		h.start("release:cgroup")
		if _, err := h.client.Start(ctx, api.Request{ID: "end", Name: "end", Command: []string{"sh", "-c", "sleep 0.3; exit 3"}}); err != nil {
			t.Fatal(err)
		}
		h.waitDead()
		h.start("")
		if in := h.info("end"); in.State != api.StateCrashed {
			t.Fatalf("release:cgroup: after the crash: %s, want crashed", in.State)
		}
		if kinds := outboxKinds(t, h, "end"); len(kinds) != 2 || kinds[0] != api.EventStarted || kinds[1] != api.EventCrashed {
			t.Fatalf("release:cgroup: events %v, want [started crashed]", kinds)
		}
	}

	// A limit change recorded but not yet announced when the agent died:
	// the next agent must announce it.
	mib := func(n int64) *int64 { n <<= 20; return &n }
	{
		h.start("limit:recorded")
		if _, err := h.client.Start(ctx, api.Request{ID: "lim", Name: "lim", Command: []string{"sleep", "1000"},
			Limits: api.Limits{MemoryBytes: mib(96)}}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.client.Limit(ctx, api.LimitRequest{ID: "lim", Limits: api.Limits{MemoryBytes: mib(64)}}); err == nil {
			t.Fatal("limit succeeded through its crash point")
		}
		h.waitDead()
		h.start("")
		if in := h.info("lim"); *in.Limits.MemoryBytes != *mib(64) {
			t.Fatalf("limit:recorded: memory limit %d after the crash, want the recorded %d", *in.Limits.MemoryBytes, *mib(64))
		}
		evs := outboxEvents(t, h, "lim")
		if k := kindsOf(evs); len(k) != 2 || k[1] != api.EventLimitChanged || *evs[1].Limits.MemoryBytes != *mib(64) {
			t.Fatalf("limit:recorded: events %v, want [started limit_changed] announcing 64 MiB", k)
		}
	}
	// One recorded, its event never stored: the next agent announces the
	// limits on record, which the kernel has too — once.
	{
		h.start("limit:announced")
		if _, err := h.client.Limit(ctx, api.LimitRequest{ID: "lim", Limits: api.Limits{MemoryBytes: mib(48)}}); err == nil {
			t.Fatal("limit succeeded through its crash point")
		}
		h.waitDead()
		h.start("")
		in := h.info("lim")
		if *in.Limits.MemoryBytes != *mib(48) {
			t.Fatalf("limit:announced: memory limit %d after the crash, want the recorded %d", *in.Limits.MemoryBytes, *mib(48))
		}
		if got := kernelMemoryLimit(t, in); got != *mib(48) {
			t.Fatalf("limit:announced: the kernel's memory limit is %d after the crash, want the recorded %d", got, *mib(48))
		}
		evs := outboxEvents(t, h, "lim")
		k := kindsOf(evs)
		if len(k) != 3 || k[2] != api.EventLimitChanged || *evs[2].Limits.MemoryBytes != *mib(48) {
			t.Fatalf("limit:announced: events %v, want [started limit_changed limit_changed], the last announcing 48 MiB", k)
		}
		// Said once: a third agent has nothing more to announce.
		h.start("")
		if k := kindsOf(outboxEvents(t, h, "lim")); len(k) != 3 {
			t.Fatalf("limit:announced: events %v after another restart, want the same 3", k)
		}
	}
}

// kernelMemoryLimit reads in's memory limit from its cgroup.
func kernelMemoryLimit(t *testing.T, in api.Instance) int64 {
	t.Helper()
	p := filepath.Join(cgtest.Root, "memory", in.Cgroup, "memory.limit_in_bytes")
	if cgtest.Mode() == cgroup.V2 {
		p = filepath.Join(cgtest.Root, in.Cgroup, "memory.max")
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return n
}

// startDying starts the agent with a crash point its startup reaches, and
// waits for it to die there.
func (h *host) startDying(crashpoint string) {
	h.t.Helper()
	// One that never reaches it is killed when the wait is over.
	ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(30*time.Second))
	defer cancel()
	if err := h.command(ctx, crashpoint).Run(); err == nil || ctx.Err() != nil {
		h.t.Fatalf("agent survived its startup's crash point %s: %s", crashpoint, h.log)
	}
	h.agent = nil
}

func (h *host) info(id string) api.Instance {
	h.t.Helper()
	in, err := h.client.Info(context.Background(), api.InfoRequest{ID: id})
	if err != nil {
		h.t.Fatal(err)
	}
	return *in
}

// outboxKinds stops the agent and lists, in order, the kinds of the events
// about id waiting in its outbox.
func outboxKinds(t *testing.T, h *host, id string) []string {
	t.Helper()
	return kindsOf(outboxEvents(t, h, id))
}

// outboxEvents stops the agent and lists, in order, the events about id
// waiting in its outbox.
func outboxEvents(t *testing.T, h *host, id string) []api.Event {
	t.Helper()
	h.kill() // the outbox is read as a restarted agent would, with nobody writing
	ob, err := outbox.Open(filepath.Join(h.cfg.StateDir, "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	var evs []api.Event
	for _, it := range ob.Pending(ob.Len()) {
		var e api.Event
		if err := json.Unmarshal(it.Data, &e); err != nil {
			t.Fatal(err)
		}
		if e.ID == id {
			evs = append(evs, e)
		}
	}
	return evs
}

func kindsOf(evs []api.Event) []string {
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	return kinds
}
