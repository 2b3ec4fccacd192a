package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHealthzAndMethods(t *testing.T) {
	base := serve(t, newSelf(t, Options{}))
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %s %q", resp.Status, body)
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{http.MethodPost, "/metrics", http.StatusMethodNotAllowed},
		{http.MethodGet, "/", http.StatusNotFound},
		{http.MethodHead, "/healthz", http.StatusOK},
	} {
		req, _ := http.NewRequest(c.method, base+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %s, want %d", c.method, c.path, resp.Status, c.code)
		}
	}
}

func TestListenRefuses(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	reg := prometheus.NewRegistry()
	for _, c := range []struct {
		listen string
		cause  error
	}{
		{"", nil},
		{"127.0.0.1", nil},
		{"127.0.0.1:99999", nil},
		{"[::1:9102", nil},
		{busy.Addr().String(), syscall.EADDRINUSE},
	} {
		err := Serve(context.Background(), c.listen, reg)
		if !errors.Is(err, ErrListen) || !strings.Contains(err.Error(), "metrics.listen") {
			t.Errorf("Serve(%q) = %v, want an error naming metrics.listen", c.listen, err)
		}
		if c.cause != nil && !errors.Is(err, c.cause) {
			t.Errorf("Serve(%q) = %v, want errors.Is %v", c.listen, err, c.cause)
		}
	}
	if _, err := Listen("127.0.0.1:0", nil); err == nil {
		t.Error("Listen with a nil registry succeeded")
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, "127.0.0.1:0", prometheus.NewRegistry()) }()
	time.Sleep(50 * time.Millisecond) // let it listen; the test holds either way
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

// blocker is a collector whose Collect waits until released, to hold a
// scrape in flight.
type blocker struct {
	entered, release chan struct{}
}

var descBlocker = prometheus.NewDesc("test_blocker", "test", nil, nil)

func (b *blocker) Describe(ch chan<- *prometheus.Desc) { ch <- descBlocker }
func (b *blocker) Collect(ch chan<- prometheus.Metric) {
	close(b.entered)
	<-b.release
	ch <- prometheus.MustNewConstMetric(descBlocker, prometheus.GaugeValue, 1)
}

// TestServeGraceful: a scrape in flight when the context ends completes;
// then the port is closed and Serve returns.
func TestServeGraceful(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := &blocker{entered: make(chan struct{}), release: make(chan struct{})}
	reg.MustRegister(b)
	srv, err := Listen("127.0.0.1:0", reg)
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()

	type result struct {
		code int
		body string
		err  error
	}
	scraped := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			scraped <- result{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		scraped <- result{resp.StatusCode, string(body), err}
	}()
	<-b.entered
	cancel()
	select {
	case err := <-served:
		t.Fatalf("Serve returned with a scrape in flight: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(b.release)
	r := <-scraped
	if r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, "test_blocker 1") {
		t.Errorf("scrape in flight: %d %v\n%s", r.code, r.err, r.body)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Error("port still accepts after Serve returned")
	}
}

func TestCloseUnserved(t *testing.T) {
	srv, err := Listen("127.0.0.1:0", prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.Addr().String()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// The port is free again.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	ln.Close()
}
