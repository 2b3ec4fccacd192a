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
	"github.com/hostward/ward/outbox"
)

// TestOOMWhileAgentDown lets an instance run out of memory while the agent
// is dead: the next agent must report it as oom_killed, from the group's
// OOM counter, not as a plain exit.
func TestOOMWhileAgentDown(t *testing.T) {
	h := newHost(t)
	h.start("")
	mem := int64(32 << 20)
	inst, err := h.client.Start(context.Background(), api.Request{
		Name: "hog", Limits: api.Limits{MemoryBytes: &mem},
		// tail buffers its input looking for a newline: /dev/zero has none.
		Command: []string{"sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; echo about to hog >&2; exec tail /dev/zero"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.kill()
	if err := os.WriteFile(filepath.Join(inst.Dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Nobody reaps it now (the agent was its parent): wait until it is a
	// zombie or gone.
	waitFor(t, "the hog to be OOM-killed", func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(*inst.PID) + "/stat")
		if err != nil {
			return true
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		return len(f) > 0 && f[0] == "Z"
	})
	h.start("")
	var got api.Instance
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, in := range h.list() {
			if in.ID == inst.ID {
				got = in
			}
		}
		if got.State.Terminal() || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got.State != api.StateOOMKilled || !strings.HasPrefix(got.Reason, "out of memory: 33554432 byte limit") || got.OOMKills < 1 {
		t.Fatalf("after restart: state %s, reason %q, oom_kills %d; want oom_killed", got.State, got.Reason, got.OOMKills)
	}
	if got.StderrTail != "about to hog" {
		t.Errorf("stderr tail %q, want the instance's last stderr line", got.StderrTail)
	}
	if got.MemoryPeakBytes == nil || *got.MemoryPeakBytes < uint64(mem)*9/10 {
		t.Errorf("memory peak %v, want about the 32 MiB limit", got.MemoryPeakBytes)
	}
}

// TestOOMNoticeWhileAgentDown: under oom.policy notify, a child's OOM kill
// while the agent is dead is reported once by the next agent — an
// oom_killed event with state running — and never again after that.
func TestOOMNoticeWhileAgentDown(t *testing.T) {
	h := newHost(t)
	if err := os.WriteFile(h.cfgPath, []byte(yamlOf(h.cfg)+"oom: {policy: notify}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start("")
	mem := int64(32 << 20)
	inst, err := h.client.Start(context.Background(), api.Request{
		Name: "notify", Limits: api.Limits{MemoryBytes: &mem},
		Command: []string{"sh", "-c", "while [ ! -e go ]; do sleep 0.02; done; tail /dev/zero; exec sleep 1000"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.kill()
	if err := os.WriteFile(filepath.Join(inst.Dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	control := filepath.Join("/sys/fs/cgroup/memory", inst.Cgroup, "memory.oom_control")
	waitFor(t, "the child's OOM kill", func() bool {
		b, _ := os.ReadFile(control)
		return strings.Contains(string(b), "oom_kill 1")
	})
	notices := func() []api.Event {
		t.Helper()
		ob, err := outbox.Open(filepath.Join(h.cfg.StateDir, "outbox"))
		if err != nil {
			t.Fatal(err)
		}
		var evs []api.Event
		for _, it := range ob.Pending(1 << 20) {
			var e api.Event
			if json.Unmarshal(it.Data, &e) == nil && e.ID == inst.ID && e.Kind == api.EventOOMKilled {
				evs = append(evs, e)
			}
		}
		return evs
	}
	for round := 1; round <= 2; round++ {
		h.start("")
		var got api.Instance
		for _, in := range h.list() {
			if in.ID == inst.ID {
				got = in
			}
		}
		if got.State != api.StateRunning || got.PID == nil || *got.PID != *inst.PID || got.OOMKills != 1 {
			t.Fatalf("restart %d: state %s pid %v oom_kills %d; want running, pid %d, 1 kill", round, got.State, got.PID, got.OOMKills, *inst.PID)
		}
		h.kill()
		evs := notices()
		if len(evs) != 1 || evs[0].State != api.StateRunning || evs[0].OOMKills != 1 || !strings.Contains(evs[0].Reason, "while the agent was down") {
			t.Fatalf("restart %d: oom_killed events %+v, want the one notice", round, evs)
		}
	}
}
