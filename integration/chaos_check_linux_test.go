package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/leakcheck"
	"github.com/hostward/ward/internal/testagent"
)

// chaosRecord is what the invariant checker reads of an agent's instance
// record: the JSON the agent writes to <state_dir>/records/<id>.json, its
// durable truth, decoded read-only.
type chaosRecord struct {
	Version int `json:"version"`
	Spec    struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Index int    `json:"index"`
	} `json:"spec"`
	Limits    api.Limits `json:"limits"`
	State     api.State  `json:"state"`
	PID       int        `json:"pid"`
	StartTime uint64     `json:"start_time"`
	UID       int        `json:"uid"`
	Port      int        `json:"port"`
	Cgroup    string     `json:"cgroup"`
	Dir       string     `json:"dir"`
	StartedAt *time.Time `json:"started_at"`
	Released  bool       `json:"released"`
}

// chaosAck is a request the agent acknowledged: what it promised then must
// survive any crash after.
type chaosAck struct {
	method string // start | stop
	id     string
	state  api.State // as replied
}

// chaosChecker proves the invariants of a host at rest — nothing in
// flight, an agent that has reconciled: every cgroup under the parent has a
// live record and every live record its cgroups; every uid and port is held
// by one live record; no instance dir without a live record; a running
// record's main process lives, in its cgroup, and a terminal one's does
// not; no process of the uid pool outside a live instance's cgroup; the
// kernel's limits are the recorded ones; every event sequence number up to
// the outbox's last was delivered, every start and end on record was
// announced, and a live instance's last limit_changed announced the limits
// on record; the agent's API agrees with its records; and nothing
// acknowledged was undone.
type chaosChecker struct {
	cfg  *config.Config
	mode cgroup.Mode

	mu        sync.Mutex
	delivered map[uint64]api.Event      // first delivery of each seq
	kinds     map[string]map[string]int // id → event kind → deliveries
	// An id can be started again once an earlier instance under it ended
	// or was rolled back; these keep to the events of the latest one.
	started map[string]uint64    // id → seq of its latest started event
	ends    map[string]api.Event // id → its first end event after that
	limits  map[string]api.Event // id → its last limit_changed after that
	acks    []chaosAck
	allowed map[string][]api.State // id → the terminal states its program can end in
}

func newChaosChecker(cfg *config.Config) *chaosChecker {
	return &chaosChecker{
		cfg:       cfg,
		mode:      cgtest.Mode(),
		delivered: map[uint64]api.Event{},
		kinds:     map[string]map[string]int{},
		started:   map[string]uint64{},
		ends:      map[string]api.Event{},
		limits:    map[string]api.Event{},
		allowed:   map[string][]api.State{},
	}
}

// expectEnd says which terminal states instance id may end in: a sleeper
// ends only when stopped, a memory hog also when it runs out of memory.
func (c *chaosChecker) expectEnd(id string, states ...api.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.allowed[id] = states
}

// addEvent records an event a subscriber received. Duplicates are fine:
// delivery is at least once.
func (c *chaosChecker) addEvent(e api.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.delivered[e.Seq]; !dup {
		c.delivered[e.Seq] = e
	}
	if c.kinds[e.ID] == nil {
		c.kinds[e.ID] = map[string]int{}
	}
	c.kinds[e.ID][e.Kind]++
	// By seq, not by arrival: a redelivery can come late.
	switch {
	case e.Kind == api.EventStarted:
		if e.Seq > c.started[e.ID] {
			c.started[e.ID] = e.Seq
			if end, ok := c.ends[e.ID]; ok && end.Seq < e.Seq {
				delete(c.ends, e.ID)
			}
			if l, ok := c.limits[e.ID]; ok && l.Seq < e.Seq {
				delete(c.limits, e.ID)
			}
		}
	case e.Seq < c.started[e.ID]:
		// about an earlier instance under this id
	case e.Kind == api.EventLimitChanged:
		if e.Seq > c.limits[e.ID].Seq {
			c.limits[e.ID] = e
		}
	case e.State.Terminal():
		if end, ok := c.ends[e.ID]; !ok || e.Seq < end.Seq {
			c.ends[e.ID] = e
		}
	}
}

func (c *chaosChecker) ack(a chaosAck) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acks = append(c.acks, a)
}

// violations evaluates every invariant once against the host as it is now.
// list is the agent's answer to `list` (listErr its failure). With final,
// nothing may be live any more.
func (c *chaosChecker) violations(list []api.Instance, listErr error, final bool) []string {
	var v []string
	add := func(format string, args ...any) { v = append(v, fmt.Sprintf(format, args...)) }

	recs := c.readRecords(add)
	ids := make([]string, 0, len(recs))
	for id := range recs {
		ids = append(ids, id)
	}
	sort.Strings(ids)

	// Who holds what: a record not released holds its uid, port, cgroup
	// and directory.
	byCgroup := map[string]*chaosRecord{}
	byUID := map[int]*chaosRecord{}
	byPort := map[int]*chaosRecord{}
	for _, id := range ids {
		r := recs[id]
		switch {
		case r.State == api.StateStarting || r.State == api.StateStopping:
			add("record %s: left in state %s with nothing in flight", id, r.State)
		case r.State.Terminal() && !r.Released:
			add("record %s: ended %s but its release is unfinished", id, r.State)
		case !r.State.Terminal() && r.Released:
			add("record %s: released while %s", id, r.State)
		case final && !r.State.Terminal():
			add("record %s: still %s after everything was stopped", id, r.State)
		}
		if r.Released {
			continue
		}
		if o := byCgroup[r.Cgroup]; o != nil {
			add("cgroup %s: held by records %s and %s", r.Cgroup, o.Spec.ID, id)
		}
		byCgroup[r.Cgroup] = r
		if o := byUID[r.UID]; o != nil {
			add("uid %d: leased to records %s and %s", r.UID, o.Spec.ID, id)
		}
		byUID[r.UID] = r
		if r.UID < c.cfg.Users.UIDMin || r.UID > c.cfg.Users.UIDMax {
			add("record %s: uid %d outside the pool %d-%d", id, r.UID, c.cfg.Users.UIDMin, c.cfg.Users.UIDMax)
		}
		if r.Port != 0 {
			if o := byPort[r.Port]; o != nil {
				add("port %d: leased to records %s and %s", r.Port, o.Spec.ID, id)
			}
			byPort[r.Port] = r
			if r.Port < c.cfg.Ports.Min || r.Port > c.cfg.Ports.Max {
				add("record %s: port %d outside %d-%d", id, r.Port, c.cfg.Ports.Min, c.cfg.Ports.Max)
			}
		}
	}

	c.checkCgroups(recs, ids, byCgroup, add)
	c.checkDirs(recs, ids, add)
	c.checkProcesses(recs, ids, byUID, add)
	c.checkEvents(recs, ids, add)
	c.checkAPI(recs, ids, list, listErr, add)
	c.checkAcks(recs, add)
	c.checkEnds(recs, ids, add)
	return v
}

// checkEnds: an instance ended the way its program can end.
func (c *chaosChecker) checkEnds(recs map[string]*chaosRecord, ids []string, add func(string, ...any)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		r := recs[id]
		allowed, ok := c.allowed[id]
		if !ok || !r.State.Terminal() {
			continue
		}
		found := false
		for _, s := range allowed {
			found = found || s == r.State
		}
		if !found {
			add("record %s: ended %s, but %s can only end %v", id, r.State, r.Spec.Name, allowed)
		}
	}
}

// readRecords decodes every record file. A record the agent could not read
// either is a violation: it would refuse to start over it.
func (c *chaosChecker) readRecords(add func(string, ...any)) map[string]*chaosRecord {
	dir := filepath.Join(c.cfg.StateDir, "records")
	recs := map[string]*chaosRecord{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		add("records: %v", err)
		return recs
	}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, "."):
			continue // an atomic write in progress, or cut short and removed at the next start
		case strings.HasSuffix(name, ".torn"):
			add("record %s: set aside as torn, but no power was lost", name)
			continue
		case !strings.HasSuffix(name, ".json"):
			add("records: unexpected file %s", name)
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue // pruned or rolled back between the listing and now
		}
		r := new(chaosRecord)
		if err == nil {
			err = json.Unmarshal(b, r)
		}
		if err != nil || r.Spec.ID+".json" != name {
			add("record %s: unreadable (%v)", name, err)
			continue
		}
		recs[r.Spec.ID] = r
	}
	return recs
}

// checkCgroups: every group under the parent, in every hierarchy, belongs
// to a live record; every running record has its group everywhere, with
// the limits on record.
func (c *chaosChecker) checkCgroups(recs map[string]*chaosRecord, ids []string, byCgroup map[string]*chaosRecord, add func(string, ...any)) {
	for _, dir := range cgtest.Dirs(c.cfg.Cgroup.Parent) {
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			add("cgroups: %v", err)
		}
		for _, e := range ents {
			if e.IsDir() && byCgroup[e.Name()] == nil {
				add("cgroup %s: no live record owns it", filepath.Join(dir, e.Name()))
			}
		}
	}
	for _, id := range ids {
		r := recs[id]
		if r.State != api.StateRunning || r.Released {
			continue
		}
		for _, dir := range cgtest.Dirs(filepath.Join(c.cfg.Cgroup.Parent, r.Cgroup)) {
			if _, err := os.Stat(dir); err != nil {
				add("record %s: running, but its cgroup %s is missing", id, dir)
			}
		}
		c.checkLimits(r, add)
	}
}

// checkLimits compares the kernel's memory and pids limits of a running
// instance with its record: a change that reached one and not the other
// was half done.
func (c *chaosChecker) checkLimits(r *chaosRecord, add func(string, ...any)) {
	group := filepath.Join(c.cfg.Cgroup.Parent, r.Cgroup)
	type limit struct {
		file string
		want *int64
	}
	var ls []limit
	if c.mode == cgroup.V2 {
		dir := filepath.Join(cgtest.Root, group)
		ls = []limit{{filepath.Join(dir, "memory.max"), r.Limits.MemoryBytes}, {filepath.Join(dir, "pids.max"), r.Limits.Pids}}
	} else {
		ls = []limit{
			{filepath.Join(cgtest.Root, "memory", group, "memory.limit_in_bytes"), r.Limits.MemoryBytes},
			{filepath.Join(cgtest.Root, "pids", group, "pids.max"), r.Limits.Pids},
			{filepath.Join(cgtest.Root, "cpu", group, "cpu.shares"), r.Limits.CPUShares},
		}
	}
	for _, l := range ls {
		if l.want == nil {
			add("record %s: limit for %s missing", r.Spec.ID, filepath.Base(l.file))
			continue
		}
		b, err := os.ReadFile(l.file)
		if err != nil {
			continue // reported as a missing group
		}
		if got := strings.TrimSpace(string(b)); got != strconv.FormatInt(*l.want, 10) {
			add("record %s: %s is %s in the kernel, %d on record", r.Spec.ID, l.file, got, *l.want)
		}
	}
}

// checkDirs: every instance directory belongs to a live record, and every
// running record has its directory.
func (c *chaosChecker) checkDirs(recs map[string]*chaosRecord, ids []string, add func(string, ...any)) {
	dir := c.cfg.InstancesDir()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		add("instance dirs: %v", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if r := recs[e.Name()]; r == nil || r.Released {
			add("instance dir %s: no live record owns it", filepath.Join(dir, e.Name()))
		}
	}
	for _, id := range ids {
		r := recs[id]
		if r.State == api.StateRunning && !r.Released {
			if _, err := os.Stat(r.Dir); err != nil {
				add("record %s: running, but its directory is missing: %v", id, err)
			}
		}
	}
}

// checkProcesses: a running record's main process lives (the very one:
// same start time) inside its group, and every process in its group runs as
// its uid; an ended record's main process is gone; every live process of
// the uid pool belongs to a live record and runs inside that record's group.
func (c *chaosChecker) checkProcesses(recs map[string]*chaosRecord, ids []string, byUID map[int]*chaosRecord, add func(string, ...any)) {
	for _, id := range ids {
		r := recs[id]
		switch {
		case r.State == api.StateRunning:
			st, err := readProcStat(r.PID)
			switch {
			case err != nil:
				add("record %s: running, but its main process %d is gone", id, r.PID)
			case st.startTime != r.StartTime:
				add("record %s: running, but pid %d is another process now", id, r.PID)
			case st.state == "Z":
				add("record %s: running, but its main process %d has exited", id, r.PID)
			default:
				if cg := c.procCgroup(r.PID); cg != c.groupPath(r) {
					add("record %s: main process %d is in cgroup %q, not %q", id, r.PID, cg, c.groupPath(r))
				}
			}
			for _, pid := range c.groupProcs(r) {
				if uid, ok := leakcheck.ProcUID(pid); ok && uid != r.UID {
					add("record %s: process %d in its cgroup runs as uid %d, not %d", id, pid, uid, r.UID)
				}
			}
		case r.State.Terminal() && r.PID != 0:
			if st, err := readProcStat(r.PID); err == nil && st.startTime == r.StartTime && st.state != "Z" {
				add("record %s: %s, but its main process %d still runs", id, r.State, r.PID)
			}
		}
	}
	for _, p := range leakcheck.PoolProcesses(c.cfg.Users.UIDMin, c.cfg.Users.UIDMax) {
		r := byUID[p.UID]
		if r == nil || r.State.Terminal() {
			if _, err := readProcStat(p.PID); err == nil { // not gone meanwhile
				add("process %d: runs as pool uid %d, which no live record holds", p.PID, p.UID)
			}
			continue
		}
		if cg := c.procCgroup(p.PID); cg != "" && cg != c.groupPath(r) {
			add("process %d: runs as uid %d of record %s, but in cgroup %q", p.PID, p.UID, r.Spec.ID, cg)
		}
	}
}

func (c *chaosChecker) groupPath(r *chaosRecord) string {
	return filepath.Join(c.cfg.Cgroup.Parent, r.Cgroup)
}

// procCgroup returns pid's cgroup in the memory hierarchy (v1) or the
// unified one (v2); "" if it cannot be read.
func (c *chaosChecker) procCgroup(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if c.mode == cgroup.V2 && f[0] == "0" && f[1] == "" {
			return f[2]
		}
		if c.mode == cgroup.V1 && contains(strings.Split(f[1], ","), "memory") {
			return f[2]
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// groupProcs lists the processes in r's memory (v1) or unified (v2) group.
func (c *chaosChecker) groupProcs(r *chaosRecord) []int {
	dir := filepath.Join(cgtest.Root, c.groupPath(r))
	if c.mode == cgroup.V1 {
		dir = filepath.Join(cgtest.Root, "memory", c.groupPath(r))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// checkEvents: the outbox has handed every event to the bus, every sequence
// number from 1 to the last one handed out reached the subscriber, and every
// start and end on record was announced, consistently with the record.
func (c *chaosChecker) checkEvents(recs map[string]*chaosRecord, ids []string, add func(string, ...any)) {
	last, pending, err := readOutbox(filepath.Join(c.cfg.StateDir, "outbox"))
	if err != nil {
		add("outbox: %v", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(pending) > 0 {
		add("outbox: %d events not confirmed by the bus (seq %d..%d)", len(pending), pending[0], pending[len(pending)-1])
		last = max(last, pending[len(pending)-1])
	}
	var gaps []string
	for s := uint64(1); s <= last; s++ {
		if _, ok := c.delivered[s]; ok {
			continue
		}
		e := s
		for e+1 <= last {
			if _, ok := c.delivered[e+1]; ok {
				break
			}
			e++
		}
		if e == s {
			gaps = append(gaps, strconv.FormatUint(s, 10))
		} else {
			gaps = append(gaps, fmt.Sprintf("%d-%d", s, e))
		}
		s = e
	}
	if len(gaps) > 0 {
		add("events: seq %s of 1..%d never delivered", strings.Join(gaps, ","), last)
	}
	for s := range c.delivered {
		if s == 0 || s > last {
			add("events: seq %d delivered, but the outbox never handed it out (last %d)", s, last)
		}
	}
	for _, id := range ids {
		r := recs[id]
		if r.StartedAt != nil && c.kinds[id][api.EventStarted] == 0 {
			add("record %s: ran (started_at %s), but no started event was delivered", id, r.StartedAt.Format(time.RFC3339Nano))
		}
		if !r.State.Terminal() {
			// The last word on a live instance's limits is the truth: a
			// change announced and never recorded must have been corrected.
			if e, ok := c.limits[id]; ok && (e.Limits == nil || !reflect.DeepEqual(*e.Limits, r.Limits)) {
				add("record %s: limits on record %s, but the last limit_changed delivered (seq %d) announced %s", id, limitsText(&r.Limits), e.Seq, limitsText(e.Limits))
			}
			continue
		}
		kind := api.EndEvent(r.State)
		if c.kinds[id][kind] == 0 {
			add("record %s: ended %s, but no %s event was delivered", id, r.State, kind)
		}
		if e, ok := c.ends[id]; ok && e.State != r.State {
			add("record %s: ended %s, but its end event said %s", id, r.State, e.State)
		}
	}
	// Without a record, an instance never ran — or ran and was rolled
	// back, which is then announced by an end after its start: a consumer
	// must never be left believing it runs.
	for id, kinds := range c.kinds {
		if recs[id] != nil {
			continue
		}
		switch ends := kinds[api.EventStopped] + kinds[api.EventExited] + kinds[api.EventCrashed] + kinds[api.EventOOMKilled]; {
		case kinds[api.EventStarted] == 0:
			add("events: %v delivered about %s, which has no record and never started", kinds, id)
		case ends == 0:
			add("events: %s was announced started, has no record, and its end was never announced", id)
		}
	}
}

func limitsText(l *api.Limits) string {
	b, _ := json.Marshal(l)
	return string(b)
}

// readOutbox reads an outbox directory without touching it: the highest
// number ever confirmed ("last") and the numbers still waiting.
func readOutbox(dir string) (last uint64, pending []uint64, err error) {
	if b, err := os.ReadFile(filepath.Join(dir, "last")); err == nil {
		if last, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return 0, nil, fmt.Errorf("%s/last: %w", dir, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return 0, nil, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return last, nil, err
	}
	for _, e := range ents {
		if len(e.Name()) != 20 {
			continue
		}
		if s, err := strconv.ParseUint(e.Name(), 10, 64); err == nil {
			pending = append(pending, s)
		}
	}
	sort.Slice(pending, func(i, j int) bool { return pending[i] < pending[j] })
	return last, pending, nil
}

// checkAPI: the agent's list says what its records say.
func (c *chaosChecker) checkAPI(recs map[string]*chaosRecord, ids []string, list []api.Instance, listErr error, add func(string, ...any)) {
	if listErr != nil {
		add("list: %v", listErr)
		return
	}
	seen := map[string]bool{}
	for _, in := range list {
		seen[in.ID] = true
		r := recs[in.ID]
		if r == nil {
			add("list: shows %s (%s), which has no record", in.ID, in.State)
			continue
		}
		if in.State != r.State {
			add("list: %s is %s, its record says %s", in.ID, in.State, r.State)
		}
		if in.State.Terminal() {
			if in.UID != nil || in.Port != nil || in.PID != nil {
				add("list: %s is %s but shows uid %v port %v pid %v", in.ID, in.State, ptrString(in.UID), ptrString(in.Port), ptrString(in.PID))
			}
			continue
		}
		if in.UID == nil || *in.UID != r.UID {
			add("list: %s has uid %s, its record %d", in.ID, ptrString(in.UID), r.UID)
		}
		port := 0
		if in.Port != nil {
			port = *in.Port
		}
		if port != r.Port {
			add("list: %s has port %d, its record %d", in.ID, port, r.Port)
		}
	}
	for _, id := range ids {
		if !seen[id] {
			add("list: %s (%s on record) is missing", id, recs[id].State)
		}
	}
}

// checkAcks: an acknowledged start left an instance that exists (running
// or ended since); an acknowledged stop left it ended as replied.
func (c *chaosChecker) checkAcks(recs map[string]*chaosRecord, add func(string, ...any)) {
	c.mu.Lock()
	acks := append([]chaosAck(nil), c.acks...)
	c.mu.Unlock()
	for _, a := range acks {
		r := recs[a.id]
		switch {
		case r == nil:
			add("ack: %s of %s was acknowledged (%s), but the record is gone", a.method, a.id, a.state)
		case a.method == "stop" && r.State != a.state:
			add("ack: stop of %s replied %s, the record says %s", a.id, a.state, r.State)
		case a.method == "start" && r.State != api.StateRunning && !r.State.Terminal():
			add("ack: start of %s replied %s, the record says %s", a.id, a.state, r.State)
		}
	}
}

// TestChaosCheckerFindsViolations plants one breach of each invariant on a
// host of its own — no agent, just the files, groups and processes one
// would leave — and requires the checker to name every one, and nothing
// about the one consistent instance.
func TestChaosCheckerFindsViolations(t *testing.T) {
	cfg := testagent.Config(t, chaosUIDMin)
	records := filepath.Join(cfg.StateDir, "records")
	box := filepath.Join(cfg.StateDir, "outbox")
	for _, d := range []string{records, cfg.InstancesDir(), box} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Two processes of the pool: one no record holds, one a record says is
	// its main process but that runs outside the record's group.
	stray := sleepAs(t, chaosUIDMin+10)
	escaped := sleepAs(t, chaosUIDMin+11)
	gone := exec.Command("true")
	if err := gone.Run(); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	mib := func(n int64) *int64 { n <<= 20; return &n }
	rec := func(id string, state api.State, uid int, released bool, mutate func(*chaosRecord)) {
		r := &chaosRecord{Version: 1, State: state, UID: uid, Released: released, StartedAt: &now,
			Cgroup: id + "-0-" + id, Dir: filepath.Join(cfg.InstancesDir(), id)}
		r.Spec.ID, r.Spec.Name = id, id
		r.Limits = api.Limits{MemoryBytes: mib(64), Pids: mib(0), CPUShares: mib(0)}
		*r.Limits.Pids, *r.Limits.CPUShares = 16, 512
		if mutate != nil {
			mutate(r)
		}
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(records, id+".json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	rec("fine", api.StateStopped, chaosUIDMin+1, true, nil)
	rec("again", api.StateExited, chaosUIDMin+7, true, nil)
	rec("lost", api.StateCrashed, chaosUIDMin+2, true, nil)
	rec("dead", api.StateRunning, chaosUIDMin+3, false, func(r *chaosRecord) { r.PID, r.StartTime = gone.Process.Pid, 1 })
	rec("dup-a", api.StateStopped, chaosUIDMin+5, false, nil)
	rec("dup-b", api.StateStopped, chaosUIDMin+5, false, nil)
	rec("half", api.StateStarting, chaosUIDMin+6, false, nil)
	rec("escaped", api.StateRunning, chaosUIDMin+11, false, func(r *chaosRecord) {
		st, err := readProcStat(escaped)
		if err != nil {
			t.Fatal(err)
		}
		r.PID, r.StartTime = escaped, st.startTime
	})
	for _, group := range []string{"escaped-0-escaped", "orphan-0-orphan"} {
		for _, dir := range cgtest.Dirs(filepath.Join(cfg.Cgroup.Parent, group)) {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range []string{"escaped", "ghost"} {
		if err := os.Mkdir(filepath.Join(cfg.InstancesDir(), id), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(box, "last"), []byte("4"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(box, fmt.Sprintf("%020d", 5)), []byte("ward.h.events.stopped\n{}"), 0o600); err != nil {
		t.Fatal(err)
	}

	c := newChaosChecker(cfg)
	sixteen, shares := int64(16), int64(512)
	for _, e := range []api.Event{
		{Seq: 1, ID: "fine", Kind: api.EventStarted, State: api.StateRunning},
		{Seq: 2, ID: "fine", Kind: api.EventStopped, State: api.StateStopped},
		{Seq: 2, ID: "fine", Kind: api.EventStopped, State: api.StateStopped}, // a duplicate is fine
		{Seq: 4, ID: "lost", Kind: api.EventStarted, State: api.StateRunning},
		{Seq: 9, ID: "nobody", Kind: api.EventStopped, State: api.StateStopped},
		{Seq: 10, ID: "phantom", Kind: api.EventStarted, State: api.StateRunning},
		{Seq: 11, ID: "escaped", Kind: api.EventLimitChanged, State: api.StateRunning, Limits: &api.Limits{MemoryBytes: mib(32)}},
		// "again" was started, rolled back, and started again under its
		// id; that one exited: its record is consistent.
		{Seq: 12, ID: "again", Kind: api.EventStarted, State: api.StateRunning},
		{Seq: 13, ID: "again", Kind: api.EventStopped, State: api.StateStopped},
		{Seq: 14, ID: "again", Kind: api.EventStarted, State: api.StateRunning},
		{Seq: 15, ID: "again", Kind: api.EventExited, State: api.StateExited},
		{Seq: 12, ID: "again", Kind: api.EventStarted, State: api.StateRunning}, // redelivered late
		// A running record whose last limit change announced what it says.
		{Seq: 16, ID: "dead", Kind: api.EventLimitChanged, State: api.StateRunning, Limits: &api.Limits{MemoryBytes: mib(32)}},
		{Seq: 17, ID: "dead", Kind: api.EventLimitChanged, State: api.StateRunning, Limits: &api.Limits{MemoryBytes: mib(64), Pids: &sixteen, CPUShares: &shares}},
	} {
		c.addEvent(e)
	}
	c.ack(chaosAck{method: "stop", id: "dead", state: api.StateStopped})
	c.expectEnd("lost", api.StateStopped)
	c.expectEnd("fine", api.StateStopped)
	c.ack(chaosAck{method: "start", id: "vanished", state: api.StateRunning})
	list := []api.Instance{{ID: "fine", State: api.StateStopped}, {ID: "lost", State: api.StateRunning}, {ID: "unrecorded", State: api.StateRunning}}

	got := c.violations(list, nil, true)
	memLimit := "memory.limit_in_bytes is "
	if cgtest.Mode() == cgroup.V2 {
		memLimit = "memory.max is "
	}
	want := []string{
		"record lost: ended crashed, but no crashed event was delivered",
		"record lost: ended crashed, but lost can only end [stopped]",
		"record dead: running, but its cgroup",
		fmt.Sprintf("record dead: running, but its main process %d is gone", gone.Process.Pid),
		"record dead: running, but its directory is missing",
		"record dup-a: ended stopped but its release is unfinished",
		fmt.Sprintf("uid %d: leased to records dup-a and dup-b", chaosUIDMin+5),
		"record half: left in state starting with nothing in flight",
		"record escaped: still running after everything was stopped",
		fmt.Sprintf("record escaped: main process %d is in cgroup", escaped),
		memLimit,
		fmt.Sprintf("process %d: runs as uid %d of record escaped, but in cgroup", escaped, chaosUIDMin+11),
		fmt.Sprintf("process %d: runs as pool uid %d, which no live record holds", stray, chaosUIDMin+10),
		"-0-orphan: no live record owns it",
		"ghost: no live record owns it",
		"outbox: 1 events not confirmed by the bus (seq 5..5)",
		"events: seq 3,5 of 1..5 never delivered",
		"events: seq 9 delivered, but the outbox never handed it out",
		"about nobody, which has no record and never started",
		"phantom was announced started, has no record, and its end was never announced",
		"ack: stop of dead replied stopped, the record says running",
		"ack: start of vanished was acknowledged (running), but the record is gone",
		"list: lost is running, its record says crashed",
		"list: shows unrecorded (running), which has no record",
		"list: dup-a (stopped on record) is missing",
		`record escaped: limits on record {"memory_bytes":67108864,"cpu_shares":512,"pids":16}, but the last limit_changed delivered (seq 11) announced {"memory_bytes":33554432}`,
	}
	for _, w := range want {
		found := false
		for _, v := range got {
			found = found || strings.Contains(v, w)
		}
		if !found {
			t.Errorf("no violation says %q", w)
		}
	}
	for _, v := range got {
		if strings.Contains(v, "fine") || strings.HasPrefix(v, "record again:") || strings.HasPrefix(v, "record dead: limits") {
			t.Errorf("violation about a consistent instance: %s", v)
		}
	}
	if t.Failed() {
		t.Logf("violations:\n%s", strings.Join(got, "\n"))
	}
}

// sleepAs starts a sleep running as uid, killed when the test ends.
func sleepAs(t *testing.T, uid int) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}
