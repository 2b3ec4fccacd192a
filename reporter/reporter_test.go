package reporter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func runServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port = "127.0.0.1", -1
	opts.NoLog, opts.NoSigs = true, true
	ns, err := server.NewServer(opts)
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

func connect(t *testing.T, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestReporterSplitsOverNATS publishes a sample of 40 instances through a
// real server whose max_payload is 2 KiB: the sample must arrive as several
// parts, each within the limit and with the host block, together holding
// every instance exactly once.
func TestReporterSplitsOverNATS(t *testing.T) {
	const maxPayload = 2048
	ns := runServer(t, &server.Options{MaxPayload: maxPayload})
	pubConn, subConn := connect(t, ns), connect(t, ns)
	if got := pubConn.MaxPayload(); got != maxPayload {
		t.Fatalf("server max payload %d, want %d", got, maxPayload)
	}
	msgs := make(chan *nats.Msg, 1000)
	if _, err := subConn.ChanSubscribe(Subject("h1"), msgs); err != nil {
		t.Fatal(err)
	}
	subConn.Flush()

	f := newFakeFS(t, "a")
	s, err := NewSampler(SamplerOptions{Mode: 2, Weights: defaultWeights, Proc: f.dir("proc")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var list []Instance
	for i := range 40 {
		list = append(list, Instance{ID: fmt.Sprintf("i%02d", i), Name: "shop-web", Index: i, Dirs: []string{f.dir("a")}, MemoryLimit: 256 << 20})
	}
	r, err := New(Options{HostID: "h1", Interval: 50 * time.Millisecond, Sampler: s,
		Source: SourceFunc(func() []Instance { return list }), Publisher: pubConn, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	bySeq := map[uint64]map[int]LoadMessage{}
	deadline := time.After(10 * time.Second)
	for {
		var m *nats.Msg
		select {
		case m = <-msgs:
		case <-deadline:
			t.Fatalf("no complete sample within 10s: %d seqs seen", len(bySeq))
		}
		if len(m.Data) > maxPayload {
			t.Fatalf("message of %d bytes above max payload", len(m.Data))
		}
		var lm LoadMessage
		if err := json.Unmarshal(m.Data, &lm); err != nil {
			t.Fatal(err)
		}
		if lm.Host.Cores != 2 || lm.Host.MemTotalBytes == 0 {
			t.Fatalf("part %d/%d lacks the host block: %+v", lm.Part, lm.Parts, lm.Host)
		}
		if bySeq[lm.Seq] == nil {
			bySeq[lm.Seq] = map[int]LoadMessage{}
		}
		if _, dup := bySeq[lm.Seq][lm.Part]; dup {
			t.Fatalf("seq %d part %d received twice", lm.Seq, lm.Part)
		}
		bySeq[lm.Seq][lm.Part] = lm
		if len(bySeq[lm.Seq]) < lm.Parts {
			continue
		}
		// A complete sample.
		if lm.Parts < 2 {
			t.Fatalf("40 instances in %d part under a 2 KiB limit", lm.Parts)
		}
		seen := map[string]bool{}
		for p := 1; p <= lm.Parts; p++ {
			part, ok := bySeq[lm.Seq][p]
			if !ok || part.Parts != lm.Parts || !part.Time.Equal(lm.Time) {
				t.Fatalf("seq %d: part %d missing or inconsistent", lm.Seq, p)
			}
			for _, in := range part.Instances {
				if seen[in.ID] {
					t.Fatalf("instance %s in two parts", in.ID)
				}
				seen[in.ID] = true
				if in.Name != "shop-web" || in.MemLimitBytes != 256<<20 || in.Weight < 1 {
					t.Fatalf("instance %+v", in)
				}
			}
		}
		if len(seen) != 40 {
			t.Fatalf("seq %d holds %d instances, want 40", lm.Seq, len(seen))
		}
		t.Logf("seq %d: 40 instances in %d parts", lm.Seq, lm.Parts)
		break
	}
	if in, ok := r.Lookup("i07"); !ok || in.Index != 7 {
		t.Errorf("Lookup(i07) = %+v, %v", in, ok)
	}
}

type recorder struct {
	mu        sync.Mutex
	connected bool
	n         int
}

func (p *recorder) Publish(string, []byte) error { p.mu.Lock(); p.n++; p.mu.Unlock(); return nil }
func (p *recorder) MaxPayload() int64            { return 0 }
func (p *recorder) IsConnected() bool            { p.mu.Lock(); defer p.mu.Unlock(); return p.connected }
func (p *recorder) count() int                   { p.mu.Lock(); defer p.mu.Unlock(); return p.n }

// TestReporterDropsWhileDisconnected: a load sample is not queued for a
// connection that is down, and sampling (Latest) goes on.
func TestReporterDropsWhileDisconnected(t *testing.T) {
	f := newFakeFS(t, "a")
	s, err := NewSampler(SamplerOptions{Mode: 2, Weights: defaultWeights, Proc: f.dir("proc")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pub := &recorder{}
	r, err := New(Options{HostID: "h1", Interval: 10 * time.Millisecond, Sampler: s, Publisher: pub, Log: quiet,
		Source: SourceFunc(func() []Instance { return []Instance{{ID: "a", Dirs: []string{f.dir("a")}}} })})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	first := r.Latest()
	for deadline := time.Now().Add(5 * time.Second); r.Latest() == first || r.Latest() == nil; {
		if time.Now().After(deadline) {
			t.Fatal("no samples")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if pub.count() != 0 {
		t.Fatalf("%d messages published while disconnected", pub.count())
	}
	pub.mu.Lock()
	pub.connected = true
	pub.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); pub.count() == 0; {
		if time.Now().After(deadline) {
			t.Fatal("nothing published once connected (max payload unknown: the default applies)")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	f := newFakeFS(t)
	s, err := NewSampler(SamplerOptions{Mode: 2, Weights: defaultWeights, Proc: f.dir("proc")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	src := SourceFunc(func() []Instance { return nil })
	good := Options{HostID: "h1", Interval: time.Second, Sampler: s, Source: src}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
	for field, mod := range map[string]func(*Options){
		"host id":  func(o *Options) { o.HostID = "" },
		"host id ": func(o *Options) { o.HostID = "a.b" },
		"interval": func(o *Options) { o.Interval = 0 },
		"sampler":  func(o *Options) { o.Sampler = nil },
		"source":   func(o *Options) { o.Source = nil },
	} {
		o := good
		mod(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), strings.TrimSpace(field)) {
			t.Errorf("%s: err = %v", field, err)
		}
	}
}
