package router

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// gorouterMessage mirrors the json names and Go types of gorouter's
// RegistryMessage (cloudfoundry/gorouter mbus/subscriber.go at a602bb6,
// identical in routing-release src/code.cloudfoundry.org/gorouter/mbus):
// decoding into it is what gorouter does with every router.* message.
type gorouterMessage struct {
	App                     string            `json:"app"`
	AvailabilityZone        string            `json:"availability_zone"`
	EndpointUpdatedAtNs     int64             `json:"endpoint_updated_at_ns"`
	Host                    string            `json:"host"`
	IsolationSegment        string            `json:"isolation_segment"`
	Port                    uint16            `json:"port"`
	PrivateInstanceID       string            `json:"private_instance_id"`
	PrivateInstanceIndex    string            `json:"private_instance_index"`
	Protocol                string            `json:"protocol"`
	RouteServiceURL         string            `json:"route_service_url"`
	ServerCertDomainSAN     string            `json:"server_cert_domain_san"`
	StaleThresholdInSeconds int               `json:"stale_threshold_in_seconds"`
	TLSPort                 uint16            `json:"tls_port"`
	Tags                    map[string]string `json:"tags"`
	Uris                    []string          `json:"uris"`
	Options                 struct {
		LoadBalancingAlgorithm string  `json:"loadbalancing"`
		HashHeaderName         string  `json:"hash_header"`
		HashBalance            float64 `json:"hash_balance"`
	} `json:"options"`
}

// gorouterFields are the top-level names gorouter reads.
var gorouterFields = []string{
	"app", "availability_zone", "endpoint_updated_at_ns", "host", "isolation_segment", "port",
	"private_instance_id", "private_instance_index", "protocol", "route_service_url",
	"server_cert_domain_san", "stale_threshold_in_seconds", "tls_port", "tags", "uris", "options",
}

func runServer(t testing.TB) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	return ns
}

func connect(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// watch subscribes to subject on its own connection, as a router would.
type watch struct {
	subject string
	ch      chan *nats.Msg
}

func watchSubject(t testing.TB, nc *nats.Conn, subject string) *watch {
	t.Helper()
	w := &watch{subject: subject, ch: make(chan *nats.Msg, 1024)}
	sub, err := nc.ChanSubscribe(subject, w.ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// next returns the next message, decoded as gorouter would.
func (w *watch) next(t testing.TB, within time.Duration) (gorouterMessage, []byte) {
	t.Helper()
	select {
	case m := <-w.ch:
		var g gorouterMessage
		if err := json.Unmarshal(m.Data, &g); err != nil {
			t.Fatalf("gorouter could not decode %s %s: %v", w.subject, m.Data, err)
		}
		return g, m.Data
	case <-time.After(within):
		t.Fatalf("no %s within %v", w.subject, within)
	}
	return gorouterMessage{}, nil
}

func (w *watch) none(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case m := <-w.ch:
		t.Fatalf("unexpected %s: %s", w.subject, m.Data)
	case <-time.After(d):
	}
}

func newRegistrar(t testing.TB, nc *nats.Conn, o Options) *Registrar {
	t.Helper()
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	r, err := New(nc, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func start(t testing.TB, r *Registrar) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func route(id string, port int, uris ...string) Route {
	return Route{ID: id, Name: "shop-web", Index: 2, Port: port, URIs: uris,
		Tags: map[string]string{"load": "12.5", "weight": "88"}}
}

func TestRegisterSpeaksGorouter(t *testing.T) {
	ns := runServer(t)
	regs := watchSubject(t, connect(t, ns), SubjectRegister)
	r := newRegistrar(t, connect(t, ns), Options{AvailabilityZone: "z1"})
	if err := r.Register(route("7f3c9a", 61003, "shop.example.com", "shop.example.com/api")); err != nil {
		t.Fatal(err)
	}
	g, raw := regs.next(t, 5*time.Second)

	// The JSON types gorouter needs, checked on the wire: a number where it
	// wants a string (or the reverse) makes it drop the message.
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	for k := range m {
		if !slices.Contains(gorouterFields, k) {
			t.Errorf("field %q is not one gorouter reads", k)
		}
	}
	wantString := map[string]string{
		"host": "127.0.0.1", "app": "shop-web", "private_instance_id": "7f3c9a",
		"private_instance_index": "2", "availability_zone": "z1",
	}
	for k, want := range wantString {
		if v, ok := m[k].(string); !ok || v != want {
			t.Errorf("%s = %#v, want the string %q", k, m[k], want)
		}
	}
	if v, ok := m["port"].(float64); !ok || v != 61003 {
		t.Errorf("port = %#v, want the number 61003", m["port"])
	}
	if v, ok := m["stale_threshold_in_seconds"].(float64); !ok || v != float64(int(v)) || v <= 0 {
		t.Errorf("stale_threshold_in_seconds = %#v, want a positive integer", m["stale_threshold_in_seconds"])
	}
	uris, ok := m["uris"].([]any)
	if !ok || len(uris) != 2 {
		t.Fatalf("uris = %#v, want a list of 2", m["uris"])
	}
	for _, u := range uris {
		if _, ok := u.(string); !ok {
			t.Errorf("uri %#v is not a string", u)
		}
	}
	tags, ok := m["tags"].(map[string]any)
	if !ok {
		t.Fatalf("tags = %#v, want an object", m["tags"])
	}
	for k, v := range tags {
		if _, ok := v.(string); !ok {
			t.Errorf("tags.%s = %#v is not a string", k, v)
		}
	}

	// And the values as gorouter decodes them.
	if g.Host != "127.0.0.1" || g.Port != 61003 || g.App != "shop-web" ||
		g.PrivateInstanceID != "7f3c9a" || g.PrivateInstanceIndex != "2" || g.AvailabilityZone != "z1" ||
		!slices.Equal(g.Uris, []string{"shop.example.com", "shop.example.com/api"}) {
		t.Errorf("decoded %+v", g)
	}
	if g.Tags["component"] != "ward" || g.Tags["load"] != "12.5" || g.Tags["weight"] != "88" || len(g.Tags) != 3 {
		t.Errorf("tags %v", g.Tags)
	}
	if g.StaleThresholdInSeconds != 120 {
		t.Errorf("stale threshold %d, want 120 (no router spoke: gorouter's default prune threshold)", g.StaleThresholdInSeconds)
	}
	if g.TLSPort != 0 || g.RouteServiceURL != "" {
		t.Errorf("tls_port/route_service_url set: %+v", g)
	}
}

// fakeRouter answers router.greet like gorouter does.
func fakeRouter(t testing.TB, nc *nats.Conn, id string, interval, prune int) *watch {
	t.Helper()
	w := &watch{subject: SubjectGreet, ch: make(chan *nats.Msg, 16)}
	sub, err := nc.Subscribe(SubjectGreet, func(m *nats.Msg) {
		w.ch <- m
		b, _ := json.Marshal(map[string]any{"id": id, "hosts": []string{"127.0.0.1"},
			"minimumRegisterIntervalInSeconds": interval, "pruneThresholdInSeconds": prune})
		_ = nc.Publish(m.Reply, b)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestGreetReplyAdoptsItsInterval(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	greets := fakeRouter(t, rc, "0-r1", 1, 120)
	regs := watchSubject(t, rc, SubjectRegister)
	r := newRegistrar(t, connect(t, ns), Options{})
	if err := r.Register(route("a", 61000, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	start(t, r)
	select {
	case <-greets.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no router.greet at Start")
	}
	// Register, the greet reply's immediate re-send, then one a second.
	var at []time.Time
	for range 5 {
		regs.next(t, 5*time.Second)
		at = append(at, time.Now())
	}
	if iv := r.Interval(); iv != time.Second {
		t.Fatalf("Interval = %v after the greet reply, want 1s", iv)
	}
	for i := 3; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap < 500*time.Millisecond || gap > 3*time.Second {
			t.Errorf("re-registration %d came %v after the previous one, want about 1s", i, gap)
		}
	}
}

func TestDefaultIntervalWithoutRouters(t *testing.T) {
	ns := runServer(t)
	regs := watchSubject(t, connect(t, ns), SubjectRegister)
	var logs lockedBuffer
	r := newRegistrar(t, connect(t, ns), Options{Interval: 200 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	start(t, r) // nobody answers the greet: the server says so
	if err := r.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	if err := r.Register(route("a", 61000, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		regs.next(t, 3*time.Second)
	}
	if iv := r.Interval(); iv != 200*time.Millisecond {
		t.Fatalf("Interval = %v, want the configured default", iv)
	}
	// The server's no-responders reply to the greet is not an announcement.
	if l := logs.String(); strings.Contains(l, "level=WARN") {
		t.Fatalf("warnings without any router: %s", l)
	}
	if d, err := New(connect(t, ns), Options{Host: "127.0.0.1"}); err != nil || d.Interval() != DefaultInterval {
		t.Fatalf("default interval %v, %v; want %v", d.Interval(), err, DefaultInterval)
	}
}

func TestRouterStartReregistersAtOnce(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	regs := watchSubject(t, rc, SubjectRegister)
	r := newRegistrar(t, connect(t, ns), Options{})
	start(t, r)
	want := []string{"a", "b", "c"}
	for i, id := range want {
		if err := r.Register(route(id, 61000+i, id+".example.com")); err != nil {
			t.Fatal(err)
		}
		regs.next(t, 5*time.Second)
	}

	publishStart := func(id string, interval, prune int) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"id": id, "hosts": []string{"10.0.0.9"},
			"minimumRegisterIntervalInSeconds": interval, "pruneThresholdInSeconds": prune})
		if err := rc.Publish(SubjectStart, b); err != nil {
			t.Fatal(err)
		}
	}
	collect := func(wantStale int) {
		t.Helper()
		var got []string
		for range want {
			// "At once": far sooner than the 20 s default interval.
			g, _ := regs.next(t, 3*time.Second)
			got = append(got, g.PrivateInstanceID)
			if g.StaleThresholdInSeconds != wantStale {
				t.Errorf("%s: stale threshold %d, want %d", g.PrivateInstanceID, g.StaleThresholdInSeconds, wantStale)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("re-registered %v, want %v", got, want)
		}
	}

	publishStart("0-r1", 7, 30)
	collect(30) // max(3 × 7 s, 30 s)
	if iv := r.Interval(); iv != 7*time.Second {
		t.Fatalf("Interval = %v, want 7s", iv)
	}
	// A second router asking for less wins the interval; the larger prune
	// threshold still holds, each router caps it at its own.
	publishStart("1-r2", 3, 10)
	collect(30)
	if iv := r.Interval(); iv != 3*time.Second {
		t.Fatalf("Interval = %v with two routers, want the smaller 3s", iv)
	}
	// The second router restarts under the same id asking for 12 s: what it
	// asked before is replaced, so the first router's 7 s is the smallest.
	publishStart("1-r2", 12, 0)
	collect(30) // max(3 × 7 s, 30 s)
	if iv := r.Interval(); iv != 7*time.Second {
		t.Fatalf("Interval = %v after a router re-announced, want 7s", iv)
	}
}

func TestRoutersRememberedAreBounded(t *testing.T) {
	r := &Registrar{routers: make(map[string]routerInfo), defaultInterval: DefaultInterval}
	r.adopt(startMessage{ID: "first", MinimumRegisterIntervalInSeconds: 2})
	for i := range maxRouters + 5 {
		r.adopt(startMessage{ID: fmt.Sprint("r", i), MinimumRegisterIntervalInSeconds: 5})
	}
	if n := len(r.routers); n != maxRouters {
		t.Fatalf("%d routers remembered, want %d", n, maxRouters)
	}
	if _, ok := r.routers["first"]; ok {
		t.Fatal("the oldest router was kept")
	}
	if iv := r.intervalLocked(); iv != 5*time.Second {
		t.Fatalf("interval %v, want 5s once the first router is forgotten", iv)
	}
	// A router that asks for no interval does not make us flood the bus.
	r.adopt(startMessage{ID: "zero", MinimumRegisterIntervalInSeconds: 0})
	r.adopt(startMessage{ID: "negative", MinimumRegisterIntervalInSeconds: -1})
	if iv := r.intervalLocked(); iv != 5*time.Second {
		t.Fatalf("interval %v: a router asking for <= 0 s must not count", iv)
	}
}

func TestUnregisterMatchesTheRegistration(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	regs := watchSubject(t, rc, SubjectRegister)
	unregs := watchSubject(t, rc, SubjectUnregister)
	r := newRegistrar(t, connect(t, ns), Options{Interval: 150 * time.Millisecond})
	start(t, r)
	if err := r.Register(route("a", 61005, "a.example.com", "b.example.com")); err != nil {
		t.Fatal(err)
	}
	reg, _ := regs.next(t, 5*time.Second)
	if err := r.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	un, _ := unregs.next(t, 5*time.Second)
	if un.Host != reg.Host || un.Port != reg.Port || !slices.Equal(un.Uris, reg.Uris) ||
		un.PrivateInstanceID != "a" {
		t.Fatalf("unregister %+v does not match register %+v", un, reg)
	}
	// No re-send brings it back: drain what was in flight, then silence.
	time.Sleep(50 * time.Millisecond)
	for len(regs.ch) > 0 {
		<-regs.ch
	}
	regs.none(t, 5*150*time.Millisecond)
	if err := r.Unregister("a"); err != nil {
		t.Fatalf("second Unregister = %v, want nil", err)
	}
	unregs.none(t, 200*time.Millisecond)
	if ids := r.IDs(); len(ids) != 0 {
		t.Fatalf("IDs after Unregister = %v", ids)
	}
}

func TestUpdate(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	regs := watchSubject(t, rc, SubjectRegister)
	unregs := watchSubject(t, rc, SubjectUnregister)
	r := newRegistrar(t, connect(t, ns), Options{Interval: 300 * time.Millisecond})

	if err := r.Update(route("a", 61000, "a.example.com")); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("Update of an unknown id = %v, want ErrNotRegistered", err)
	}
	regs.none(t, 100*time.Millisecond)

	rt := route("a", 61000, "a.example.com", "b.example.com")
	if err := r.Register(rt); err != nil {
		t.Fatal(err)
	}
	regs.next(t, 5*time.Second)

	// A load change waits for the next re-send, which carries it.
	rt.Tags = map[string]string{"load": "99.0", "weight": "1"}
	if err := r.Update(rt); err != nil {
		t.Fatal(err)
	}
	regs.none(t, 100*time.Millisecond)
	start(t, r)
	g, _ := regs.next(t, 3*time.Second)
	if g.Tags["load"] != "99.0" || g.Tags["weight"] != "1" || g.Tags["component"] != "ward" {
		t.Fatalf("re-sent tags %v", g.Tags)
	}

	// Dropping a uri withdraws just that uri, at once.
	rt.URIs = []string{"a.example.com"}
	if err := r.Update(rt); err != nil {
		t.Fatal(err)
	}
	un, _ := unregs.next(t, time.Second)
	if !slices.Equal(un.Uris, []string{"b.example.com"}) || un.Port != 61000 {
		t.Fatalf("unregister %+v, want only b.example.com on 61000", un)
	}
	g = nextFor(t, regs, func(g gorouterMessage) bool { return len(g.Uris) == 1 })
	if !slices.Equal(g.Uris, []string{"a.example.com"}) {
		t.Fatalf("register %+v", g)
	}

	// A new port withdraws the old address entirely.
	rt.Port = 61001
	if err := r.Update(rt); err != nil {
		t.Fatal(err)
	}
	un, _ = unregs.next(t, time.Second)
	if un.Port != 61000 || !slices.Equal(un.Uris, []string{"a.example.com"}) {
		t.Fatalf("unregister %+v, want a.example.com on 61000", un)
	}
	nextFor(t, regs, func(g gorouterMessage) bool { return g.Port == 61001 })

	// Withdrawn, an Update (a late load report) does not bring it back.
	if err := r.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	if err := r.Update(rt); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("Update after Unregister = %v, want ErrNotRegistered", err)
	}
}

// nextFor skips periodic re-sends until a message matching ok.
func nextFor(t *testing.T, w *watch, ok func(gorouterMessage) bool) gorouterMessage {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		g, _ := w.next(t, 3*time.Second)
		if ok(g) {
			return g
		}
	}
	t.Fatalf("no matching %s", w.subject)
	return gorouterMessage{}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	ns := runServer(t)
	regs := watchSubject(t, connect(t, ns), SubjectRegister)
	r := newRegistrar(t, connect(t, ns), Options{})
	good := route("a", 61000, "a.example.com")
	for _, tc := range []struct {
		name  string
		edit  func(*Route)
		field string
	}{
		{"no id", func(r *Route) { r.ID = "" }, "id:"},
		{"no name", func(r *Route) { r.Name = "" }, "name:"},
		{"negative index", func(r *Route) { r.Index = -1 }, "index:"},
		{"port 0", func(r *Route) { r.Port = 0 }, "port:"},
		{"port too big", func(r *Route) { r.Port = 70000 }, "port:"},
		{"no uris", func(r *Route) { r.URIs = nil }, "uris:"},
		{"empty uri", func(r *Route) { r.URIs = []string{"a.example.com", ""} }, "uris[1]:"},
		{"scheme", func(r *Route) { r.URIs = []string{"http://a.example.com"} }, "uris[0]:"},
		{"space", func(r *Route) { r.URIs = []string{"a b"} }, "uris[0]:"},
		{"host", func(r *Route) { r.Host = "not a host" }, "host:"},
		{"component", func(r *Route) { r.Tags = map[string]string{"component": "other"} }, "tags.component:"},
		{"empty tag", func(r *Route) { r.Tags = map[string]string{"": "x"} }, "tags:"},
		{"too big", func(r *Route) { r.URIs = []string{strings.Repeat("x", 2<<20)} }, "uris:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := good
			rt.Tags = map[string]string{"load": "1"}
			tc.edit(&rt)
			err := r.Register(rt)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Register = %v, want ErrInvalid naming %q", err, tc.field)
			}
		})
	}
	if ids := r.IDs(); len(ids) != 0 {
		t.Fatalf("refused routes were kept: %v", ids)
	}
	regs.none(t, 200*time.Millisecond)

	// The caller's values are copied, not shared.
	rt := good
	if err := r.Register(rt); err != nil {
		t.Fatal(err)
	}
	rt.URIs[0], rt.Tags["load"] = "changed.example.com", "0"
	g, _ := regs.next(t, 5*time.Second)
	if g.Uris[0] != "a.example.com" || g.Tags["load"] != "12.5" {
		t.Fatalf("registration changed with the caller's slices: %+v", g)
	}
	// A component tag of "ward" is fine.
	rt = route("b", 61001, "b.example.com")
	rt.Tags["component"] = "ward"
	if err := r.Register(rt); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	ns := runServer(t)
	nc := connect(t, ns)
	if _, err := New(nc, Options{Host: "a b"}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "host:") {
		t.Fatalf("New with a bad host = %v", err)
	}
	if _, err := New(nc, Options{Host: "127.0.0.1", Interval: -time.Second}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("New with a negative interval = %v", err)
	}
	if _, err := New(nil, Options{Host: "127.0.0.1"}); err == nil {
		t.Fatal("New with no connection succeeded")
	}
	for _, h := range []string{"10.0.0.5", "::1", "dea-01.example.com"} {
		if _, err := New(nc, Options{Host: h}); err != nil {
			t.Errorf("host %q: %v", h, err)
		}
	}
}

func TestDefaultHost(t *testing.T) {
	h, err := DefaultHost()
	if errors.Is(err, ErrNoHostAddress) {
		// A loopback-only machine: New must say so rather than invent one.
		if _, err := New(connect(t, runServer(t)), Options{}); !errors.Is(err, ErrNoHostAddress) {
			t.Fatalf("New without a host on a loopback-only machine = %v", err)
		}
		t.Skip("no non-loopback IPv4 address here")
	}
	if err != nil {
		t.Fatal(err)
	}
	ip := net.ParseIP(h)
	if ip == nil || ip.To4() == nil || ip.IsLoopback() {
		t.Fatalf("DefaultHost = %q, want a non-loopback IPv4 address", h)
	}
}

func TestCloseLeavesRoutesRegistered(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	regs := watchSubject(t, rc, SubjectRegister)
	unregs := watchSubject(t, rc, SubjectUnregister)
	r := newRegistrar(t, connect(t, ns), Options{Interval: 100 * time.Millisecond})
	start(t, r)
	if err := r.Register(route("a", 61000, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	regs.next(t, 5*time.Second)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	for len(regs.ch) > 0 {
		<-regs.ch
	}
	unregs.none(t, 300*time.Millisecond)
	regs.none(t, 300*time.Millisecond) // and no more re-sends
	if err := r.Register(route("b", 61001, "b.example.com")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Register after Close = %v", err)
	}
	if err := r.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestUnregisterAll(t *testing.T) {
	ns := runServer(t)
	unregs := watchSubject(t, connect(t, ns), SubjectUnregister)
	r := newRegistrar(t, connect(t, ns), Options{})
	for i := range 3 {
		if err := r.Register(route(fmt.Sprint("i", i), 61000+i, fmt.Sprintf("i%d.example.com", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.UnregisterAll(); err != nil {
		t.Fatal(err)
	}
	var ports []int
	for range 3 {
		g, _ := unregs.next(t, 5*time.Second)
		ports = append(ports, int(g.Port))
	}
	slices.Sort(ports)
	if !slices.Equal(ports, []int{61000, 61001, 61002}) || len(r.IDs()) != 0 {
		t.Fatalf("unregistered ports %v, left %v", ports, r.IDs())
	}
}

func TestReconnectedGreetsAndResends(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	greets := fakeRouter(t, rc, "0-r1", 30, 120)
	regs := watchSubject(t, rc, SubjectRegister)
	r := newRegistrar(t, connect(t, ns), Options{})
	start(t, r)
	<-greets.ch
	if err := r.Register(route("a", 61000, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the greet reply's re-send pass
	for len(regs.ch) > 0 {
		<-regs.ch
	}
	r.Reconnected()
	select {
	case <-greets.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no router.greet after Reconnected")
	}
	regs.next(t, 3*time.Second) // far sooner than the 30 s interval
}

func TestMalformedRouterStartIsIgnored(t *testing.T) {
	ns := runServer(t)
	rc := connect(t, ns)
	r := newRegistrar(t, connect(t, ns), Options{})
	start(t, r)
	for _, body := range [][]byte{[]byte("nonsense"), []byte(`{"minimumRegisterIntervalInSeconds":"5"}`)} {
		if err := rc.Publish(SubjectStart, body); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.Flush(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if iv := r.Interval(); iv != DefaultInterval {
		t.Fatalf("Interval = %v after malformed announcements", iv)
	}
}

// BenchmarkResendAll is one re-registration round of 1,000 routes: what a
// host pays every interval (5 s with gorouter's defaults).
func BenchmarkResendAll(b *testing.B) {
	ns := runServer(b)
	r := newRegistrar(b, connect(b, ns), Options{})
	for i := range 1000 {
		rt := route(fmt.Sprint("i", i), 61000+i, fmt.Sprintf("app%d.example.com", i))
		if err := r.Register(rt); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		r.resendAll()
	}
}

// lockedBuffer is a log destination safe to read while the logger writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
