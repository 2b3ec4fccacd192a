package localapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/apitest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// noEvents is an event source that never has one.
type noEvents struct{}

func (noEvents) Subscribe() (<-chan api.Event, func()) { return make(chan api.Event), func() {} }

// serving is a Server on a fresh socket, and a client of it.
type serving struct {
	srv    *Server
	socket string
	client *Client
	served chan error
}

func serve(t *testing.T, svc api.API) *serving {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "ward.sock")
	l, err := Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	s := &serving{srv: NewServer(svc, noEvents{}, quiet), socket: socket, client: NewClient(socket), served: make(chan error, 1)}
	go func() { s.served <- s.srv.Serve(l) }()
	t.Cleanup(func() {
		s.srv.Shutdown(context.Background())
		if err := <-s.served; err != nil {
			t.Errorf("Serve = %v", err)
		}
		s.client.http.CloseIdleConnections()
	})
	return s
}

// stops sends n stops at once and returns where their answers go.
func (s *serving) stops(n int) <-chan error {
	out := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			inst, err := s.client.Stop(context.Background(), api.StopRequest{ID: fmt.Sprint("s", i)})
			if err == nil && inst.ID != fmt.Sprint("s", i) {
				err = fmt.Errorf("stop s%d answered for %q", i, inst.ID)
			}
			out <- err
		}()
	}
	return out
}

// TestShutdownWaitsForRequestsInFlight: Shutdown closes the socket at
// once and returns when every request in flight has its result.
func TestShutdownWaitsForRequestsInFlight(t *testing.T) {
	g := apitest.NewGate()
	s := serve(t, g)
	const n = 5
	answers := s.stops(n)
	g.WaitEntered(t, n)
	shut := make(chan error, 1)
	go func() { shut <- s.srv.Shutdown(context.Background()) }()
	waitFor(t, "the socket removed", func() bool {
		_, err := os.Lstat(s.socket)
		return errors.Is(err, os.ErrNotExist)
	})
	if _, err := s.client.List(context.Background()); err == nil {
		t.Fatal("a new request was taken during shutdown")
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
	for i := 0; i < n; i++ {
		if err := <-answers; err != nil {
			t.Errorf("request in flight: %v", err)
		}
	}
	if c := g.Cancelled(); c != 0 {
		t.Errorf("%d calls cancelled by a shutdown that waited for them", c)
	}
}

// TestShutdownAnswersUnavailableAtDeadline: requests still running when
// Shutdown's context ends are answered unavailable (the late result is
// not), and the context of their calls ends.
func TestShutdownAnswersUnavailableAtDeadline(t *testing.T) {
	g := apitest.NewGate()
	defer close(g.Release)
	s := serve(t, g)
	const n = 4
	answers := s.stops(n)
	g.WaitEntered(t, n)
	const drain = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	t0 := time.Now()
	if err := s.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if took := time.Since(t0); took > drain+answerGrace+time.Second {
		t.Fatalf("Shutdown took %v past a %v deadline", took, drain)
	}
	for i := 0; i < n; i++ {
		err := <-answers
		var e *api.Error
		if !errors.As(err, &e) || e.Code != api.CodeUnavailable {
			t.Errorf("request in flight at the deadline: %v, want unavailable", err)
		}
	}
	if err := s.srv.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := g.Cancelled(); c != n {
		t.Fatalf("%d of %d abandoned calls saw their context end", c, n)
	}
}

// TestShutdownEndsEventStreams: a client following the events does not
// hold up the shutdown; its stream ends.
func TestShutdownEndsEventStreams(t *testing.T) {
	s := serve(t, apitest.NewGate())
	streamed := make(chan error, 1)
	go func() {
		streamed <- s.client.Events(context.Background(), func(api.Event, []byte) error { return nil })
	}()
	// The stream is open once the server has its connection.
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := s.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if took := time.Since(t0); took > time.Second {
		t.Fatalf("Shutdown waited %v on an event stream", took)
	}
	select {
	case err := <-streamed:
		if err != nil {
			t.Fatalf("Events = %v, want the stream ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream still open after Shutdown")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestListen: the socket is root's alone (0600), replaces a dead agent's,
// refuses a live one's and anything not a socket, leaves nothing behind
// and is removed when closed.
func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ward.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v %v, want a socket of mode 0600", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%s holds %d entries, want the socket alone", dir, len(ents))
	}
	// It accepts: a server over it answers.
	accepted := make(chan struct{})
	go func(l net.Listener) {
		defer close(accepted)
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}(l)
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Fatalf("Listen over a live socket = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	<-accepted
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}

	// A dead agent's socket: bound, never removed.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	l, err = Listen(path)
	if err != nil {
		t.Fatalf("Listen over a dead socket: %v", err)
	}
	l.Close()

	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a file = %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%s holds %d entries after the refusals, want the file alone", dir, len(ents))
	}
}

// TestListenLeavesUmaskAlone: the agent spawns instances while it opens
// its socket, and a process's umask is shared by all its threads — so
// Listen must not change it, not even for a moment. (It used to set 0177
// around the bind.)
func TestListenLeavesUmaskAlone(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var wrong atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		p := filepath.Join(dir, "probe")
		for {
			select {
			case <-stop:
				return
			default:
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
			if err != nil {
				continue
			}
			st, _ := f.Stat()
			f.Close()
			os.Remove(p)
			if st.Mode().Perm() != 0o644 {
				wrong.Add(1)
			}
		}
	}()
	path := filepath.Join(dir, "ward.sock")
	for i := 0; i < 300 && wrong.Load() == 0; i++ {
		l, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	close(stop)
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Fatalf("%d files made while Listen ran did not get the process umask", n)
	}
}
