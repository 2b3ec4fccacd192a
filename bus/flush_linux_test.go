package bus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/outbox"
)

// TestPublisherFlushesAtShutdown: events still in the outbox when Run's
// context ends are published and confirmed before Run returns — here
// JetStream acks, one per event, so the context ends with most unsent.
func TestPublisherFlushesAtShutdown(t *testing.T) {
	nc, stream := eventStream(t)
	ctx := context.Background()
	ob, err := outbox.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const n = 600
	for i := 0; i < n; i++ {
		if _, err := ob.Append(func(seq uint64) (string, []byte, error) {
			return "ward.h.events.started", fmt.Appendf(nil, `{"seq":%d}`, seq), nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	pub := NewPublisher(nc, ob, "h", quiet)
	go func() { pub.Run(runCtx); close(done) }()
	// Cancel as soon as the first ack came back.
	for ob.Len() == n {
		time.Sleep(100 * time.Microsecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(FlushTimeout + 2*time.Second):
		t.Fatalf("Run still flushing %v after its context ended", FlushTimeout+2*time.Second)
	}
	if left := ob.Len(); left != 0 {
		t.Fatalf("Run returned with %d of %d events unconfirmed", left, n)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stream holds %d events, want %d", info.State.Msgs, n)
	}
}

// TestPublisherFlushSkipsADownBus: with the connection down, Run returns
// at once when its context ends; the events wait in the outbox.
func TestPublisherFlushSkipsADownBus(t *testing.T) {
	ns := runServer(t, nil)
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ob, err := outbox.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	for nc.IsConnected() {
		time.Sleep(time.Millisecond)
	}
	ob.Append(func(seq uint64) (string, []byte, error) { return "ward.h.events.started", []byte(`{}`), nil })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	t0 := time.Now()
	NewPublisher(nc, ob, "h", quiet).Run(ctx)
	if took := time.Since(t0); took > time.Second {
		t.Fatalf("Run took %v to give up on a down bus", took)
	}
	if ob.Len() != 1 {
		t.Fatalf("outbox holds %d events, want 1", ob.Len())
	}
}
