package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/tasks"
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

// ErrAbandoned is wrapped by Shutdown's error when its deadline passed
// with requests still running: each of those was answered unavailable.
var ErrAbandoned = errors.New("bus: requests still running at the shutdown deadline")

// shuttingDown is the answer to a request the service will not finish:
// one that arrives after Shutdown began, or one still running when its
// deadline passed. The requester can retry with the agent that comes next.
var shuttingDown = &api.Error{Code: api.CodeUnavailable, Message: "agent shutting down; retry"}

// Service is the agent's micro service on the bus.
type Service struct {
	nc    *nats.Conn
	svc   micro.Service
	sem   chan struct{}
	log   *slog.Logger
	calls tasks.Group[*call] // the requests being worked on
}

// call is one request being worked on, on its own goroutine.
type call struct {
	req      micro.Request
	endpoint string
	// cancel ends the request's context: when it is done, or when
	// Shutdown gives up on it. NATS does not tell a requester that went
	// away (a request is a publish with a reply subject nobody may
	// listen on any more), so that does not cancel it.
	cancel   context.CancelFunc
	answered atomic.Bool // exactly one answer: the result's or Shutdown's
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
		fn := func(ctx context.Context, b []byte) (any, error) { return m.Call(ctx, backend, b) }
		if err := g.AddEndpoint(m.Name, s.handler(m.Name, fn), micro.WithEndpointMetadata(map[string]string{"host_id": o.HostID})); err != nil {
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
// not hold up the rest — with at most MaxInFlight at once. Once Shutdown
// began, a request is answered unavailable instead.
func (s *Service) handler(name string, fn func(context.Context, []byte) (any, error)) micro.Handler {
	return micro.HandlerFunc(func(r micro.Request) {
		select {
		case s.sem <- struct{}{}:
		default:
			respondError(r, &api.Error{Code: api.CodeResourceExhausted, Message: fmt.Sprintf("%d commands in flight; retry", cap(s.sem))})
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		c := &call{req: r, endpoint: name, cancel: cancel}
		err := s.calls.Go(c, func() {
			defer func() { <-s.sem }()
			defer cancel()
			s.answer(c, s.work(ctx, c, fn))
		})
		if err != nil { // tasks.ErrClosed: shutting down
			cancel()
			<-s.sem
			respondError(r, shuttingDown)
		}
	})
}

// work runs one request and returns its answer.
func (s *Service) work(ctx context.Context, c *call, fn func(context.Context, []byte) (any, error)) *nats.Msg {
	v, err := fn(ctx, c.req.Data())
	if err != nil {
		e := api.AsError(err)
		if e.Code == api.CodeInternal {
			s.log.Error("bus request failed", "endpoint", c.endpoint, "err", err)
		}
		return errorMsg(e)
	}
	b, err := json.Marshal(v)
	if err != nil {
		s.log.Error("bus reply not encoded", "endpoint", c.endpoint, "err", err)
		return errorMsg(api.AsError(api.Internal(fmt.Errorf("encoding the reply: %w", err))))
	}
	if max := s.nc.MaxPayload(); max > 0 && int64(len(b)) > max {
		// The client would drop it, and the requester wait out its
		// timeout for nothing.
		return errorMsg(&api.Error{Code: api.CodeResourceExhausted, Message: fmt.Sprintf(
			"the reply is %d bytes, more than the bus carries in one message (%d); list takes limit and after to page", len(b), max)})
	}
	return &nats.Msg{Data: b}
}

// answer sends m as c's answer unless c was answered already: the
// request's own goroutine and Shutdown giving up on it may both try.
func (s *Service) answer(c *call, m *nats.Msg) {
	if c.answered.CompareAndSwap(false, true) {
		s.reply(c.req, c.endpoint, m)
	}
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

// Shutdown stops taking requests (the endpoints are unsubscribed; one
// that still arrives is answered unavailable) and waits until every
// request in flight has been answered and its goroutine has returned, or
// ctx ends. Then it answers each request still running unavailable itself,
// cancels its context, and returns an error wrapping ErrAbandoned: every
// request gets exactly one answer by the deadline. The goroutines of those
// requests may still be in the backend; Wait joins them.
//
// The unsubscription drains: requests the client library holds already are
// still delivered, and answered unavailable, until the connection closes.
// Close it with Close, which waits for that, not with nats.Conn.Close.
func (s *Service) Shutdown(ctx context.Context) error {
	s.calls.Close()
	var errs []error
	if err := s.svc.Stop(); err != nil {
		errs = append(errs, fmt.Errorf("bus: unsubscribing the service: %w", err))
	}
	if err := s.calls.Wait(ctx); err != nil {
		left := s.calls.Running()
		for _, c := range left {
			s.answer(c, errorMsg(shuttingDown))
			c.cancel()
		}
		errs = append(errs, fmt.Errorf("%w: %d answered unavailable", ErrAbandoned, len(left)))
	}
	// Answers are buffered by the client: see them out before the caller
	// closes the connection.
	if s.nc.IsConnected() {
		if err := s.nc.FlushTimeout(flushTimeout); err != nil {
			errs = append(errs, fmt.Errorf("bus: flushing the answers: %w", err))
		}
	}
	return errors.Join(errs...)
}

// flushTimeout bounds the round trip that sees a shutdown's answers out.
const flushTimeout = 2 * time.Second

// Wait waits for the goroutines of the requests Shutdown gave up on, until
// ctx ends; its error then wraps tasks.ErrStillRunning.
func (s *Service) Wait(ctx context.Context) error {
	if err := s.calls.Wait(ctx); err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	return nil
}
