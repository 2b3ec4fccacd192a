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
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/hostward/ward/api"
)

// EventSource feeds `ward events`.
type EventSource interface {
	Subscribe() (<-chan api.Event, func())
}

// NewHandler returns the HTTP handler for api and events.
func NewHandler(svc api.API, events EventSource, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	for _, m := range api.Methods {
		mux.HandleFunc("POST /v1/"+m.Name, endpoint(log, func(ctx context.Context, b []byte) (any, error) {
			return m.Call(ctx, svc, b)
		}))
	}
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		streamEvents(w, r, events)
	})
	return mux
}

func endpoint(log *slog.Logger, h func(context.Context, []byte) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, api.MaxRequestBytes+1))
		if err != nil {
			writeError(w, &api.Error{Code: api.CodeInvalidArgument, Message: "reading request: " + err.Error()})
			return
		}
		v, err := h(r.Context(), body)
		if err != nil {
			e := api.AsError(err)
			if e.Code == api.CodeInternal {
				log.Error("request failed", "path", r.URL.Path, "err", err)
			}
			writeError(w, e)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
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

// streamEvents writes one JSON event per line until the client goes away.
func streamEvents(w http.ResponseWriter, r *http.Request, src EventSource) {
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
// replaced; one a live agent answers on is not.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
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
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("localapi: %w", err)
		}
	}
	// The umask closes the window between bind and chmod.
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, fmt.Errorf("localapi: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("localapi: %w", err)
	}
	return l, nil
}

// Serve serves h on l until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	return err
}
