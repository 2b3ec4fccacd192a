package integration

import (
	"context"
	"encoding/json"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/api"
)

// TestRoutesFollowHealth: the agent binary registers a healthy instance's
// routes with gorouters (router.register in gorouter's field names) and
// withdraws them (router.unregister) when the instance stops listening.
func TestRoutesFollowHealth(t *testing.T) {
	ns := startNATS(t)
	h := newHost(t)
	h.cfg.NATS.Servers = []string{ns.ClientURL()}
	if err := os.WriteFile(h.cfgPath, []byte(yamlOf(h.cfg)+"report: {interval: 200ms}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	reg, _ := nc.SubscribeSync("router.register")
	unreg, _ := nc.SubscribeSync("router.unregister")
	h.start("")

	port := 0
	inst, err := h.client.Start(context.Background(), api.Request{
		Name: "shop", Index: 3, Port: &port, Routes: []string{"shop.example.com"},
		HealthCheck: &api.HealthCheck{Type: "tcp", IntervalMS: 100, TimeoutMS: 50},
		Command:     []string{tenantBin, "serve"},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := reg.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no router.register: %v", err)
	}
	var msg map[string]any
	if err := json.Unmarshal(m.Data, &msg); err != nil {
		t.Fatal(err)
	}
	uris, _ := msg["uris"].([]any)
	tags, _ := msg["tags"].(map[string]any)
	if msg["port"] != float64(*inst.Port) || len(uris) != 1 || uris[0] != "shop.example.com" || msg["app"] != "shop" ||
		msg["private_instance_id"] != inst.ID || msg["private_instance_index"] != "3" || tags["component"] != "ward" {
		t.Fatalf("router.register %s", m.Data)
	}
	// A router announcing itself gets every route again at once, tagged
	// with the instance's load by now.
	time.Sleep(500 * time.Millisecond)
	if err := nc.Publish("router.start", []byte(`{"id":"r1","hosts":["10.0.0.1"],"minimumRegisterIntervalInSeconds":1,"pruneThresholdInSeconds":120}`)); err != nil {
		t.Fatal(err)
	}
	m, err = reg.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no re-registration after router.start: %v", err)
	}
	var again struct {
		Tags map[string]string `json:"tags"`
	}
	if err := json.Unmarshal(m.Data, &again); err != nil || again.Tags["load"] == "" || again.Tags["weight"] == "" || again.Tags["component"] != "ward" {
		t.Fatalf("re-registration tags %s, want component, load and weight", m.Data)
	}
	if err := syscall.Kill(*inst.PID, syscall.SIGUSR1); err != nil { // stop listening
		t.Fatal(err)
	}
	u, err := unreg.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no router.unregister after the instance stopped listening: %v", err)
	}
	var um map[string]any
	json.Unmarshal(u.Data, &um)
	if um["port"] != msg["port"] || um["host"] != msg["host"] || um["private_instance_id"] != inst.ID {
		t.Fatalf("router.unregister %s does not match the registration %s", u.Data, m.Data)
	}
}
