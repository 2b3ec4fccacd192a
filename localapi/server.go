// Package localapi is the agent's local transport: JSON over HTTP on a unix
// socket, root only. Its requests and replies are the bus's, byte for byte;
// the CLI is its client.
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/tasks"
)

// EventSource feeds `ward events`.
type EventSource interface {
	Subscribe() (<-chan api.Event, func())
}

// shuttingDown is the answer to a request the server will not finish: one
// that arrives once Shutdown began, or one still running at its deadline.
var shuttingDown = &api.Error{Code: api.CodeUnavailable, Message: "agent shutting down; retry"}

// answerGrace is how long Shutdown, past its deadline, lets the requests
// it gave up on write their unavailable answer before it closes their
// connections.
const answerGrace = time.Second

// Server serves the API and the event stream on the agent's socket.
type Server struct {
	log  *slog.Logger
	http *http.Server
	// calls are the API calls in flight, each on a goroutine of its own
	// so that its request can be answered without waiting for it.
	calls       tasks.Group[*http.Request]
	stopOnce    sync.Once
	closing     chan struct{} // closed when Shutdown begins: event streams end
	abandonOnce sync.Once
	abandon     chan struct{} // closed at Shutdown's deadline: calls still running are answered unavailable
}

// NewServer returns the server of svc and events, not serving yet.
func NewServer(svc api.API, events EventSource, log *slog.Logger) *Server {
	s := &Server{log: log, closing: make(chan struct{}), abandon: make(chan struct{})}
	mux := http.NewServeMux()
	for _, m := range api.Methods {
		mux.HandleFunc("POST /v1/"+m.Name, s.endpoint(func(ctx context.Context, b []byte) (any, error) {
			return m.Call(ctx, svc, b)
		}))
	}
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		s.streamEvents(w, r, events)
	})
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Serve serves on l until Shutdown, and then returns nil; it returns the
// error that made it stop otherwise. It closes l.
func (s *Server) Serve(l net.Listener) error {
	if err := s.http.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("localapi: %w", err)
	}
	return nil
}

// Shutdown stops taking requests (the socket is closed and removed, event
// streams end) and waits until every request in flight has been answered,
// or ctx ends. Then each request still running is answered unavailable and
// the context of its call cancelled, and Shutdown returns ctx's error: every
// request gets an answer by the deadline (plus answerGrace to write it).
// The calls given up on may still be in the agent; Wait joins them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		close(s.closing)
		s.calls.Close()
	})
	err := s.http.Shutdown(ctx)
	if err == nil {
		return nil
	}
	s.abandonOnce.Do(func() { close(s.abandon) })
	gctx, cancel := context.WithTimeout(context.Background(), answerGrace)
	defer cancel()
	if s.http.Shutdown(gctx) != nil {
		s.http.Close()
	}
	return fmt.Errorf("localapi: requests still running at the shutdown deadline were answered unavailable: %w", err)
}

// Wait waits for the calls Shutdown gave up on to return from the agent,
// until ctx ends; its error then wraps tasks.ErrStillRunning.
func (s *Server) Wait(ctx context.Context) error {
	if err := s.calls.Wait(ctx); err != nil {
		return fmt.Errorf("localapi: %w", err)
	}
	return nil
}

// endpoint answers a request with h's result, or unavailable if Shutdown
// gives up on it first. h gets the request's context, which ends when the
// client goes away or the answer was given — so a call whose caller is
// gone, or that Shutdown gave up on, is cancelled.
func (s *Server) endpoint(h func(context.Context, []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxRequestBytes+1))
		if err != nil {
			writeError(w, &api.Error{Code: api.CodeInvalidArgument, Message: "reading request: " + err.Error()})
			return
		}
		type result struct {
			v   any
			err error
		}
		done := make(chan result, 1)
		if err := s.calls.Go(r, func() {
			v, err := h(r.Context(), body)
			done <- result{v, err}
		}); err != nil { // tasks.ErrClosed: shutting down
			writeError(w, shuttingDown)
			return
		}
		var res result
		select {
		case res = <-done:
		case <-r.Context().Done():
			return // nobody to answer
		case <-s.abandon:
			select {
			case res = <-done: // finished just in time: its answer is better
			default:
				writeError(w, shuttingDown)
				return
			}
		}
		if res.err != nil {
			e := api.AsError(res.err)
			if e.Code == api.CodeInternal {
				s.log.Error("request failed", "path", r.URL.Path, "err", res.err)
			}
			writeError(w, e)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res.v)
	}
}

var statusOf = map[api.Code]int{
	api.CodeInvalidArgument:   http.StatusBadRequest,
	api.CodeNotFound:          http.StatusNotFound,
	api.CodeConflict:          http.StatusConflict,
	api.CodeResourceExhausted: http.StatusTooManyRequests,
	api.CodeUnavailable:       http.StatusServiceUnavailable,
	api.CodeInternal:          http.StatusInternalServerError,
}

func writeError(w http.ResponseWriter, e *api.Error) {
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(api.Body(e))
}

// streamEvents writes one JSON event per line until the client goes away
// or Shutdown begins.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, src EventSource) {
	ch, cancel := src.Subscribe()
	defer cancel()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case e, ok := <-ch:
			if !ok {
				return // fell behind; the client reconnects
			}
			if enc.Encode(e) != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
	}
}

// Listen opens the agent's socket at path, mode 0600: anyone who can talk
// to it can run anything as a pool user. A socket left by a dead agent is
// replaced; one a live agent answers on is not. Closing the listener
// removes the socket.
//
// The socket is made in a fresh 0700 directory next to path, made 0600,
// and only then renamed into place: at no moment can anyone but root
// connect, and the process umask — which instances being spawned at the
// same time inherit — is left alone.
func Listen(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("localapi: %w", err)
	}
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("localapi: %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("localapi: another agent is serving on %s", path)
		}
	}
	private, err := os.MkdirTemp(dir, ".ward-sock-") // mode 0700
	if err != nil {
		return nil, fmt.Errorf("localapi: %w", err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, "sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("localapi: %w", err)
	}
	// The listener would unlink tmp, which is gone by then; the socket's
	// own path is removed by socketListener.Close.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("localapi: %w", err)
	}
	// Replaces a dead agent's socket in one step.
	if err := os.Rename(tmp, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("localapi: %w", err)
	}
	return &socketListener{UnixListener: l, path: path}, nil
}

// socketListener removes its socket when closed, so that a client of a
// stopped agent finds no socket rather than one that refuses.
type socketListener struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
			err = rerr
		}
	})
	return err
}
