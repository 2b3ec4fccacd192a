package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Status is an instance's health as the checker last judged it.
type Status string

// The statuses, as they appear in an instance's "health" field.
const (
	StatusUnknown   Status = "unknown" // no verdict yet
	StatusHealthy   Status = "healthy"
	StatusUnhealthy Status = "unhealthy"
)

// Check types.
const (
	TypeTCP  = "tcp"
	TypeHTTP = "http"
)

// Defaults for a Check that leaves Interval or Timeout zero; they match the
// agent's request defaults.
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = time.Second
)

// FailureThreshold is how many consecutive failed probes make an instance
// unhealthy (from unknown or healthy). One success makes it healthy.
const FailureThreshold = 3

// maxBody bounds what an http probe reads of a response before closing it:
// enough to let a small body end cleanly, never a download.
const maxBody = 4 << 10

var (
	// ErrInvalid is returned, wrapped with the offending field, for a check
	// or address that cannot be probed.
	ErrInvalid = errors.New("health: invalid check")
	// ErrExists is returned by Add for an id that is already checked.
	ErrExists = errors.New("health: already checked")
	// ErrClosed is returned by Add after Close.
	ErrClosed = errors.New("health: checker closed")
)

// Check says how to probe one instance.
type Check struct {
	Type     string        // TypeTCP or TypeHTTP
	Path     string        // http only: the request path, starting with "/"
	Interval time.Duration // between probe starts; 0: DefaultInterval
	Timeout  time.Duration // per probe, at most Interval; 0: min(DefaultTimeout, Interval)
}

// ChangeFunc is told of every status transition of an instance. reason is
// the probe result that caused it ("http GET /health: status 500").
type ChangeFunc func(id string, from, to Status, reason string)

// Checker probes many instances, each on its own goroutine.
type Checker struct {
	onChange ChangeFunc
	client   *http.Client

	mu     sync.Mutex
	probes map[string]*probe
	closed bool
}

// probe is one instance's check; status and fails are guarded by
// Checker.mu.
type probe struct {
	id     string
	addr   string
	url    string // http only
	check  Check
	cancel context.CancelFunc
	done   chan struct{}

	status Status
	fails  int
}

// NewChecker returns a checker that reports transitions to onChange (nil:
// nobody is told; Status still answers).
//
// onChange runs on the probe goroutine of the instance concerned: calls for
// one id arrive in order, calls for different ids may run concurrently, and
// a slow callback delays only that instance's next probe. It must not call
// Remove or Close, which wait for that goroutine.
func NewChecker(onChange ChangeFunc) *Checker {
	return &Checker{
		onChange: onChange,
		client: &http.Client{
			Transport: &http.Transport{
				// No proxy from the environment: probes go straight to the
				// instance. No keep-alive: see the package comment.
				Proxy:                  nil,
				DialContext:            (&net.Dialer{}).DialContext,
				DisableKeepAlives:      true,
				DisableCompression:     true,
				MaxResponseHeaderBytes: 64 << 10,
			},
			// A redirect is an answer: the app is up. Following it could
			// leave the host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		probes: make(map[string]*probe),
	}
}

// Add starts checking the instance id, which listens on addr (host:port).
// Its status is StatusUnknown until the first verdict. An invalid check or
// address (ErrInvalid), an id already checked (ErrExists) or a closed
// checker (ErrClosed) is refused and changes nothing.
func (c *Checker) Add(id, addr string, chk Check) error {
	if id == "" {
		return fmt.Errorf("%w: id: empty", ErrInvalid)
	}
	chk, err := normalize(chk)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%w: addr: %q is not host:port: %v", ErrInvalid, addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
		return fmt.Errorf("%w: addr: %q needs a host and a port in [1, 65535]", ErrInvalid, addr)
	}
	p := &probe{id: id, addr: addr, check: chk, status: StatusUnknown, done: make(chan struct{})}
	if chk.Type == TypeHTTP {
		u := "http://" + net.JoinHostPort(host, port) + chk.Path
		if _, err := url.ParseRequestURI(u); err != nil {
			return fmt.Errorf("%w: path: %q does not make a URL: %v", ErrInvalid, chk.Path, err)
		}
		p.url = u
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if _, ok := c.probes[id]; ok {
		return fmt.Errorf("%w: %s", ErrExists, id)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	c.probes[id] = p
	go c.run(ctx, p)
	return nil
}

// normalize fills defaults and checks every field.
func normalize(chk Check) (Check, error) {
	switch chk.Type {
	case TypeTCP:
		if chk.Path != "" {
			return chk, fmt.Errorf("%w: path: only for type http, got %q", ErrInvalid, chk.Path)
		}
	case TypeHTTP:
		if !strings.HasPrefix(chk.Path, "/") {
			return chk, fmt.Errorf("%w: path: must start with '/', got %q", ErrInvalid, chk.Path)
		}
	default:
		return chk, fmt.Errorf("%w: type: must be %s or %s, got %q", ErrInvalid, TypeTCP, TypeHTTP, chk.Type)
	}
	if chk.Interval < 0 {
		return chk, fmt.Errorf("%w: interval: must be positive, got %v", ErrInvalid, chk.Interval)
	}
	if chk.Interval == 0 {
		chk.Interval = DefaultInterval
	}
	if chk.Timeout < 0 || chk.Timeout > chk.Interval {
		return chk, fmt.Errorf("%w: timeout: must be in (0, interval=%v], got %v", ErrInvalid, chk.Interval, chk.Timeout)
	}
	if chk.Timeout == 0 {
		chk.Timeout = min(DefaultTimeout, chk.Interval)
	}
	return chk, nil
}

// Remove stops checking id and forgets it. When it returns, no probe of id
// is running or will start, and onChange will not be called for it again.
// Removing an id that is not checked does nothing.
func (c *Checker) Remove(id string) {
	c.mu.Lock()
	p, ok := c.probes[id]
	if ok {
		delete(c.probes, id)
		p.cancel()
	}
	c.mu.Unlock()
	if ok {
		<-p.done
	}
}

// Status returns id's current status, and false if id is not checked.
func (c *Checker) Status(id string) (Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.probes[id]
	if !ok {
		return "", false
	}
	return p.status, true
}

// Close stops every check and waits for them; Add fails afterwards.
func (c *Checker) Close() {
	c.mu.Lock()
	c.closed = true
	ps := make([]*probe, 0, len(c.probes))
	for id, p := range c.probes {
		p.cancel()
		ps = append(ps, p)
		delete(c.probes, id)
	}
	c.mu.Unlock()
	for _, p := range ps {
		<-p.done
	}
}

// run probes p every Interval until ctx ends.
func (c *Checker) run(ctx context.Context, p *probe) {
	defer close(p.done)
	// The random first delay spreads instances added together over the
	// interval; the period afterwards is the same for all, so they stay
	// spread.
	t := time.NewTimer(rand.N(p.check.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		err := c.probeOnce(ctx, p)
		if ctx.Err() != nil {
			// Removed while probing: the cancelled probe says nothing
			// about the instance.
			return
		}
		c.record(p, err)
		t.Reset(max(0, p.check.Interval-time.Since(start)))
	}
}

// probeOnce runs one probe within the check's timeout; nil means it passed.
func (c *Checker) probeOnce(ctx context.Context, p *probe) error {
	ctx, cancel := context.WithTimeout(ctx, p.check.Timeout)
	defer cancel()
	var err error
	switch p.check.Type {
	case TypeTCP:
		err = dialOnce(ctx, p.addr)
	case TypeHTTP:
		err = c.getOnce(ctx, p)
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: no answer within %v", p.check.Type, p.addr, p.check.Timeout)
	}
	return err
}

func dialOnce(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("tcp connect %s: %w", addr, err)
	}
	return conn.Close()
}

func (c *Checker) getOnce(ctx context.Context, p *probe) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("http GET %s: %w", p.check.Path, err)
	}
	req.Header.Set("User-Agent", "ward-health")
	resp, err := c.client.Do(req)
	if err != nil {
		// The client's error repeats method and URL; the reason needs only
		// what went wrong.
		if ue := (*url.Error)(nil); errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("http GET %s: %w", p.check.Path, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 399 {
		return fmt.Errorf("http GET %s: status %d", p.check.Path, resp.StatusCode)
	}
	return nil
}

// record applies one probe result to p's status and reports a transition.
func (c *Checker) record(p *probe, err error) {
	c.mu.Lock()
	from := p.status
	to := from
	var reason string
	if err == nil {
		p.fails = 0
		to = StatusHealthy
		reason = p.check.Type + " probe passed"
		if p.check.Type == TypeHTTP {
			reason = "http GET " + p.check.Path + " answered"
		}
	} else {
		p.fails++
		if p.fails >= FailureThreshold {
			to = StatusUnhealthy
		}
		reason = fmt.Sprintf("%v (%d consecutive failures)", err, p.fails)
	}
	p.status = to
	c.mu.Unlock()
	if to != from && c.onChange != nil {
		c.onChange(p.id, from, to, reason)
	}
}
