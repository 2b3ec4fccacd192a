package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hostward/ward/internal/tasks"
)

// ErrListen is wrapped by every failure to listen on metrics.listen; the
// cause (a *net.OpError, syscall.EADDRINUSE...) stays reachable too.
var ErrListen = errors.New("metrics.listen: cannot listen")

const (
	// maxScrapes bounds concurrent scrapes: each one walks every instance,
	// on a host whose CPU belongs to the instances.
	maxScrapes = 4
	// scrapeTimeout answers 503 rather than keep a scraper waiting past
	// Prometheus's default scrape timeout.
	scrapeTimeout = 10 * time.Second
	// shutdownGrace is how long Serve lets scrapes in flight finish once
	// its context ends.
	shutdownGrace = 5 * time.Second
)

// Server serves /metrics and /healthz over HTTP.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	once sync.Once
	// scrapes are the gatherings in flight, each on a goroutine of its own
	// (see scrape): the server's Shutdown does not know them once their
	// handler has given up, and Serve joins them.
	scrapes tasks.Group[*http.Request]
}

// Listen binds listen (host:port) and returns a server for reg, not yet
// serving. Binding here, apart from Serve, lets the caller refuse to start
// when the address is unusable.
func Listen(listen string, reg *prometheus.Registry) (*Server, error) {
	if listen == "" {
		return nil, fmt.Errorf("%w: address is empty", ErrListen)
	}
	if reg == nil {
		return nil, errors.New("metrics: nil registry")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("%w on %q: %w", ErrListen, listen, err)
	}
	s := &Server{ln: ln}
	gather := promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector failing (an instance name that is not UTF-8) costs
		// its own series, not the whole scrape; it is counted in
		// promhttp_metric_handler_errors_total.
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
		MaxRequestsInFlight: maxScrapes,
		// No Timeout here: promhttp would run the gathering on a
		// goroutine nobody joins. The same http.TimeoutHandler goes
		// around s.scrape instead.
	})
	h := promhttp.InstrumentMetricHandler(reg, http.TimeoutHandler(s.scrape(gather), scrapeTimeout,
		fmt.Sprintf("Exceeded configured timeout of %v.\n", scrapeTimeout)))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
	}
	return s, nil
}

// scrape runs h as a goroutine of s.scrapes and waits for it: a handler
// the timeout gave up on returns at once, its gathering goes on, and Serve
// still knows it.
func (s *Server) scrape(h http.Handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		if err := s.scrapes.Go(r, func() { defer close(done); h.ServeHTTP(w, r) }); err != nil {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		<-done
	}
}

// Addr returns the address the server listens on (the port chosen, for :0).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve serves until ctx ends, then stops accepting, lets scrapes in
// flight finish for a few seconds and returns nil once every goroutine it
// started has returned (an error if a gathering outlasts the grace). It
// returns an error if serving fails first. Serve may be called once.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil // Close was called
		}
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	s.scrapes.Close()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		// Scrapes still running past the grace: cut them.
		_ = s.srv.Close()
	}
	<-errc
	// A gathering cut off by Close (or by the scrape timeout) runs on
	// until it has walked its collectors.
	wctx, wcancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer wcancel()
	if werr := s.scrapes.Wait(wctx); werr != nil {
		err = errors.Join(err, werr)
	}
	if err != nil {
		return fmt.Errorf("metrics: shutdown: %w", err)
	}
	return nil
}

// Close stops the server at once, without waiting for scrapes in flight.
// It releases the listener of a server that never served.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = s.srv.Close()
		// Serve was never called: the server does not know the listener.
		if cerr := s.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) && err == nil {
			err = cerr
		}
	})
	return err
}

// Serve listens on listen and serves reg until ctx ends; see Server.Serve.
func Serve(ctx context.Context, listen string, reg *prometheus.Registry) error {
	s, err := Listen(listen, reg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
