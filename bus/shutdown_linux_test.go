package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/apitest"
)

// inbox sends a stop request for id with its own reply subscription, which
// sees every answer, not just the first.
func inbox(t *testing.T, nc *nats.Conn, subj, id string) *nats.Subscription {
	t.Helper()
	reply := nats.NewInbox()
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.PublishRequest(subj, reply, fmt.Appendf(nil, `{"id":%q}`, id)); err != nil {
		t.Fatal(err)
	}
	return sub
}

func code(m *nats.Msg) string { return m.Header.Get(micro.ErrorCodeHeader) }

// TestShutdownWaitsForRequestsInFlight: Shutdown stops taking requests at
// once, and returns only when every request in flight has been answered
// with its result.
func TestShutdownWaitsForRequestsInFlight(t *testing.T) {
	ns := runServer(t, nil)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	g := apitest.NewGate()
	svc, err := NewService(nc, g, ServiceOptions{HostID: "h", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	subs := make([]*nats.Subscription, n)
	for i := range subs {
		subs[i] = inbox(t, client, "ward.h.stop", fmt.Sprint("s", i))
	}
	g.WaitEntered(t, n)

	shut := make(chan error, 1)
	go func() { shut <- svc.Shutdown(context.Background()) }()
	// A request from now on is not taken: refused unavailable if it
	// still reaches the service, else nobody answers it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := client.Request("ward.h.info", []byte(`{"id":"late"}`), time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			break
		}
		if err != nil || code(m) != string(api.CodeUnavailable) {
			t.Fatalf("request during shutdown: %v %v %s; want unavailable or no responders", err, m.Header, m.Data)
		}
		if time.Now().After(deadline) {
			t.Fatal("the service still takes requests 5 s into its shutdown")
		}
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) with %d requests in flight", err, n)
	case <-time.After(100 * time.Millisecond):
	}
	close(g.Release)
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	for i, sub := range subs {
		m, err := sub.NextMsg(5 * time.Second)
		if err != nil || code(m) != "" || string(m.Data) == "" {
			t.Fatalf("request %d: %v %v %s; want its result", i, err, m.Header, m.Data)
		}
	}
	if c := g.Cancelled(); c != 0 {
		t.Errorf("%d calls cancelled by a shutdown that waited for them", c)
	}
}

// TestShutdownAnswersUnavailableAtDeadline: requests still running when
// Shutdown's context ends are answered unavailable by then, exactly once
// (the late result is not sent too), and their calls are cancelled.
func TestShutdownAnswersUnavailableAtDeadline(t *testing.T) {
	ns := runServer(t, nil)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	g := apitest.NewGate()
	defer close(g.Release)
	svc, err := NewService(nc, g, ServiceOptions{HostID: "h", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	subs := make([]*nats.Subscription, n)
	for i := range subs {
		subs[i] = inbox(t, nc, "ward.h.stop", fmt.Sprint("s", i))
	}
	g.WaitEntered(t, n)

	const drain = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	t0 := time.Now()
	err = svc.Shutdown(ctx)
	if !errors.Is(err, ErrAbandoned) {
		t.Fatalf("Shutdown = %v, want ErrAbandoned", err)
	}
	if took := time.Since(t0); took > drain+2*time.Second {
		t.Fatalf("Shutdown took %v past a %v deadline", took, drain)
	}
	for i, sub := range subs {
		m, err := sub.NextMsg(time.Second)
		if err != nil || code(m) != string(api.CodeUnavailable) {
			t.Fatalf("request %d: %v %v %s; want unavailable", i, err, m.Header, m.Data)
		}
	}
	// The calls were cancelled and returned their late results.
	if err := svc.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := g.Cancelled(); c != n {
		t.Fatalf("%d of %d abandoned calls saw their context end", c, n)
	}
	nc.Flush()
	for i, sub := range subs {
		if m, err := sub.NextMsg(200 * time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
			t.Fatalf("request %d answered twice: %v %s", i, err, m.Data)
		}
	}
}

// TestShutdownThenCloseAnswersEveryRequest: requests on their way while
// Shutdown begins each get one answer — a result if taken before,
// unavailable if the drained subscription delivers it after — or, if they
// reach the server after the unsubscription, no responders; none is left
// to time out once Close has drained the connection.
func TestShutdownThenCloseAnswersEveryRequest(t *testing.T) {
	ns := runServer(t, nil)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	g := apitest.NewGate()
	close(g.Release)
	svc, err := NewService(nc, g, ServiceOptions{HostID: "h", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make(chan string, 300)
	for i := 0; i < 300; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := client.Request("ward.h.info", fmt.Appendf(nil, `{"id":"i%d"}`, i), 5*time.Second)
			switch {
			case errors.Is(err, nats.ErrNoResponders):
				results <- "no responders"
			case err != nil:
				results <- err.Error()
			case code(m) != "":
				results <- code(m)
			default:
				results <- "result"
			}
		}()
	}
	time.Sleep(time.Millisecond) // some on their way, some not sent yet
	if err := svc.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := Close(nc, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(results)
	seen := map[string]int{}
	for r := range results {
		seen[r]++
		switch r {
		// resource_exhausted: more in flight than the service takes at
		// once, refused at once, which a loaded machine reaches.
		case "result", string(api.CodeUnavailable), string(api.CodeResourceExhausted), "no responders":
		default:
			t.Errorf("a request during shutdown got %q", r)
		}
	}
	t.Logf("answers: %v", seen)
}
