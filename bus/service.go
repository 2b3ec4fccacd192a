package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/hostward/ward/api"
)

// DefaultMaxInFlight bounds the commands the service works on at once;
// beyond it a request is refused with resource_exhausted at once rather
// than queued behind a slow stop.
const DefaultMaxInFlight = 64

// ServiceOptions configure NewService.
type ServiceOptions struct {
	HostID      string
	Version     string // the agent's version, shown by `nats micro info`
	MaxInFlight int
	Log         *slog.Logger
}

// Service is the agent's micro service on the bus.
type Service struct {
	nc  *nats.Conn
	svc micro.Service
	sem chan struct{}
	log *slog.Logger
}

// NewService registers the `ward` micro service (metadata host_id) with the
// endpoints start, stop, limit, info and list under ward.<host>.
func NewService(nc *nats.Conn, backend api.API, o ServiceOptions) (*Service, error) {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	version := o.Version
	if version == "" || version == "dev" {
		version = "0.0.0-dev" // micro requires semver
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "ward",
		Version:     version,
		Description: "ward isolation agent of host " + o.HostID,
		Metadata:    map[string]string{"host_id": o.HostID},
	})
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	s := &Service{nc: nc, svc: svc, sem: make(chan struct{}, o.MaxInFlight), log: o.Log}
	g := svc.AddGroup("ward." + o.HostID)
	for _, m := range api.Methods {
		call := func(ctx context.Context, b []byte) (any, error) { return m.Call(ctx, backend, b) }
		if err := g.AddEndpoint(m.Name, s.handler(m.Name, call), micro.WithEndpointMetadata(map[string]string{"host_id": o.HostID})); err != nil {
			svc.Stop()
			return nil, fmt.Errorf("bus: endpoint %s: %w", m.Name, err)
		}
	}
	// AddService does not flush: without this a discovery ping sent right
	// after could miss the new subscriptions.
	if nc.IsConnected() {
		nc.Flush()
	}
	return s, nil
}

// handler runs each request on its own goroutine — micro calls a handler
// serially per endpoint, and one stop waiting out its grace period must
// not hold up the rest — with at most MaxInFlight at once.
func (s *Service) handler(name string, fn func(context.Context, []byte) (any, error)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		select {
		case s.sem <- struct{}{}:
		default:
			respondError(r, &api.Error{Code: api.CodeResourceExhausted, Message: fmt.Sprintf("%d commands in flight; retry", cap(s.sem))})
			return
		}
		go func() {
			defer func() { <-s.sem }()
			v, err := fn(context.Background(), r.Data())
			if err != nil {
				e := api.AsError(err)
				if e.Code == api.CodeInternal {
					s.log.Error("bus request failed", "endpoint", name, "err", err)
				}
				s.reply(r, name, errorMsg(e))
				return
			}
			b, err := json.Marshal(v)
			if err != nil {
				s.log.Warn("bus reply not sent", "endpoint", name, "err", err)
				return
			}
			if max := s.nc.MaxPayload(); max > 0 && int64(len(b)) > max {
				// The client would drop it, and the requester wait out its
				// timeout for nothing.
				s.reply(r, name, errorMsg(&api.Error{Code: api.CodeResourceExhausted, Message: fmt.Sprintf(
					"the reply is %d bytes, more than the bus carries in one message (%d); list takes limit and after to page", len(b), max)}))
				return
			}
			s.reply(r, name, &nats.Msg{Data: b})
		}()
	})
}

// reply publishes m to r's reply subject. A handler's goroutine must not
// answer through r itself: micro reads the request's error field for its
// statistics as soon as the handler returns, and Respond and Error write
// it — a data race with every answer given after the return.
func (s *Service) reply(r micro.Request, endpoint string, m *nats.Msg) {
	m.Subject = r.Reply()
	if err := s.nc.PublishMsg(m); err != nil {
		s.log.Warn("bus reply not sent", "endpoint", endpoint, "err", err)
	}
}

// errorMsg is e as micro's error replies carry it: the contract's code in
// Nats-Service-Error-Code, the message in Nats-Service-Error, and the JSON
// error body.
func errorMsg(e *api.Error) *nats.Msg {
	return &nats.Msg{
		Header: nats.Header{micro.ErrorCodeHeader: {string(e.Code)}, micro.ErrorHeader: {errorText(e)}},
		Data:   api.Body(e),
	}
}

// respondError answers from the handler itself (before it returns, so
// micro counts the error) with what errorMsg carries.
func respondError(r micro.Request, e *api.Error) {
	r.Error(string(e.Code), errorText(e), api.Body(e))
}

// errorText is the Nats-Service-Error of e: its message, or its code.
func errorText(e *api.Error) string {
	if msg := e.Error(); msg != "" {
		return msg
	}
	return string(e.Code)
}

// Stop unregisters the service.
func (s *Service) Stop() error { return s.svc.Stop() }
