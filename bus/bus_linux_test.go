package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/testagent"
)

// uid range of this package's tests
const testUIDMin = 26000

// wire connects a to the bus as the agent command does: service and
// publisher on one connection.
func wire(t testing.TB, a *agent.Agent, cfg *config.Config) *nats.Conn {
	t.Helper()
	// The handler uses only what exists before Connect: it tells the
	// publisher through a channel.
	reconnected := make(chan struct{}, 1)
	nc, err := Connect(ConnOptions{HostID: cfg.HostID, NATS: cfg.NATS, Log: quiet, OnReconnect: func() {
		select {
		case reconnected <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	pub := NewPublisher(nc, a.Outbox(), cfg.HostID, quiet)
	svc, err := NewService(nc, a, ServiceOptions{HostID: cfg.HostID, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shutdown(t, svc) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { pub.Run(ctx); done <- struct{}{} }()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			select {
			case <-ctx.Done():
				return
			case <-reconnected:
				pub.Reconnected()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return nc
}

// shutdown shuts svc down as the agent command does, failing t if any
// request had to be abandoned.
func shutdown(t testing.TB, svc *Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := svc.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func request(t testing.TB, nc *nats.Conn, subj string, body any) (*nats.Msg, error) {
	b, _ := json.Marshal(body)
	return nc.Request(subj, b, 5*time.Second)
}

func TestEndpointsAndErrors(t *testing.T) {
	ns := runServer(t, nil)
	cfg := testagent.Config(t, testUIDMin)
	cfg.NATS.Servers = []string{ns.ClientURL()}
	a := testagent.New(t, cfg)
	wire(t, a, cfg)
	client, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	p := "ward." + cfg.HostID + "."

	m, err := request(t, client, p+"start", api.Request{ID: "web-1", Name: "web", Command: []string{"sleep", "1000"}})
	if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
		t.Fatalf("start: %v %v %s", err, m.Header, m.Data)
	}
	var inst api.Instance
	if err := json.Unmarshal(m.Data, &inst); err != nil || inst.State != api.StateRunning {
		t.Fatalf("start reply %s", m.Data)
	}
	for _, c := range []struct {
		subj, body, code, field string
	}{
		{"start", `{"name":"x","command":["sleep"],"bogus":1}`, "invalid_argument", "bogus"},
		{"start", `{"name":"a/b","command":["sleep"]}`, "invalid_argument", "name"},
		{"start", `{"id":"web-1","name":"web","command":["sleep","999"]}`, "conflict", "id"},
		{"info", `{"id":"nope"}`, "not_found", "id"},
		{"stop", `{"id":"nope"}`, "not_found", "id"},
		{"limit", `{"id":"web-1","limits":{"pids":0}}`, "invalid_argument", "limits.pids"},
		{"list", `{"x":1}`, "invalid_argument", "x"},
	} {
		m, err := client.Request(p+c.subj, []byte(c.body), 5*time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", c.subj, c.body, err)
		}
		var eb api.ErrorBody
		json.Unmarshal(m.Data, &eb)
		if m.Header.Get("Nats-Service-Error-Code") != c.code || m.Header.Get("Nats-Service-Error") == "" ||
			eb.Error == nil || string(eb.Error.Code) != c.code || eb.Error.Field != c.field {
			t.Errorf("%s %s: headers %v body %s, want %s on %s", c.subj, c.body, m.Header, m.Data, c.code, c.field)
		}
	}
	m, _ = request(t, client, p+"list", struct{}{})
	var l api.List
	if json.Unmarshal(m.Data, &l); len(l.Instances) != 1 {
		t.Fatalf("list: %s", m.Data)
	}
	m, _ = request(t, client, p+"stop", api.StopRequest{ID: "web-1"})
	if json.Unmarshal(m.Data, &inst); inst.State != api.StateStopped {
		t.Fatalf("stop: %s", m.Data)
	}
	// Discovery: $SRV.PING.ward answers with our host in the metadata.
	m, err = client.Request("$SRV.INFO.ward", nil, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Metadata  map[string]string `json:"metadata"`
		Endpoints []struct {
			Subject string `json:"subject"`
		} `json:"endpoints"`
	}
	json.Unmarshal(m.Data, &info)
	if info.Metadata["host_id"] != cfg.HostID || len(info.Endpoints) != 5 {
		t.Fatalf("service info %s", m.Data)
	}
}

// slowAPI blocks every call until released: for the in-flight bound.
type slowAPI struct{ release chan struct{} }

func (s slowAPI) wait() { <-s.release }
func (s slowAPI) Start(context.Context, api.Request) (*api.Instance, error) {
	s.wait()
	return &api.Instance{}, nil
}
func (s slowAPI) Stop(context.Context, api.StopRequest) (*api.Instance, error) {
	s.wait()
	return &api.Instance{}, nil
}
func (s slowAPI) Limit(context.Context, api.LimitRequest) (*api.Instance, error) {
	s.wait()
	return &api.Instance{}, nil
}
func (s slowAPI) Info(context.Context, api.InfoRequest) (*api.Instance, error) {
	s.wait()
	return &api.Instance{}, nil
}
func (s slowAPI) List(context.Context, api.ListRequest) (*api.List, error) {
	s.wait()
	return &api.List{}, nil
}

func TestInFlightBound(t *testing.T) {
	ns := runServer(t, nil)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	api := slowAPI{release: make(chan struct{})}
	svc, err := NewService(nc, api, ServiceOptions{HostID: "h", MaxInFlight: 2, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	var replies []*nats.Msg
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := nc.Request("ward.h.info", []byte(`{"id":"x"}`), 5*time.Second)
			if err == nil {
				mu.Lock()
				replies = append(replies, m)
				mu.Unlock()
			}
		}()
	}
	// The third is refused at once while two hold the slots.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(replies)
		mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(api.release)
	wg.Wait()
	exhausted := 0
	for _, m := range replies {
		if m.Header.Get("Nats-Service-Error-Code") == "resource_exhausted" {
			exhausted++
		}
	}
	if len(replies) != 3 || exhausted != 1 {
		t.Fatalf("%d replies, %d resource_exhausted; want 3 and 1", len(replies), exhausted)
	}
}

func TestUnreachableBusDoesNotStopAgent(t *testing.T) {
	cfg := testagent.Config(t, testUIDMin)
	cfg.NATS.Servers = []string{"nats://127.0.0.1:1"} // nothing listens
	a := testagent.New(t, cfg)
	nc := wire(t, a, cfg)
	if nc.IsConnected() {
		t.Fatal("connected to nothing")
	}
	inst, err := a.Start(context.Background(), api.Request{Name: "offline", Command: []string{"sleep", "1000"}})
	if err != nil || inst.State != api.StateRunning {
		t.Fatalf("start without a bus: %v", err)
	}
	if n := a.Outbox().Len(); n != 1 {
		t.Fatalf("outbox holds %d events, want the started one", n)
	}
}

func TestWrongCredentialsFailAtStartup(t *testing.T) {
	ns := runServer(t, &server.Options{Authorization: "s3cret"})
	_, err := Connect(ConnOptions{HostID: "h", NATS: config.NATS{Servers: []string{ns.ClientURL()}, Token: "wrong"}, Log: quiet})
	if !errors.Is(err, ErrCredentials) {
		t.Fatalf("wrong token: %v", err)
	}
	nc, err := Connect(ConnOptions{HostID: "h", NATS: config.NATS{Servers: []string{ns.ClientURL()}, Token: "s3cret"}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

// bigAPI lists n instances, about 400 bytes each on the wire.
type bigAPI struct {
	slowAPI
	n int
}

func (b bigAPI) List(_ context.Context, req api.ListRequest) (*api.List, error) {
	after, err := api.ParseCursor(req.After)
	if err != nil {
		return nil, err
	}
	l := &api.List{}
	for i := 0; i < b.n; i++ {
		in := api.Instance{ID: fmt.Sprintf("i%04d", i), Name: "big", Index: i, State: api.StateRunning,
			Command: []string{"/bin/sleep", "100000"}, Cgroup: "/ward/big-" + strconv.Itoa(i), Dir: "/var/lib/ward/instances/i" + strconv.Itoa(i)}
		if after != nil && !after.Less(api.CursorOf(&in)) {
			continue
		}
		if req.Limit > 0 && len(l.Instances) == req.Limit {
			l.Next = api.CursorOf(&l.Instances[len(l.Instances)-1]).String()
			break
		}
		l.Instances = append(l.Instances, in)
	}
	return l, nil
}

// A reply larger than the server's max payload used to be dropped by the
// client library, the requester waiting out its timeout (a list of 2,000
// instances against the default 1 MB); it is refused at once instead, and
// the list comes whole in pages.
func TestOversizedReplyRefused(t *testing.T) {
	ns := runServer(t, &server.Options{MaxPayload: 16 << 10})
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	svc, err := NewService(nc, bigAPI{n: 200}, ServiceOptions{HostID: "h", Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown(t, svc)
	m, err := nc.Request("ward.h.list", []byte(`{}`), 5*time.Second)
	if err != nil {
		t.Fatalf("oversized list: %v", err)
	}
	if code := m.Header.Get("Nats-Service-Error-Code"); code != string(api.CodeResourceExhausted) || !strings.Contains(m.Header.Get("Nats-Service-Error"), "limit and after") {
		t.Fatalf("oversized list: code %q, %q", code, m.Header.Get("Nats-Service-Error"))
	}
	seen := map[string]bool{}
	body := `{"limit":25}`
	for {
		m, err := nc.Request("ward.h.list", []byte(body), 5*time.Second)
		if err != nil || m.Header.Get("Nats-Service-Error-Code") != "" {
			t.Fatalf("list %s: %v %s", body, err, m.Header.Get("Nats-Service-Error"))
		}
		var l api.List
		if err := json.Unmarshal(m.Data, &l); err != nil {
			t.Fatal(err)
		}
		for _, in := range l.Instances {
			if seen[in.ID] {
				t.Fatalf("%s listed twice", in.ID)
			}
			seen[in.ID] = true
		}
		if l.Next == "" {
			break
		}
		body = fmt.Sprintf(`{"limit":25,"after":%q}`, l.Next)
	}
	if len(seen) != 200 {
		t.Fatalf("pages listed %d of 200", len(seen))
	}
}
