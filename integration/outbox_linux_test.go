package integration

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/api"
)

// TestOutboxSurvivesSIGKILL: events produced while the bus is down wait in
// the outbox; the agent is SIGKILLed with them there; the restarted agent
// delivers every one, in order, once a server is up.
func TestOutboxSurvivesSIGKILL(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // nothing listens there yet

	h := newHost(t)
	h.cfg.NATS.Servers = []string{"nats://127.0.0.1:" + strconv.Itoa(port)}
	if err := os.WriteFile(h.cfgPath, []byte(yamlOf(h.cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.start("")
	ctx := context.Background()
	var ids []string
	for i := 0; i < 5; i++ {
		in, err := h.client.Start(ctx, api.Request{Name: "offline", Index: i, Command: []string{"sleep", "1000"}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, in.ID)
	}
	if _, err := h.client.Stop(ctx, api.StopRequest{ID: ids[0]}); err != nil {
		t.Fatal(err)
	}
	h.kill()
	if n := countOutbox(t, h); n != 6 {
		t.Fatalf("outbox holds %d events after the kill, want 6", n)
	}

	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	sub, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var mu sync.Mutex
	var seqs []uint64
	sub.Subscribe("ward."+h.cfg.HostID+".events.>", func(m *nats.Msg) {
		var e api.Event
		json.Unmarshal(m.Data, &e)
		mu.Lock()
		seqs = append(seqs, e.Seq)
		mu.Unlock()
	})
	sub.Flush()

	h.start("")
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := append([]uint64(nil), seqs...)
		mu.Unlock()
		if len(got) >= 6 {
			for i, s := range got[:6] {
				if s != uint64(i+1) {
					t.Fatalf("delivered out of order: %v", got)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %v of 1..6", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitFor(t, "outbox drained", func() bool { return countOutbox(t, h) == 0 })
	for _, id := range ids[1:] {
		if _, err := h.client.Stop(ctx, api.StopRequest{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
}

func countOutbox(t *testing.T, h *host) int {
	ents, err := os.ReadDir(h.cfg.StateDir + "/outbox")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if len(e.Name()) == 20 {
			n++
		}
	}
	return n
}
