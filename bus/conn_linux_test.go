package bus

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/hostward/ward/config"
)

// recordLog keeps every record logged through it.
type recordLog struct {
	mu   sync.Mutex
	recs []string // "LEVEL msg attrs"
}

func (l *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *recordLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *recordLog) WithGroup(string) slog.Handler            { return l }
func (l *recordLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	l.mu.Lock()
	l.recs = append(l.recs, b.String())
	l.mu.Unlock()
	return nil
}

func (l *recordLog) has(prefix string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}

func (l *recordLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.recs, "\n")
}

// states records what OnConnected was told, in order.
type states struct {
	mu  sync.Mutex
	ups []bool
}

func (s *states) set(up bool) { s.mu.Lock(); s.ups = append(s.ups, up); s.mu.Unlock() }

func (s *states) last() (up, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ups) == 0 {
		return false, false
	}
	return s.ups[len(s.ups)-1], true
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestConnectionStateHandlers: OnConnected follows the connection up,
// down and up again, OnReconnect is called on the way back, and the probe
// connection Connect closes on purpose logs no disconnection (it used to
// log "NATS disconnected err=<nil>" at every start), nor does Close.
func TestConnectionStateHandlers(t *testing.T) {
	ns := runServer(t, nil)
	port := ns.Addr().(*net.TCPAddr).Port
	log := &recordLog{}
	var st states
	reconnects := make(chan struct{}, 10)
	nc, err := Connect(ConnOptions{HostID: "h", NATS: config.NATS{Servers: []string{ns.ClientURL()}}, Log: slog.New(log),
		OnConnected: st.set,
		OnReconnect: func() { reconnects <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	waitUntil(t, "told connected", func() bool { up, ok := st.last(); return ok && up })
	// The probe's close would have come before the real connection's
	// connect: give it no chance to be late either.
	nc.Flush()
	time.Sleep(50 * time.Millisecond)
	if log.has("WARN NATS disconnected") {
		t.Fatalf("a disconnection logged at start:\n%s", log)
	}

	ns.Shutdown()
	waitUntil(t, "told disconnected", func() bool { up, ok := st.last(); return ok && !up })
	waitUntil(t, "the disconnection logged with its error", func() bool { return log.has("WARN NATS disconnected err=") })
	if log.has("WARN NATS disconnected err=<nil>") {
		t.Fatalf("a disconnection logged without its cause:\n%s", log)
	}

	runServer(t, &server.Options{Port: port})
	select {
	case <-reconnects:
	case <-time.After(10 * time.Second):
		t.Fatal("OnReconnect not called")
	}
	waitUntil(t, "told connected again", func() bool { up, ok := st.last(); return ok && up })

	nc.Close()
	waitUntil(t, "told closed", func() bool { up, ok := st.last(); return ok && !up })
	if strings.Count(log.String(), "WARN NATS disconnected") != 1 {
		t.Fatalf("want exactly the one real disconnection logged as a warning:\n%s", log)
	}
}
