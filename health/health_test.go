package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Short periods keep the tests quick; the timeout leaves the probes room on
// a busy machine.
var fast = Check{Type: TypeTCP, Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond}

type change struct {
	id       string
	from, to Status
	reason   string
}

// recorder collects transitions in order.
type recorder chan change

func newRecorder() recorder { return make(recorder, 64) }

func (r recorder) onChange(id string, from, to Status, reason string) {
	r <- change{id, from, to, reason}
}

// next waits for the next transition and checks it.
func (r recorder) next(t *testing.T, from, to Status) change {
	t.Helper()
	select {
	case c := <-r:
		if c.from != from || c.to != to {
			t.Fatalf("transition %s→%s (%s), want %s→%s", c.from, c.to, c.reason, from, to)
		}
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no transition %s→%s within 10s", from, to)
	}
	return change{}
}

// none checks that no transition arrives for d.
func (r recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case c := <-r:
		t.Fatalf("unexpected transition %s→%s (%s)", c.from, c.to, c.reason)
	case <-time.After(d):
	}
}

// countingListener accepts and closes connections on 127.0.0.1, counting
// them.
type countingListener struct {
	ln       net.Listener
	accepted atomic.Int64
	done     chan struct{}
}

func listen(t *testing.T, addr string) *countingListener {
	t.Helper()
	var ln net.Listener
	var err error
	// The port was just ours; on a shared machine retry briefly rather than
	// fail on a transient bind race.
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cl.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(cl.close)
	return cl
}

func (cl *countingListener) close() {
	cl.ln.Close()
	<-cl.done
}

func newChecker(t *testing.T, r recorder) *Checker {
	c := NewChecker(r.onChange)
	t.Cleanup(c.Close)
	return c
}

func TestTCPFollowsTheListener(t *testing.T) {
	cl := listen(t, "127.0.0.1:0")
	addr := cl.ln.Addr().String()
	r := newRecorder()
	c := newChecker(t, r)
	if err := c.Add("a", addr, fast); err != nil {
		t.Fatal(err)
	}
	if s, ok := c.Status("a"); !ok || (s != StatusUnknown && s != StatusHealthy) {
		t.Fatalf("status right after Add = %q, %v", s, ok)
	}
	r.next(t, StatusUnknown, StatusHealthy)

	cl.close()
	ch := r.next(t, StatusHealthy, StatusUnhealthy)
	if !strings.Contains(ch.reason, "connection refused") || !strings.Contains(ch.reason, "3 consecutive failures") {
		t.Errorf("reason %q: want the refused connect and the failure count", ch.reason)
	}
	if s, _ := c.Status("a"); s != StatusUnhealthy {
		t.Errorf("Status = %q after the transition, want unhealthy", s)
	}

	listen(t, addr)
	r.next(t, StatusUnhealthy, StatusHealthy)
}

func TestUnknownToUnhealthyAfterThreshold(t *testing.T) {
	cl := listen(t, "127.0.0.1:0")
	addr := cl.ln.Addr().String()
	cl.close() // nothing listens there now
	r := newRecorder()
	c := newChecker(t, r)
	if err := c.Add("a", addr, fast); err != nil {
		t.Fatal(err)
	}
	ch := r.next(t, StatusUnknown, StatusUnhealthy)
	if !strings.Contains(ch.reason, "(3 consecutive failures)") {
		t.Errorf("reason %q: unhealthy should come only after %d failures", ch.reason, FailureThreshold)
	}
}

// statusServer answers every probe with the status code next returns.
func statusServer(t *testing.T, next func(n int) int) (addr string, conns *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	conns = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/health" {
			http.NotFound(w, req)
			return
		}
		code := next(int(n.Add(1)))
		if code == http.StatusFound {
			// Following this would fail: nothing listens on port 1.
			w.Header().Set("Location", "http://127.0.0.1:1/login")
		}
		w.WriteHeader(code)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), conns
}

func httpCheck(path string) Check {
	return Check{Type: TypeHTTP, Path: path, Interval: fast.Interval, Timeout: fast.Timeout}
}

func TestHTTPStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		code int
		want Status
	}{
		{http.StatusOK, StatusHealthy},
		{http.StatusNoContent, StatusHealthy},
		{http.StatusFound, StatusHealthy}, // a redirect is an answer, and is not followed
		{http.StatusNotModified, StatusHealthy},
		{http.StatusNotFound, StatusUnhealthy},
		{http.StatusInternalServerError, StatusUnhealthy},
		{http.StatusServiceUnavailable, StatusUnhealthy},
	} {
		t.Run(http.StatusText(tc.code), func(t *testing.T) {
			addr, _ := statusServer(t, func(int) int { return tc.code })
			r := newRecorder()
			c := newChecker(t, r)
			if err := c.Add("a", addr, httpCheck("/health")); err != nil {
				t.Fatal(err)
			}
			ch := r.next(t, StatusUnknown, tc.want)
			if tc.want == StatusUnhealthy && !strings.Contains(ch.reason, "status ") {
				t.Errorf("reason %q should name the status", ch.reason)
			}
		})
	}
}

func TestHTTPUsesThePath(t *testing.T) {
	addr, _ := statusServer(t, func(int) int { return http.StatusOK })
	r := newRecorder()
	c := newChecker(t, r)
	if err := c.Add("a", addr, httpCheck("/elsewhere")); err != nil {
		t.Fatal(err)
	}
	ch := r.next(t, StatusUnknown, StatusUnhealthy)
	if !strings.Contains(ch.reason, "GET /elsewhere: status 404") {
		t.Errorf("reason %q", ch.reason)
	}
}

func TestHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}))
	// Let the handlers return before the server waits for them.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	r := newRecorder()
	c := newChecker(t, r)
	if err := c.Add("a", srv.Listener.Addr().String(), httpCheck("/")); err != nil {
		t.Fatal(err)
	}
	ch := r.next(t, StatusUnknown, StatusUnhealthy)
	if !strings.Contains(ch.reason, "no answer within 40ms") {
		t.Errorf("reason %q should say the probe timed out", ch.reason)
	}
}

// A failure or two between successes is noise: the status holds, and every
// probe uses a fresh connection.
func TestHTTPBelowThresholdStaysHealthy(t *testing.T) {
	addr, conns := statusServer(t, func(n int) int {
		if n%4 == 2 || n%4 == 3 { // two failures out of every four
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	r := newRecorder()
	c := newChecker(t, r)
	if err := c.Add("a", addr, httpCheck("/health")); err != nil {
		t.Fatal(err)
	}
	r.next(t, StatusUnknown, StatusHealthy)
	r.none(t, 12*fast.Interval)
	c.Remove("a")
	if n := conns.Load(); n < 6 {
		t.Fatalf("only %d probes in %v", n, 12*fast.Interval)
	}
}

// Keep-alive would let a wedged app look healthy on an old connection, so
// no connection may carry a second request. Counting connections against
// requests is not enough: Remove may cancel a probe after it connected and
// before its request arrived, which leaves one connection more.
func TestHTTPFreshConnectionPerProbe(t *testing.T) {
	type connKey struct{}
	var reqs, reused atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		reqs.Add(1)
		if req.Context().Value(connKey{}).(*atomic.Int64).Add(1) > 1 {
			reused.Add(1)
		}
	}))
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, new(atomic.Int64))
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := newChecker(t, newRecorder())
	if err := c.Add("a", srv.Listener.Addr().String(), httpCheck("/health")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(8 * fast.Interval)
	c.Remove("a")
	if n, k := reqs.Load(), reused.Load(); n < 3 || k != 0 {
		t.Fatalf("%d of %d requests came on a reused connection, want one connection per probe", k, n)
	}
}

func TestRemoveStopsProbing(t *testing.T) {
	cl := listen(t, "127.0.0.1:0")
	r := newRecorder()
	c := newChecker(t, r)
	if err := c.Add("a", cl.ln.Addr().String(), fast); err != nil {
		t.Fatal(err)
	}
	r.next(t, StatusUnknown, StatusHealthy)
	c.Remove("a")
	if _, ok := c.Status("a"); ok {
		t.Fatal("Status still knows a removed id")
	}
	// A connection Remove cancelled may still be in the accept queue.
	time.Sleep(fast.Interval)
	before := cl.accepted.Load()
	time.Sleep(6 * fast.Interval)
	if after := cl.accepted.Load(); after != before {
		t.Fatalf("%d connections after Remove", after-before)
	}
	cl.close() // would make a probe fail and report, if one still ran
	r.none(t, 6*fast.Interval)
	c.Remove("a") // idempotent
	// The id can be checked again.
	if err := c.Add("a", cl.ln.Addr().String(), fast); err != nil {
		t.Fatal(err)
	}
}

func TestFirstProbesAreSpread(t *testing.T) {
	const n = 40
	var mu sync.Mutex
	var first []time.Time
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			first = append(first, time.Now())
			mu.Unlock()
			conn.Close()
		}
	}()
	c := NewChecker(nil)
	t.Cleanup(c.Close)
	chk := Check{Type: TypeTCP, Interval: time.Second, Timeout: 500 * time.Millisecond}
	for i := range n {
		if err := c.Add(fmt.Sprint("i", i), ln.Addr().String(), chk); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(chk.Interval - 50*time.Millisecond) // just the first round
	c.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(first) < n/2 {
		t.Fatalf("%d of %d first probes within the first interval", len(first), n)
	}
	// Uniform over 1 s, 20+ samples span far more than 300 ms; lockstep
	// probes would span a few ms.
	if span := first[len(first)-1].Sub(first[0]); span < 300*time.Millisecond {
		t.Fatalf("first probes of %d instances span %v: they probe in lockstep", len(first), span)
	}
}

func TestAddRefusesBadInput(t *testing.T) {
	cl := listen(t, "127.0.0.1:0")
	addr := cl.ln.Addr().String()
	c := newChecker(t, newRecorder())
	for _, tc := range []struct {
		name, id, addr string
		chk            Check
		field          string
	}{
		{"no id", "", addr, fast, "id:"},
		{"type", "x", addr, Check{Type: "udp"}, "type:"},
		{"tcp path", "x", addr, Check{Type: TypeTCP, Path: "/"}, "path:"},
		{"http no slash", "x", addr, Check{Type: TypeHTTP, Path: "health"}, "path:"},
		{"http bad url", "x", addr, Check{Type: TypeHTTP, Path: "/%zz"}, "path:"},
		{"negative interval", "x", addr, Check{Type: TypeTCP, Interval: -time.Second}, "interval:"},
		{"timeout over interval", "x", addr, Check{Type: TypeTCP, Interval: time.Second, Timeout: 2 * time.Second}, "timeout:"},
		{"negative timeout", "x", addr, Check{Type: TypeTCP, Timeout: -1}, "timeout:"},
		{"addr no port", "x", "127.0.0.1", fast, "addr:"},
		{"addr port 0", "x", "127.0.0.1:0", fast, "addr:"},
		{"addr no host", "x", ":80", fast, "addr:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Add(tc.id, tc.addr, tc.chk)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("Add = %v, want ErrInvalid naming %q", err, tc.field)
			}
			if _, ok := c.Status(tc.id); ok {
				t.Fatal("a refused Add left a check behind")
			}
		})
	}

	if err := c.Add("x", addr, fast); err != nil {
		t.Fatal(err)
	}
	if err := c.Add("x", addr, httpCheck("/")); !errors.Is(err, ErrExists) {
		t.Fatalf("second Add = %v, want ErrExists", err)
	}
	c.Close()
	if err := c.Add("y", addr, fast); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Close = %v, want ErrClosed", err)
	}
	if _, ok := c.Status("x"); ok {
		t.Fatal("Close left a check behind")
	}
}

func TestDefaults(t *testing.T) {
	got, err := normalize(Check{Type: TypeTCP})
	if err != nil || got.Interval != DefaultInterval || got.Timeout != DefaultTimeout {
		t.Fatalf("normalize = %+v, %v", got, err)
	}
	got, err = normalize(Check{Type: TypeTCP, Interval: 300 * time.Millisecond})
	if err != nil || got.Timeout != 300*time.Millisecond {
		t.Fatalf("timeout must default to at most the interval: %+v, %v", got, err)
	}
}
