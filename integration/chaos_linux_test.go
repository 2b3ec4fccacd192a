package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/testagent"
	"github.com/hostward/ward/internal/testroot"
)

// The chaos test's slice of the host: a uid pool and port range no other
// test uses.
const (
	chaosUIDMin  = 21000 // testagent.Config leases [21000, 21999]
	chaosPortMin = 45000
	chaosPortMax = 45999
)

// Knobs: a test takes no flags comfortably through scripts.
const (
	chaosOpsEnv  = "WARD_CHAOS_OPS"  // operations to run (default 100)
	chaosSeedEnv = "WARD_CHAOS_SEED" // seed of the operation stream (default: the clock)
)

// chaosCrashPoints are the agent's crash points (agent/crashpoint.go): an
// agent armed with one SIGKILLs itself there.
var chaosCrashPoints = []string{
	"start:recorded", "start:cgroup", "start:spawned", "start:announced", "start:running",
	"stop:recorded", "stop:terminated", "release:cgroup", "release:dir", "rollback:removed",
	"limit:announced", "limit:recorded",
}

// Operation kinds.
const (
	opStart         = "start"          // a sleeper
	opStartStubborn = "start-stubborn" // ignores SIGTERM: a stop must kill it
	opStartOOM      = "start-oom"      // runs out of memory, at once or later
	opStartExit     = "start-exit"     // ends by itself: code 0, code 3, SIGKILL
	opStartAgain    = "start-again"    // an earlier start request again
	opStop          = "stop"
	opLimit         = "limit"
	opAgentKill     = "agent-kill"  // SIGKILL after a random delay, requests in flight
	opAgentCrash    = "agent-crash" // restart with a random crash point armed
	opBusKill       = "bus-kill"    // the NATS server dies; back after a pause
)

var chaosMix = []struct {
	kind   string
	weight int
}{
	{opStart, 20}, {opStartStubborn, 5}, {opStartOOM, 7}, {opStartExit, 7}, {opStartAgain, 3},
	{opStop, 26}, {opLimit, 14},
	{opAgentKill, 6}, {opAgentCrash, 7}, {opBusKill, 3},
}

// maxStoppable bounds the long-lived instances: beyond it starts turn into
// stops, so a long run does not pile up hundreds of sleepers.
const maxStoppable = 60

// chaosOp is one operation, fully decided by the seeded generator before
// it runs: a replay makes the same operations (their timing against the
// agent's own work can differ).
type chaosOp struct {
	kind       string
	viaBus     bool
	start      api.Request
	stop       api.StopRequest
	limit      api.LimitRequest
	delay      time.Duration // agent-kill: until the kill; bus-kill: the outage
	crashpoint string
}

// TestChaos runs a seeded stream of random operations against the real
// ward agent — starts of sleepers, SIGTERM-deaf, OOM-ing and self-ending
// instances, stops with random grace, limit changes, SIGKILLs of the agent
// at random moments with requests in flight, restarts with a crash point
// armed inside a start, stop or release, kills of the NATS server — and
// after every agent restart, and at the end, proves the invariants of
// chaosChecker. Requests go over the bus or the local socket.
//
// WARD_CHAOS_OPS sets the number of operations (default 100), and
// WARD_CHAOS_SEED the seed (default: the clock; always printed). A failure
// prints the seed and the command that replays it.
func TestChaos(t *testing.T) {
	testroot.Require(t)
	ops := 100
	if s := os.Getenv(chaosOpsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", chaosOpsEnv, s)
		}
		ops = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(chaosSeedEnv); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: want an unsigned number", chaosSeedEnv, s)
		}
		seed = n
	}
	// On stderr at once: a run cut short by the test timeout still says
	// which seed it was.
	fmt.Fprintf(os.Stderr, "chaos: seed=%d ops=%d\n", seed, ops)
	began := time.Now()

	r := startReaper(t) // first: its cleanup reaps what the others kill
	cfg := testagent.Config(t, chaosUIDMin)
	cfg.Ports.Min, cfg.Ports.Max = chaosPortMin, chaosPortMax
	cfg.Stop.Timeout = config.Duration(time.Second)
	bus := newChaosBus(t)
	cfg.NATS.Servers = []string{bus.url()}

	nc, err := nats.Connect(bus.url(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A stream, on disk, holds every event the agent hands to the bus: a
	// plain subscriber would miss those confirmed while it was itself
	// reconnecting after a bus kill.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "CHAOS_EVENTS", Subjects: []string{"ward." + cfg.HostID + ".events.>"}, Storage: jetstream.FileStorage,
	})
	cancel()
	if err != nil {
		t.Fatal(err)
	}

	d := &chaosDriver{
		t:        t,
		seed:     seed,
		ops:      ops,
		rng:      rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)),
		cfg:      cfg,
		bus:      bus,
		nc:       nc,
		stream:   stream,
		agent:    newChaosAgent(t, cfg, "report: {interval: 250ms}\noom: {policy: kill}\n", r),
		check:    newChaosChecker(cfg),
		sem:      make(chan struct{}, 4),
		counts:   map[string]int{},
		outcomes: map[string]map[string]int{},
		hits:     map[string]int{},
		known:    map[string]bool{},
	}
	if err := d.agent.start(""); err != nil {
		d.fatalf("first agent: %v", err)
	}
	d.newEpoch()
	for i := 0; i < ops; i++ {
		d.op = i + 1
		d.ensureAgent()
		op := d.next(i)
		d.counts[op.kind]++
		d.do(op)
		time.Sleep(time.Duration(d.rng.IntN(30)) * time.Millisecond)
		if d.op%100 == 0 && d.op < ops {
			t.Logf("chaos: %d/%d ops, %d restarts, %d checks, %d violations", d.op, ops, d.restarts, d.checks, len(d.violations))
		}
	}
	d.finish()
	d.report(time.Since(began))
}

type chaosDriver struct {
	t     *testing.T
	seed  uint64
	ops   int
	rng   *rand.Rand
	cfg   *config.Config
	bus   *chaosBus
	nc    *nats.Conn
	agent *chaosAgent
	check *chaosChecker

	stream    jetstream.Stream
	streamSeq uint64 // stream messages read so far

	// The model: what was asked, decided by the generator alone.
	starts    []api.Request
	stoppable []string // long-lived instances not yet asked to stop

	// Requests in flight to the current agent.
	epoch    context.Context
	inflight sync.WaitGroup
	sem      chan struct{}
	timers   []*time.Timer

	mu       sync.Mutex
	outcomes map[string]map[string]int // kind → "ok" | error code | "unreachable" → count
	internal []string                  // internal errors: worth a look even when no invariant breaks

	op                     int
	counts                 map[string]int
	restarts, diedStarting int
	checks                 int
	hits                   map[string]int // crash point → times the agent died there
	violations             []string
	known                  map[string]bool // violations already reported
	logShown               bool            // the agent log was shown with the first violations
}

func (d *chaosDriver) fatalf(format string, args ...any) {
	d.t.Helper()
	d.t.Fatalf("%s\nchaos: FAILED seed=%d ops=%d at op %d; replay: %s", fmt.Sprintf(format, args...), d.seed, d.ops, d.op, d.replay())
}

func (d *chaosDriver) replay() string {
	return fmt.Sprintf("scripts/chaos --ops %d --seed %d", d.ops, d.seed)
}

// next draws operation i. Only the driver's goroutine draws from rng, and
// nothing but the seed decides a draw.
func (d *chaosDriver) next(i int) chaosOp {
	total := 0
	for _, m := range chaosMix {
		total += m.weight
	}
	n := d.rng.IntN(total)
	var kind string
	for _, m := range chaosMix {
		if n < m.weight {
			kind = m.kind
			break
		}
		n -= m.weight
	}
	op := chaosOp{kind: kind, viaBus: d.rng.IntN(10) < 7}
	if (kind == opStartAgain || kind == opStop || kind == opLimit) && len(d.starts) == 0 {
		// Nothing to repeat, stop or change yet.
		op.kind = opStart
		op.start = d.newStart(opStart, i)
		return op
	}
	switch kind {
	case opStart, opStartStubborn, opStartOOM, opStartExit:
		if len(d.stoppable) >= maxStoppable {
			op.kind = opStop
			op.stop = d.nextStop()
			return op
		}
		op.start = d.newStart(kind, i)
	case opStartAgain:
		op.start = d.starts[d.rng.IntN(len(d.starts))]
		if long := op.start.Name == "sleeper" || op.start.Name == "stubborn"; long && !contains(d.stoppable, op.start.ID) {
			d.stoppable = append(d.stoppable, op.start.ID)
		}
	case opStop:
		op.stop = d.nextStop()
	case opLimit:
		op.limit = d.nextLimit()
	case opAgentKill:
		op.delay = time.Duration(d.rng.IntN(200)) * time.Millisecond
	case opAgentCrash:
		op.crashpoint = chaosCrashPoints[d.rng.IntN(len(chaosCrashPoints))]
	case opBusKill:
		op.delay = time.Duration(50+d.rng.IntN(1950)) * time.Millisecond
	}
	return op
}

func (d *chaosDriver) newStart(kind string, i int) api.Request {
	mib := func(lo, hi int) *int64 { v := int64(lo+d.rng.IntN(hi-lo+1)) << 20; return &v }
	req := api.Request{ID: fmt.Sprintf("c%05d", i), Index: i % 10}
	switch kind {
	case opStart:
		req.Name = "sleeper"
		req.Command = []string{"sleep", "100000"}
		if d.rng.IntN(3) == 0 {
			req.Port = new(int)
		}
		if d.rng.IntN(2) == 0 {
			req.Limits.MemoryBytes = mib(32, 256)
		}
	case opStartStubborn:
		req.Name = "stubborn"
		// An ignored signal stays ignored across exec.
		req.Command = []string{"sh", "-c", "trap '' TERM; exec sleep 100000"}
	case opStartOOM:
		req.Name = "hog"
		req.Limits.MemoryBytes = mib(16, 48)
		// tail buffers its input looking for a newline: /dev/zero has none.
		switch d.rng.IntN(3) {
		case 0:
			req.Command = []string{"tail", "/dev/zero"}
		case 1:
			req.Command = []string{"sh", "-c", fmt.Sprintf("sleep %.3f; exec tail /dev/zero", 0.1+d.rng.Float64()*3)}
		default:
			// A child runs out of memory; under policy kill the whole
			// instance ends with it.
			req.Command = []string{"sh", "-c", "tail /dev/zero; exec sleep 100000"}
		}
	case opStartExit:
		req.Name = "short"
		// Mostly within one agent's life (its own exit status is known
		// then), sometimes across a restart (then it is not).
		wait := 0.02 + d.rng.Float64()*0.6
		switch d.rng.IntN(3) {
		case 0:
			req.Command = []string{"sh", "-c", fmt.Sprintf("sleep %.3f; exit 0", wait)}
		case 1:
			req.Command = []string{"sh", "-c", fmt.Sprintf("sleep %.3f; echo failing >&2; exit 3", wait)}
		default:
			req.Command = []string{"sh", "-c", fmt.Sprintf("sleep %.3f; kill -KILL $$", wait)}
		}
	}
	d.starts = append(d.starts, req)
	switch kind {
	case opStart, opStartStubborn:
		d.stoppable = append(d.stoppable, req.ID)
		d.check.expectEnd(req.ID, api.StateStopped)
	case opStartOOM:
		d.check.expectEnd(req.ID, api.StateOOMKilled, api.StateStopped)
	case opStartExit:
		// A status nobody saw (the agent was down) reads as exited.
		d.check.expectEnd(req.ID, api.StateExited, api.StateCrashed, api.StateStopped)
	}
	return req
}

// nextStop stops a long-lived instance mostly, any instance ever started
// sometimes (ended, rolled back or never made: the agent must cope).
func (d *chaosDriver) nextStop() api.StopRequest {
	var id string
	if len(d.stoppable) > 0 && d.rng.IntN(100) < 85 {
		k := d.rng.IntN(len(d.stoppable))
		id = d.stoppable[k]
		d.stoppable = append(d.stoppable[:k], d.stoppable[k+1:]...)
	} else {
		id = d.starts[d.rng.IntN(len(d.starts))].ID
	}
	req := api.StopRequest{ID: id}
	if k := d.rng.IntN(7); k > 0 {
		ms := []int64{0, 1, 20, 100, 300, 1000}[k-1]
		req.TimeoutMS = &ms
	}
	return req
}

func (d *chaosDriver) nextLimit() api.LimitRequest {
	var id string
	if len(d.stoppable) > 0 && d.rng.IntN(100) < 85 {
		id = d.stoppable[d.rng.IntN(len(d.stoppable))]
	} else {
		id = d.starts[d.rng.IntN(len(d.starts))].ID
	}
	v := func(x int64) *int64 { return &x }
	var l api.Limits
	if d.rng.IntN(2) == 0 {
		l.MemoryBytes = v(int64(32+d.rng.IntN(481)) << 20)
	}
	if d.rng.IntN(2) == 0 {
		l.CPUShares = v(int64(2 + d.rng.IntN(2047)))
	}
	if d.rng.IntN(3) == 0 {
		l.CPUMillicores = v(0)
		if d.rng.IntN(2) == 0 {
			l.CPUMillicores = v(int64(100 + d.rng.IntN(1901)))
		}
	}
	if d.rng.IntN(2) == 0 {
		l.Pids = v(int64(8 + d.rng.IntN(249)))
	}
	if l == (api.Limits{}) {
		l.MemoryBytes = v(128 << 20)
	}
	return api.LimitRequest{ID: id, Limits: l}
}

// do runs op: requests on their own goroutine (at most cap(sem) at once),
// agent and bus faults on the driver's.
func (d *chaosDriver) do(op chaosOp) {
	switch op.kind {
	case opAgentKill:
		gen := d.agent.generation()
		d.timers = append(d.timers, time.AfterFunc(op.delay, func() { d.agent.killGen(gen) }))
		return
	case opAgentCrash:
		d.restart(op.crashpoint, "crash point "+op.crashpoint+" armed")
		return
	case opBusKill:
		if err := d.bus.kill(op.delay); err != nil {
			d.fatalf("bus: %v", err)
		}
		return
	}
	select {
	case d.sem <- struct{}{}:
	case <-d.epoch.Done():
		// The agent died while the driver waited: the request goes to the
		// next one.
		d.ensureAgent()
		d.sem <- struct{}{}
	}
	ctx := d.epoch
	viaBus := op.viaBus && d.bus.isUp() && d.nc.IsConnected()
	d.inflight.Add(1)
	go func() {
		defer func() { <-d.sem; d.inflight.Done() }()
		ctx, cancel := context.WithTimeout(ctx, cgtest.Timeout(30*time.Second))
		defer cancel()
		var (
			inst *api.Instance
			err  error
		)
		switch op.kind {
		case opStop:
			inst, err = d.call(ctx, viaBus, "stop", op.stop)
			if err == nil {
				d.check.ack(chaosAck{method: "stop", id: op.stop.ID, state: inst.State})
			}
		case opLimit:
			inst, err = d.call(ctx, viaBus, "limit", op.limit)
		default:
			inst, err = d.call(ctx, viaBus, "start", op.start)
			if err == nil {
				d.check.ack(chaosAck{method: "start", id: op.start.ID, state: inst.State})
			}
		}
		d.tally(op.kind, err)
	}()
}

// call sends one request over the bus or the local socket.
func (d *chaosDriver) call(ctx context.Context, viaBus bool, method string, req any) (*api.Instance, error) {
	if !viaBus {
		c := d.agent.client
		switch r := req.(type) {
		case api.Request:
			return c.Start(ctx, r)
		case api.StopRequest:
			return c.Stop(ctx, r)
		case api.LimitRequest:
			return c.Limit(ctx, r)
		}
		return nil, fmt.Errorf("no method for %T", req)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	msg, err := d.nc.RequestWithContext(ctx, "ward."+d.cfg.HostID+"."+method, body)
	if err != nil {
		return nil, err
	}
	if code := msg.Header.Get("Nats-Service-Error-Code"); code != "" {
		return nil, &api.Error{Code: api.Code(code), Message: msg.Header.Get("Nats-Service-Error")}
	}
	inst := new(api.Instance)
	if err := json.Unmarshal(msg.Data, inst); err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	return inst, nil
}

// tally counts a request's outcome. Errors are expected — an agent dies
// under requests, a stop overtakes a limit — and prove nothing either way;
// the invariants do.
func (d *chaosDriver) tally(kind string, err error) {
	outcome := "ok"
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
		outcome = string(ae.Code)
	case err != nil:
		outcome = "unreachable"
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.outcomes[kind] == nil {
		d.outcomes[kind] = map[string]int{}
	}
	d.outcomes[kind][outcome]++
	if outcome == string(api.CodeInternal) {
		d.internal = append(d.internal, fmt.Sprintf("%s: %v", kind, err))
	}
}

// newEpoch starts a context for the current agent's requests that ends
// when the agent does: requests to a dead agent are abandoned at once, not
// left to time out.
func (d *chaosDriver) newEpoch() {
	ctx, cancel := context.WithCancel(context.Background())
	d.epoch = ctx
	done := d.agent.done()
	go func() {
		<-done
		cancel()
	}()
}

// ensureAgent restarts a dead agent — killed by a timer, or by its armed
// crash point — and checks the invariants over what it reconciled.
func (d *chaosDriver) ensureAgent() {
	if d.agent.alive() {
		return
	}
	why := "SIGKILL"
	if cp := d.agent.crashedAt(); cp != "" {
		d.hits[cp]++
		why = "died at crash point " + cp
	}
	d.restart("", why)
}

// restart kills the agent if it runs, waits for its requests, starts a new
// one (with crashpoint armed) and checks the invariants.
func (d *chaosDriver) restart(crashpoint, why string) {
	d.agent.kill()
	d.inflight.Wait()
	d.restarts++
	err := d.agent.start(crashpoint)
	if errors.Is(err, errDiedStarting) {
		// It died finishing an interrupted release during reconcile.
		d.hits[crashpoint]++
		d.diedStarting++
		err = d.agent.start("")
	}
	if err != nil {
		d.fatalf("restart %d: %v", d.restarts, err)
	}
	d.newEpoch()
	d.checkpoint(fmt.Sprintf("after restart %d (%s)", d.restarts, why), false)
}

// checkpoint evaluates the invariants until they hold or a bound passes —
// exits, OOM kills and release retries settle on their own, and the outbox
// drains — and records what still does not hold. A check during which the
// agent died (an armed crash point) proves nothing: the next restart
// checks again.
func (d *chaosDriver) checkpoint(stage string, final bool) (checked bool) {
	if err := d.bus.up(); err != nil {
		d.fatalf("bus: %v", err)
	}
	gen := d.agent.generation()
	deadline := time.Now().Add(cgtest.Timeout(20 * time.Second))
	var fresh []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(5*time.Second))
		serr := d.pullEvents(ctx)
		l, lerr := d.agent.client.List(ctx)
		cancel()
		var list []api.Instance
		if l != nil {
			list = l.Instances
		}
		v := d.check.violations(list, lerr, final)
		if serr != nil {
			v = append(v, "events stream: "+serr.Error())
		}
		if !d.agent.alive() || d.agent.generation() != gen {
			return false
		}
		fresh = fresh[:0]
		for _, x := range v {
			if !d.known[x] {
				fresh = append(fresh, x)
			}
		}
		if len(fresh) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.checks++
	if len(fresh) == 0 {
		return true
	}
	for _, x := range fresh {
		d.known[x] = true
		d.violations = append(d.violations, fmt.Sprintf("op %d, %s: %s", d.op, stage, x))
	}
	if !d.logShown {
		d.logShown = true
		d.t.Logf("chaos: first violations at op %d (%s); agent log tail:\n%s", d.op, stage, d.agent.logTail(6000))
	}
	return true
}

// pullEvents reads the stream messages not read yet.
func (d *chaosDriver) pullEvents(ctx context.Context) error {
	info, err := d.stream.Info(ctx)
	if err != nil {
		return err
	}
	for seq := d.streamSeq + 1; seq <= info.State.LastSeq; seq++ {
		m, err := d.stream.GetMsg(ctx, seq)
		if err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
		var e api.Event
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return fmt.Errorf("message %d: %w", seq, err)
		}
		d.check.addEvent(e)
		d.streamSeq = seq
	}
	return nil
}

// finish ends the run: a clean agent, a check with the instances still
// running, then everything stopped and a check that nothing is held.
func (d *chaosDriver) finish() {
	for _, tm := range d.timers {
		tm.Stop()
	}
	d.op = d.ops
	d.ensureAgent()
	if d.agent.armedPoint() != "" {
		d.restart("", "end of run: disarmed")
	}
	d.inflight.Wait()
	// A kill timer already running when it was stopped may still strike
	// once.
	for try := 0; !d.checkpoint("end, instances running", false); try++ {
		if try == 3 {
			d.fatalf("end: the agent keeps dying")
		}
		d.ensureAgent()
	}

	ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(60*time.Second))
	defer cancel()
	l, err := d.agent.client.List(ctx)
	if err != nil {
		d.fatalf("end: list: %v", err)
	}
	zero := int64(0)
	for _, in := range l.Instances {
		if in.State.Terminal() {
			continue
		}
		inst, err := d.agent.client.Stop(ctx, api.StopRequest{ID: in.ID, TimeoutMS: &zero})
		if err != nil {
			d.violations = append(d.violations, fmt.Sprintf("end: stop %s: %v", in.ID, err))
			continue
		}
		d.check.ack(chaosAck{method: "stop", id: in.ID, state: inst.State})
	}
	if !d.checkpoint("end, everything stopped", true) {
		d.fatalf("end: the agent died during the last check")
	}
}

func (d *chaosDriver) report(wall time.Duration) {
	t := d.t
	kinds := make([]string, 0, len(d.counts))
	for k := range d.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var parts []string
	d.mu.Lock()
	for _, k := range kinds {
		var outs []string
		for o, n := range d.outcomes[k] {
			outs = append(outs, fmt.Sprintf("%s %d", o, n))
		}
		sort.Strings(outs)
		s := fmt.Sprintf("%s %d", k, d.counts[k])
		if len(outs) > 0 {
			s += " (" + strings.Join(outs, ", ") + ")"
		}
		parts = append(parts, s)
	}
	internal := append([]string(nil), d.internal...)
	d.mu.Unlock()
	var hits []string
	nhits := 0
	for _, cp := range chaosCrashPoints {
		if n := d.hits[cp]; n > 0 {
			hits = append(hits, fmt.Sprintf("%s %d", cp, n))
			nhits += n
		}
	}
	last, _, _ := readOutbox(d.cfg.StateDir + "/outbox")
	ended := map[api.State]int{}
	recs := d.check.readRecords(func(string, ...any) {})
	for _, r := range recs {
		ended[r.State]++
	}
	var states []string
	for s, n := range ended {
		states = append(states, fmt.Sprintf("%s %d", s, n))
	}
	sort.Strings(states)
	t.Logf("chaos: seed=%d ops=%d wall=%s", d.seed, d.ops, wall.Round(100*time.Millisecond))
	t.Logf("chaos: ops: %s", strings.Join(parts, "; "))
	t.Logf("chaos: instances %d of %d start requests (%s); the rest were never made or rolled back",
		len(recs), len(d.starts), strings.Join(states, ", "))
	t.Logf("chaos: agent restarts %d; died at crash points %d (%s), %d of them during startup reconcile; bus kills %d; checks %d; events 1..%d",
		d.restarts, nhits, strings.Join(hits, ", "), d.diedStarting, d.bus.kills, d.checks, last)
	for _, e := range internal {
		t.Logf("chaos: internal error: %s", e)
	}
	t.Logf("chaos: violations %d", len(d.violations))
	if len(d.violations) > 0 {
		for _, v := range d.violations {
			t.Error(v)
		}
		t.Errorf("chaos: FAILED seed=%d ops=%d; replay: %s", d.seed, d.ops, d.replay())
	}
}
