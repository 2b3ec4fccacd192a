package integration

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/reporter"
)

// TestLoadPublished: the running agent publishes ward.<host>.load every
// report.interval with each running instance in it, and info shows the
// same sample's usage.
func TestLoadPublished(t *testing.T) {
	ns := startNATS(t)
	h := newHost(t)
	h.cfg.NATS.Servers = []string{ns.ClientURL()}
	yaml := yamlOf(h.cfg) + "report: {interval: 200ms}\n"
	if err := os.WriteFile(h.cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs, err := nc.SubscribeSync(reporter.Subject(h.cfg.HostID))
	if err != nil {
		t.Fatal(err)
	}
	h.start("")
	mem := int64(64 << 20)
	inst, err := h.client.Start(context.Background(), api.Request{Name: "loaded", Limits: api.Limits{MemoryBytes: &mem}, Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := msgs.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("no load message naming %s: %v", inst.ID, err)
		}
		var lm struct {
			Host      map[string]any   `json:"host"`
			Instances []map[string]any `json:"instances"`
		}
		if err := json.Unmarshal(m.Data, &lm); err != nil {
			t.Fatalf("load message %q: %v", m.Data, err)
		}
		var mine map[string]any
		for _, i := range lm.Instances {
			if i["id"] == inst.ID {
				mine = i
			}
		}
		if mine == nil {
			continue
		}
		for _, k := range []string{"cpu_pct", "mem_pct", "load"} {
			if _, ok := lm.Host[k].(float64); !ok {
				t.Errorf("host.%s = %v, want a number", k, lm.Host[k])
			}
		}
		if mine["name"] != "loaded" || mine["mem_limit_bytes"] != float64(mem) || mine["weight"] == nil || mine["load"] == nil {
			t.Fatalf("instance in the load message: %v", mine)
		}
		break
	}
	out, _, code := h.run("info", inst.ID, "--json")
	var got api.Instance
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.Usage.MemoryBytes == nil || got.Usage.CPUPct == nil || got.Usage.Pids == nil || *got.Usage.Pids != 1 {
		t.Fatalf("ward info usage: %s", strings.TrimSpace(out))
	}
}
