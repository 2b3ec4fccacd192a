package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// NATS subjects of the gorouter protocol.
const (
	SubjectRegister   = "router.register"
	SubjectUnregister = "router.unregister"
	SubjectStart      = "router.start"
	SubjectGreet      = "router.greet"
)

const (
	// DefaultInterval is how often routes are re-sent while no router has
	// said how often it wants them: well inside gorouter's default 120 s
	// prune threshold, even after a few lost messages.
	DefaultInterval = 20 * time.Second
	// DefaultPruneThreshold is gorouter's droplet_stale_threshold default,
	// assumed until a router announces its own.
	DefaultPruneThreshold = 120 * time.Second
	// Component is the value of the "component" tag of every route.
	Component = "ward"
	// maxRouters bounds the routers remembered (see adopt).
	maxRouters = 32
)

var (
	// ErrInvalid is returned, wrapped with the offending field, for a route
	// gorouter could not use.
	ErrInvalid = errors.New("router: invalid route")
	// ErrNotRegistered is returned by Update for an id that is not
	// registered.
	ErrNotRegistered = errors.New("router: route not registered")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("router: registrar closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("router: registrar already started")
	// ErrNoHostAddress is returned by DefaultHost when the host has no
	// IPv4 address a router could reach.
	ErrNoHostAddress = errors.New("router: no non-loopback IPv4 address")
)

// Route is one instance's registration.
type Route struct {
	ID    string            // the instance id: private_instance_id
	Name  string            // the app: app
	Index int               // private_instance_index (sent as a string)
	Host  string            // where routers reach the instance; "" = the registrar's host
	Port  int               // the instance's port
	URIs  []string          // e.g. "shop.example.com", "shop.example.com/api"
	Tags  map[string]string // e.g. "load": "12.5", "weight": "88"; "component" is always "ward"
}

// Options configure New.
type Options struct {
	// Host is the address routers reach instances at, for routes that
	// leave Host empty. "": DefaultHost().
	Host string
	// AvailabilityZone, if set, goes into every registration.
	AvailabilityZone string
	// Interval is the re-registration period while no router has spoken.
	// 0: DefaultInterval.
	Interval time.Duration
	Log      *slog.Logger
}

// message is gorouter's RegistryMessage as far as ward fills it; the json
// names are gorouter's (see the package comment).
type message struct {
	Host                    string            `json:"host"`
	Port                    uint16            `json:"port"`
	URIs                    []string          `json:"uris"`
	App                     string            `json:"app"`
	PrivateInstanceID       string            `json:"private_instance_id"`
	PrivateInstanceIndex    string            `json:"private_instance_index"`
	AvailabilityZone        string            `json:"availability_zone,omitempty"`
	StaleThresholdInSeconds int               `json:"stale_threshold_in_seconds"`
	Tags                    map[string]string `json:"tags"`
}

// startMessage is gorouter's router.start / router.greet reply
// (common.RouterStart).
type startMessage struct {
	ID                               string   `json:"id"`
	Hosts                            []string `json:"hosts"`
	MinimumRegisterIntervalInSeconds int      `json:"minimumRegisterIntervalInSeconds"`
	PruneThresholdInSeconds          int      `json:"pruneThresholdInSeconds"`
}

// routerInfo is what one router asked for.
type routerInfo struct {
	interval, prune time.Duration
	seq             uint64 // when it last spoke, to forget the oldest
}

// Registrar keeps routes registered with every gorouter on a NATS
// connection. Its methods are safe for concurrent use.
type Registrar struct {
	nc              *nats.Conn
	host, az        string
	defaultInterval time.Duration
	log             *slog.Logger
	kick            chan struct{} // re-send everything now
	quit            chan struct{}

	// mu orders every publish: a periodic re-send can never overtake an
	// Unregister and bring a withdrawn route back.
	mu      sync.Mutex
	routes  map[string]message
	routers map[string]routerInfo
	seq     uint64
	subs    []*nats.Subscription
	inbox   string // where greet replies come
	started bool
	closed  bool
	done    chan struct{} // closed when the re-send loop ends
}

// New returns a registrar publishing on nc. It sends nothing until a
// route is registered or Start greets the routers.
func New(nc *nats.Conn, o Options) (*Registrar, error) {
	if nc == nil {
		return nil, errors.New("router: nil NATS connection")
	}
	if o.Interval < 0 {
		return nil, fmt.Errorf("%w: interval: must be positive, got %v", ErrInvalid, o.Interval)
	}
	if o.Interval == 0 {
		o.Interval = DefaultInterval
	}
	if o.Host == "" {
		h, err := DefaultHost()
		if err != nil {
			return nil, fmt.Errorf("%w; set the host routers reach this one at", err)
		}
		o.Host = h
	}
	if err := checkHost(o.Host); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Registrar{
		nc:              nc,
		host:            o.Host,
		az:              o.AvailabilityZone,
		defaultInterval: o.Interval,
		log:             o.Log,
		kick:            make(chan struct{}, 1),
		quit:            make(chan struct{}),
		routes:          make(map[string]message),
		routers:         make(map[string]routerInfo),
		done:            make(chan struct{}),
	}, nil
}

// Start subscribes to router.start, greets the routers (their replies are
// taken like a router.start) and re-sends every route each interval until
// ctx ends or Close.
func (r *Registrar) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.started {
		return ErrStarted
	}
	inbox := nats.NewInbox()
	for _, subj := range []string{SubjectStart, inbox} {
		sub, err := r.nc.Subscribe(subj, r.onStart)
		if err != nil {
			r.unsubscribe()
			return fmt.Errorf("router: subscribe %s: %w", subj, err)
		}
		r.subs = append(r.subs, sub)
	}
	// Every router answers a greet; all replies come to our inbox.
	if err := r.nc.PublishRequest(SubjectGreet, inbox, nil); err != nil {
		r.unsubscribe()
		return fmt.Errorf("router: %s: %w", SubjectGreet, err)
	}
	r.started, r.inbox = true, inbox
	go r.loop(ctx)
	return nil
}

func (r *Registrar) unsubscribe() {
	for _, s := range r.subs {
		_ = s.Unsubscribe()
	}
	r.subs = nil
}

// onStart takes a router.start or a greet reply.
func (r *Registrar) onStart(m *nats.Msg) {
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		// The server's "no responders" to the greet: no router is
		// listening yet. Its first router.start will find us.
		return
	}
	var s startMessage
	if err := json.Unmarshal(m.Data, &s); err != nil {
		r.log.Warn("ignoring a malformed router announcement", "subject", m.Subject, "err", err)
		return
	}
	r.mu.Lock()
	r.adopt(s)
	iv, stale := r.intervalLocked(), r.staleLocked()
	r.mu.Unlock()
	r.log.Info("router announced itself; re-registering all routes", "router", s.ID,
		"interval", iv, "stale_threshold_s", stale)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// adopt remembers what a router asked for. Routers announce themselves only
// when they start, so one that went away is never heard of again: only the
// most recent maxRouters are remembered, which bounds the map across years
// of router restarts (each comes back under a new id).
func (r *Registrar) adopt(s startMessage) {
	r.seq++
	r.routers[s.ID] = routerInfo{
		interval: time.Duration(s.MinimumRegisterIntervalInSeconds) * time.Second,
		prune:    time.Duration(s.PruneThresholdInSeconds) * time.Second,
		seq:      r.seq,
	}
	for len(r.routers) > maxRouters {
		oldest, seq := "", r.seq
		for id, ri := range r.routers {
			if ri.seq < seq {
				oldest, seq = id, ri.seq
			}
		}
		delete(r.routers, oldest)
	}
}

// intervalLocked is the re-send period: the smallest any router asked for,
// else the default.
func (r *Registrar) intervalLocked() time.Duration {
	iv := time.Duration(0)
	for _, ri := range r.routers {
		if ri.interval > 0 && (iv == 0 || ri.interval < iv) {
			iv = ri.interval
		}
	}
	if iv == 0 {
		return r.defaultInterval
	}
	return iv
}

// staleLocked is stale_threshold_in_seconds; see the package comment.
func (r *Registrar) staleLocked() int {
	prune := time.Duration(0)
	for _, ri := range r.routers {
		prune = max(prune, ri.prune)
	}
	if prune == 0 {
		prune = DefaultPruneThreshold
	}
	s := max(3*r.intervalLocked(), prune)
	return int((s + time.Second - 1) / time.Second)
}

// Interval is the current re-registration period.
func (r *Registrar) Interval() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.intervalLocked()
}

func (r *Registrar) loop(ctx context.Context) {
	defer close(r.done)
	t := time.NewTimer(r.Interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.quit:
			return
		case <-t.C:
		case <-r.kick:
		}
		r.resendAll()
		t.Reset(r.Interval())
	}
}

// resendAll publishes every route again, with the current stale threshold
// and tags.
func (r *Registrar) resendAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	stale := r.staleLocked()
	for _, m := range r.routes {
		m.StaleThresholdInSeconds = stale
		if err := r.publishLocked(SubjectRegister, m); err != nil {
			r.log.Warn("re-registration failed; next interval retries", "id", m.PrivateInstanceID, "err", err)
			return
		}
	}
}

// Reconnected re-greets the routers and re-sends every route at once; wire
// it to the connection's reconnect handler, since routers may have pruned
// us while we were away.
func (r *Registrar) Reconnected() {
	r.mu.Lock()
	started, inbox := r.started && !r.closed, r.inbox
	r.mu.Unlock()
	if !started {
		return
	}
	if err := r.nc.PublishRequest(SubjectGreet, inbox, nil); err != nil {
		r.log.Warn("greeting the routers after a reconnect failed", "err", err)
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Register announces rt to the routers now and keeps re-announcing it
// every interval until Unregister. Registering an id again replaces its
// route (as Update). A route the routers could not use is refused with
// ErrInvalid naming the field, and changes nothing.
//
// A publish error (the connection was closed) is returned, but the route
// stays in the set: it is what the caller wants announced, and the next
// interval sends it.
func (r *Registrar) Register(rt Route) error {
	return r.put(rt, false)
}

// Update replaces the route of a registered id. A change the routers route
// by (host, port, uris, app, index) is published at once, with
// router.unregister for what the old route had and the new one lacks; a
// change of tags only (the load, every report) waits for the next
// re-registration, which carries it — sending it at once would multiply
// the bus traffic by interval/report period for values gorouter ignores.
//
// Update never registers: an id that is not registered (never, or
// withdrawn because it stopped or turned unhealthy) gets ErrNotRegistered,
// so a load report racing with an Unregister cannot bring the route back.
func (r *Registrar) Update(rt Route) error {
	return r.put(rt, true)
}

func (r *Registrar) put(rt Route, update bool) error {
	m, err := r.build(rt)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	m.StaleThresholdInSeconds = r.staleLocked()
	if err := r.checkSize(m); err != nil {
		return err
	}
	old, had := r.routes[m.PrivateInstanceID]
	if update && !had {
		return fmt.Errorf("%w: %s", ErrNotRegistered, rt.ID)
	}
	r.routes[m.PrivateInstanceID] = m
	if update && sameRouting(old, m) {
		return nil
	}
	if had {
		// Withdraw what the new route no longer covers before announcing it,
		// so no router is left pointing at an old address or uri.
		if gone := withdrawn(old, m); len(gone.URIs) > 0 {
			if err := r.publishLocked(SubjectUnregister, gone); err != nil {
				return err
			}
		}
	}
	return r.publishLocked(SubjectRegister, m)
}

// sameRouting tells whether two registrations route the same requests to
// the same place (they may differ in tags and stale threshold).
func sameRouting(a, b message) bool {
	return a.Host == b.Host && a.Port == b.Port && slices.Equal(a.URIs, b.URIs) &&
		a.App == b.App && a.PrivateInstanceIndex == b.PrivateInstanceIndex &&
		a.AvailabilityZone == b.AvailabilityZone
}

// withdrawn is the unregistration of what old routes and next does not: all
// of old when the address changed, else its uris next lacks.
func withdrawn(old, next message) message {
	if old.Host != next.Host || old.Port != next.Port {
		return old
	}
	gone := old
	gone.URIs = nil
	for _, u := range old.URIs {
		if !slices.Contains(next.URIs, u) {
			gone.URIs = append(gone.URIs, u)
		}
	}
	return gone
}

// Unregister withdraws id's route now (router.unregister with the host,
// port and uris it was registered with) and stops re-sending it. An id
// that is not registered is a no-op: stop, exit, OOM and a failing health
// check may all withdraw the same instance. The route is dropped even when
// the publish fails (the connection was closed): not re-sent, the routers
// prune it after the stale threshold.
func (r *Registrar) Unregister(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	m, ok := r.routes[id]
	if !ok {
		return nil
	}
	delete(r.routes, id)
	return r.publishLocked(SubjectUnregister, m)
}

// UnregisterAll withdraws every route, for taking the host out of service
// (an agent restart should not: see Close).
func (r *Registrar) UnregisterAll() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	var errs []error
	for id, m := range r.routes {
		delete(r.routes, id)
		if err := r.publishLocked(SubjectUnregister, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// IDs returns the registered ids, sorted.
func (r *Registrar) IDs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.routes))
}

// Close stops re-sending and listening to routers, and leaves every route
// registered: the instances keep running across an agent restart, and the
// routers keep routing to them until the stale threshold, by which time
// the next agent has registered them again. It does not close the
// connection.
func (r *Registrar) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	started := r.started
	r.unsubscribe()
	close(r.quit)
	r.mu.Unlock()
	if started {
		<-r.done
	}
	return nil
}

func (r *Registrar) publishLocked(subject string, m message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("router: encode %s: %w", subject, err)
	}
	if err := r.nc.Publish(subject, b); err != nil {
		return fmt.Errorf("router: %s %s: %w", subject, m.PrivateInstanceID, err)
	}
	return nil
}

// checkSize refuses a registration the server would refuse to carry.
func (r *Registrar) checkSize(m message) error {
	limit := r.nc.MaxPayload() // 0 until connected: the server decides then
	if limit == 0 {
		return nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("router: encode: %w", err)
	}
	if int64(len(b)) > limit {
		return fmt.Errorf("%w: uris: registration is %d bytes, over the server's max_payload %d", ErrInvalid, len(b), limit)
	}
	return nil
}

// build checks rt and turns it into gorouter's message.
func (r *Registrar) build(rt Route) (message, error) {
	bad := func(field, format string, args ...any) (message, error) {
		return message{}, fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
	}
	if rt.ID == "" {
		return bad("id", "empty")
	}
	if rt.Name == "" {
		return bad("name", "empty")
	}
	if rt.Index < 0 {
		return bad("index", "must be >= 0, got %d", rt.Index)
	}
	host := rt.Host
	if host == "" {
		host = r.host
	} else if err := checkHost(host); err != nil {
		return message{}, err
	}
	if rt.Port < 1 || rt.Port > 65535 {
		return bad("port", "must be in [1, 65535], got %d", rt.Port)
	}
	if len(rt.URIs) == 0 {
		return bad("uris", "none; an instance without routes is not registered")
	}
	for i, u := range rt.URIs {
		if u == "" || strings.ContainsAny(u, " \t\r\n") || strings.Contains(u, "://") {
			return bad(fmt.Sprintf("uris[%d]", i), "%q is not a route (host or host/path, no scheme)", u)
		}
	}
	tags := make(map[string]string, len(rt.Tags)+1)
	for k, v := range rt.Tags {
		if k == "" {
			return bad("tags", "empty key")
		}
		if k == "component" && v != Component {
			return bad("tags.component", "reserved for %q, got %q", Component, v)
		}
		tags[k] = v
	}
	tags["component"] = Component
	return message{
		Host:                 host,
		Port:                 uint16(rt.Port),
		URIs:                 slices.Clone(rt.URIs),
		App:                  rt.Name,
		PrivateInstanceID:    rt.ID,
		PrivateInstanceIndex: strconv.Itoa(rt.Index),
		AvailabilityZone:     r.az,
		Tags:                 tags,
	}, nil
}

// checkHost accepts an IP address or a DNS name.
func checkHost(h string) error {
	if net.ParseIP(h) != nil {
		return nil
	}
	ok := len(h) <= 253 && h != ""
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			ok = false
			break
		}
	}
	if !ok {
		return fmt.Errorf("%w: host: %q is neither an IP address nor a host name", ErrInvalid, h)
	}
	return nil
}

// DefaultHost returns the first IPv4 address of an interface that is up and
// not loopback (interfaces in the kernel's order): the address routers on
// other hosts can reach instances at when nothing is configured.
func DefaultHost() (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("router: list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			if ip4 := ipn.IP.To4(); ip4 != nil && !ip4.IsLoopback() && !ip4.IsLinkLocalUnicast() {
				return ip4.String(), nil
			}
		}
	}
	return "", ErrNoHostAddress
}
