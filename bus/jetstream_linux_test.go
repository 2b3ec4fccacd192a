package bus

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/testagent"
)

// TestEventsToJetStream: with a stream capturing ward.*.events.>, events
// are confirmed by JetStream acks and land in the stream once each, in
// order, deduplicated by message id.
func TestEventsToJetStream(t *testing.T) {
	nc, stream := eventStream(t)
	ctx := context.Background()

	cfg := testagent.Config(t, testUIDMin+400)
	cfg.NATS.Servers = []string{nc.ConnectedUrl()}
	a := testagent.New(t, cfg)
	wire(t, a, cfg)
	inst, err := a.Start(ctx, api.Request{Name: "js", Command: []string{"sleep", "1000"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Stop(ctx, api.StopRequest{ID: inst.ID}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 2 && a.Outbox().Len() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream holds %d events, outbox %d; want 2 and 0", info.State.Msgs, a.Outbox().Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for seq, kind := range map[uint64]string{1: "started", 2: "stopped"} {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		var e api.Event
		json.Unmarshal(m.Data, &e)
		if e.Seq != seq || e.Kind != kind || m.Header.Get("Nats-Msg-Id") == "" {
			t.Errorf("stream message %d: %+v (msg id %q)", seq, e, m.Header.Get("Nats-Msg-Id"))
		}
	}
}
