package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hostward/ward/accounts"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/lease"
	"github.com/hostward/ward/outbox"
)

// fakeKernel is what fake resources make: which exist, with which limits,
// and the order every operation reached them in.
type fakeKernel struct {
	mu     sync.Mutex
	ops    []string
	made   map[string]int64 // resource → the memory limit it has
	failOn string           // "create:b", "update:c", "release:a": that call fails
}

var errFake = errors.New("fake failure")

func (k *fakeKernel) do(op, name string, f func()) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failOn == op+":"+name {
		k.ops = append(k.ops, op+" "+name+" FAILED")
		return fmt.Errorf("%s %s: %w", op, name, errFake)
	}
	k.ops = append(k.ops, op+" "+name)
	f()
	return nil
}

func (k *fakeKernel) takeOps() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	ops := k.ops
	k.ops = nil
	return ops
}

// fakeResource is a resource of the fake kernel.
type fakeResource struct {
	name string
	k    *fakeKernel
}

func (r fakeResource) String() string { return r.name }

func (r fakeResource) create(in *instance) error {
	mem := *in.record().Limits.MemoryBytes
	return r.k.do("create", r.name, func() { r.k.made[r.name] = mem })
}

func (r fakeResource) adopt(*instance) error { return nil }

func (r fakeResource) update(in *instance, l api.Limits) error {
	return r.k.do("update", r.name, func() { r.k.made[r.name] = *l.MemoryBytes })
}

func (r fakeResource) release(*instance) error {
	return r.k.do("release", r.name, func() { delete(r.k.made, r.name) })
}

func (fakeResource) leaks(ownership) ([]leak, error) { return nil, nil }

var fakeNames = []string{"a", "b", "c", "d"}

// newFakeAgent is an agent whose instances are made of the real leases,
// record and start announcement around fake resources a..d (c being the
// one whose release ends the processes): no kernel is touched, the record
// and the outbox are real.
func newFakeAgent(t *testing.T) (*Agent, *fakeKernel) {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.HostID = "fake"
	cfg.StateDir = dir
	ob, err := outbox.Open(filepath.Join(dir, "outbox"))
	if err != nil {
		t.Fatal(err)
	}
	recs := filepath.Join(dir, "records")
	if err := os.MkdirAll(recs, 0o700); err != nil {
		t.Fatal(err)
	}
	a := &Agent{
		cfg:       cfg,
		log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		events:    NewBroker(),
		instances: map[string]*instance{},
		unowned:   map[string]int{},
		closing:   make(chan struct{}),
		uids:      accounts.NewUIDPool(30000, 30009, "ward", 30000),
		ports:     lease.New(50000, 50009),
		store:     &store{dir: recs},
		outbox:    ob,
		instDir:   filepath.Join(dir, "instances"),
		host:      hostInfo{memTotal: 1 << 34, cpus: 2, portMin: 50000, portMax: 50009},
		defaults: api.Limits{MemoryBytes: i64(64 << 20), SwapBytes: i64(0), CPUShares: i64(1024),
			CPUMillicores: i64(0), Pids: i64(64), DiskBytes: i64(0)},
		retention: DefaultRetention,
	}
	k := &fakeKernel{made: map[string]int64{}}
	a.steps = []step{{resource: leases{a}}, {resource: recordFile{a}}}
	for _, n := range fakeNames {
		a.steps = append(a.steps, step{resource: fakeResource{n, k}, ends: n == "c"})
	}
	a.steps = append(a.steps, step{resource: announceStart{a}})
	return a, k
}

func fakeStart(t *testing.T, a *Agent, id string) (*api.Instance, error) {
	t.Helper()
	port := 0
	return a.Start(context.Background(), api.Request{ID: id, Name: "app", Command: []string{"/bin/true"}, Port: &port})
}

// diskRecord reads id's record as a restarted agent would, or nil.
func diskRecord(t *testing.T, a *Agent, id string) *record {
	t.Helper()
	b, err := os.ReadFile(a.store.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	rec := new(record)
	if err := json.Unmarshal(b, rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// outboxKinds lists the kinds of the events stored about id, in order.
func outboxKinds(t *testing.T, a *Agent, id string) []string {
	t.Helper()
	var kinds []string
	for _, it := range a.outbox.Pending(a.outbox.Len()) {
		var e api.Event
		if err := json.Unmarshal(it.Data, &e); err != nil {
			t.Fatal(err)
		}
		if e.ID == id {
			kinds = append(kinds, e.Kind)
		}
	}
	return kinds
}

// A start that fails at any resource undoes exactly the resources made
// before it, in reverse, and leaves nothing: no record, no lease, no event.
func TestStartFailureUndoesEarlierResourcesInReverse(t *testing.T) {
	for i, failing := range fakeNames {
		t.Run(failing, func(t *testing.T) {
			a, k := newFakeAgent(t)
			k.failOn = "create:" + failing
			_, err := fakeStart(t, a, "x")
			if !errors.Is(err, errFake) {
				t.Fatalf("start: %v, want the failing resource's error", err)
			}
			var want []string
			for _, n := range fakeNames[:i] {
				want = append(want, "create "+n)
			}
			want = append(want, "create "+failing+" FAILED")
			for j := i - 1; j >= 0; j-- {
				want = append(want, "release "+fakeNames[j])
			}
			if got := k.takeOps(); !slices.Equal(got, want) {
				t.Fatalf("operations\n got %v\nwant %v", got, want)
			}
			if len(k.made) != 0 {
				t.Fatalf("left behind: %v", k.made)
			}
			if rec := diskRecord(t, a, "x"); rec != nil {
				t.Fatalf("record left behind: %+v", rec)
			}
			if n := len(a.uids.Leased()); n != 0 {
				t.Fatalf("%d uid leases left behind", n)
			}
			if _, err := a.lookup("x"); !errors.Is(err, api.ErrNotFound) {
				t.Fatalf("instance still known: %v", err)
			}
			if kinds := outboxKinds(t, a, "x"); len(kinds) != 0 {
				t.Fatalf("events %v for a start that failed", kinds)
			}
			// The lease was handed back: the next start gets it.
			k.failOn = ""
			if _, err := fakeStart(t, a, "y"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A limit change that one resource refuses puts back, in reverse, exactly
// the resources changed before it; the record keeps the old limits, which
// is what every resource has, and nothing is announced.
func TestLimitFailureRestoresEarlierResourcesInReverse(t *testing.T) {
	for i, failing := range fakeNames {
		t.Run(failing, func(t *testing.T) {
			a, k := newFakeAgent(t)
			if _, err := fakeStart(t, a, "x"); err != nil {
				t.Fatal(err)
			}
			k.takeOps()
			old := *diskRecord(t, a, "x").Limits.MemoryBytes
			k.failOn = "update:" + failing
			_, err := a.Limit(context.Background(), api.LimitRequest{ID: "x", Limits: api.Limits{MemoryBytes: i64(old * 2)}})
			if !errors.Is(err, errFake) {
				t.Fatalf("limit: %v, want the failing resource's error", err)
			}
			var want []string
			for _, n := range fakeNames[:i] {
				want = append(want, "update "+n)
			}
			want = append(want, "update "+failing+" FAILED")
			for j := i - 1; j >= 0; j-- {
				want = append(want, "update "+fakeNames[j])
			}
			if got := k.takeOps(); !slices.Equal(got, want) {
				t.Fatalf("operations\n got %v\nwant %v", got, want)
			}
			rec := diskRecord(t, a, "x")
			for n, mem := range k.made {
				if mem != *rec.Limits.MemoryBytes {
					t.Errorf("%s has %d, the record says %d", n, mem, *rec.Limits.MemoryBytes)
				}
			}
			if *rec.Limits.MemoryBytes != old {
				t.Errorf("record says %d, want the old %d", *rec.Limits.MemoryBytes, old)
			}
			if kinds := outboxKinds(t, a, "x"); !slices.Equal(kinds, []string{api.EventStarted}) {
				t.Fatalf("events %v, want [started]", kinds)
			}
		})
	}
	// And one that succeeds changes every resource and the record, and
	// announces it.
	a, k := newFakeAgent(t)
	if _, err := fakeStart(t, a, "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Limit(context.Background(), api.LimitRequest{ID: "x", Limits: api.Limits{MemoryBytes: i64(96 << 20)}}); err != nil {
		t.Fatal(err)
	}
	for n, mem := range k.made {
		if mem != 96<<20 {
			t.Errorf("%s has %d after the change", n, mem)
		}
	}
	rec := diskRecord(t, a, "x")
	if *rec.Limits.MemoryBytes != 96<<20 || rec.Announced == nil || rec.Announced.Kind != api.EventLimitChanged {
		t.Fatalf("record after the change: limits %d, announced %+v", *rec.Limits.MemoryBytes, rec.Announced)
	}
}

// A release that fails at any resource stops there: the resources after
// it (released first) are gone, it and those before it remain, and the
// record says so — ended, its end announced once, not released. A retry
// walks the release again from the top (every release is idempotent) and
// finishes it without announcing the end again.
func TestReleaseFailureStopsAndIsResumed(t *testing.T) {
	for i, failing := range fakeNames {
		t.Run(failing, func(t *testing.T) {
			a, k := newFakeAgent(t)
			if _, err := fakeStart(t, a, "x"); err != nil {
				t.Fatal(err)
			}
			k.takeOps()
			k.failOn = "release:" + failing
			if _, err := a.Stop(context.Background(), api.StopRequest{ID: "x"}); !errors.Is(err, api.ErrInternal) {
				t.Fatalf("stop: %v, want internal", err)
			}
			var want []string
			for j := len(fakeNames) - 1; j > i; j-- {
				want = append(want, "release "+fakeNames[j])
			}
			want = append(want, "release "+failing+" FAILED")
			if got := k.takeOps(); !slices.Equal(got, want) {
				t.Fatalf("operations\n got %v\nwant %v", got, want)
			}
			for j, n := range fakeNames {
				if _, ok := k.made[n]; ok != (j <= i) {
					t.Errorf("%s exists: %v", n, ok)
				}
			}
			rec := diskRecord(t, a, "x")
			if rec.State != api.StateStopped || rec.Released || !endAnnounced(rec) {
				t.Fatalf("record after the failed release: state %s, released %v, announced %+v", rec.State, rec.Released, rec.Announced)
			}
			if n := len(a.uids.Leased()); n != 1 {
				t.Fatalf("%d uid leases, want the instance's still held", n)
			}

			k.failOn = ""
			a.retryReleases()
			want = nil
			for j := len(fakeNames) - 1; j >= 0; j-- {
				want = append(want, "release "+fakeNames[j])
			}
			if got := k.takeOps(); !slices.Equal(got, want) {
				t.Fatalf("operations of the retry\n got %v\nwant %v", got, want)
			}
			if len(k.made) != 0 {
				t.Fatalf("left behind: %v", k.made)
			}
			if rec := diskRecord(t, a, "x"); !rec.Released || rec.State != api.StateStopped {
				t.Fatalf("record after the retry: state %s, released %v", rec.State, rec.Released)
			}
			if n := len(a.uids.Leased()); n != 0 {
				t.Fatalf("%d uid leases left after the release", n)
			}
			if kinds := outboxKinds(t, a, "x"); !slices.Equal(kinds, []string{api.EventStarted, api.EventStopped}) {
				t.Fatalf("events %v, want [started stopped]", kinds)
			}
		})
	}
}

// A record naming an announcement the outbox never stored — the agent
// died between the two writes of a commit — is announced by the next
// agent, once; one the outbox stored is not announced again.
func TestUnstoredAnnouncementIsMadeOnce(t *testing.T) {
	a, _ := newFakeAgent(t)
	if _, err := fakeStart(t, a, "x"); err != nil {
		t.Fatal(err)
	}
	in, _ := a.lookup("x")
	stored := a.outbox.Last()
	in.opMu.Lock()
	a.announceUnstored(in, stored)
	in.opMu.Unlock()
	if kinds := outboxKinds(t, a, "x"); !slices.Equal(kinds, []string{api.EventStarted}) {
		t.Fatalf("events %v, want [started] alone: it was stored", kinds)
	}
	// As if the outbox had stopped one short of the record's event.
	in.opMu.Lock()
	a.announceUnstored(in, stored-1)
	in.opMu.Unlock()
	if kinds := outboxKinds(t, a, "x"); !slices.Equal(kinds, []string{api.EventStarted, api.EventStarted}) {
		t.Fatalf("events %v, want the started event announced again", kinds)
	}
	// The record now names the new number, which is stored.
	if rec := diskRecord(t, a, "x"); rec.Announced.Seq != a.outbox.Last() {
		t.Fatalf("record names %d, the outbox's last is %d", rec.Announced.Seq, a.outbox.Last())
	}
}

// Every state moves only where the state machine says; a move it refuses
// leaves the record as it was.
func TestStateTransitions(t *testing.T) {
	// Written out here, not derived from transitions, so that an edit of
	// the table is a change this test must be told about.
	legal := map[api.State][]api.State{
		api.StateStarting:  {api.StateRunning},
		api.StateRunning:   {api.StateStopping, api.StateExited, api.StateCrashed, api.StateOOMKilled},
		api.StateStopping:  {api.StateStopped, api.StateOOMKilled},
		api.StateStopped:   {api.StateStopped},
		api.StateExited:    {api.StateExited},
		api.StateCrashed:   {api.StateCrashed},
		api.StateOOMKilled: {api.StateOOMKilled},
	}
	all := append(slices.Clone(api.States), "sleeping", "")
	for _, from := range all {
		for _, to := range all {
			rec := &record{State: from}
			err := rec.move(to)
			ok := slices.Contains(legal[from], to)
			switch {
			case ok && err != nil:
				t.Errorf("%s → %s refused: %v", from, to, err)
			case ok && rec.State != to:
				t.Errorf("%s → %s left state %s", from, to, rec.State)
			case !ok && err == nil:
				t.Errorf("%s → %s allowed", from, to)
			case !ok && rec.State != from:
				t.Errorf("%s → %s refused but changed the state to %s", from, to, rec.State)
			case !ok && knownState(from) && !errors.Is(err, ErrIllegalTransition):
				t.Errorf("%s → %s: %v, want ErrIllegalTransition", from, to, err)
			case !ok && !knownState(from) && !errors.Is(err, ErrUnknownState):
				t.Errorf("%s → %s: %v, want ErrUnknownState", from, to, err)
			}
		}
	}
	for _, s := range api.States {
		if !knownState(s) {
			t.Errorf("state %s is not in the table", s)
		}
	}
}

// A record this agent cannot understand — a newer version, or a state it
// does not know — is refused, not guessed at: guessing could kill the
// instance it describes. An older version is read.
func TestRecordsOfNewerAgentsRefused(t *testing.T) {
	for _, c := range []struct {
		name, json string
		want       error
	}{
		{"newer version", `{"version":3,"spec":{"id":"x"},"state":"running"}`, ErrRecordVersion},
		{"unknown state", `{"version":2,"spec":{"id":"x"},"state":"sleeping"}`, ErrUnknownState},
		{"no version", `{"spec":{"id":"x"},"state":"running"}`, ErrRecordVersion},
		{"version 1", `{"version":1,"spec":{"id":"x"},"state":"running"}`, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "x.json"), []byte(c.json), 0o600); err != nil {
				t.Fatal(err)
			}
			s := &store{dir: dir}
			recs, _, err := s.load(time.Time{}) // no record is from before this boot: none is torn
			if c.want == nil {
				if err != nil || len(recs) != 1 {
					t.Fatalf("load: %v, %d records", err, len(recs))
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("load: %v, want %v", err, c.want)
			}
			if !strings.Contains(err.Error(), "x.json") {
				t.Fatalf("load: %v does not name the record", err)
			}
		})
	}
}

// A host's list can outgrow one bus message: it pages, and the pages
// together are the list, each instance once, in order — even when the
// instance a page ended on is forgotten before the next page is asked
// for. Only the page is rendered.
func TestListPages(t *testing.T) {
	a, _ := newFakeAgent(t)
	// Index 10 after index 9: the order is numeric, not textual.
	for _, k := range []struct {
		name  string
		index int
	}{{"a", 0}, {"a", 1}, {"a", 9}, {"a", 10}, {"b", 0}, {"b", 2}, {"c", 0}} {
		id := fmt.Sprintf("%s%d", k.name, k.index)
		in := &instance{id: id, name: k.name, index: k.index}
		in.rec.Spec = api.Request{ID: id, Name: k.name, Index: k.index}
		in.rec.State = api.StateStopped
		a.instances[id] = in
	}
	list := func(req api.ListRequest) *api.List {
		t.Helper()
		l, err := a.List(context.Background(), req)
		if err != nil {
			t.Fatalf("list %+v: %v", req, err)
		}
		return l
	}
	for _, limit := range []int{0, 7, 100} {
		if l := list(api.ListRequest{Limit: limit}); len(l.Instances) != 7 || l.Next != "" {
			t.Fatalf("limit %d: %d instances, next %q", limit, len(l.Instances), l.Next)
		}
	}
	var got []string
	req := api.ListRequest{Limit: 3}
	for pages := 0; ; pages++ {
		l := list(req)
		if pages > 3 || len(l.Instances) > 3 {
			t.Fatalf("list %+v: %d instances, page %d", req, len(l.Instances), pages)
		}
		for _, in := range l.Instances {
			got = append(got, in.ID)
		}
		if l.Next == "" {
			break
		}
		if pages == 0 {
			// The last instance of the first page goes away.
			delete(a.instances, "a9")
		}
		req.After = l.Next
	}
	if fmt.Sprint(got) != "[a0 a1 a9 a10 b0 b2 c0]" {
		t.Fatalf("pages gave %v", got)
	}
	if _, err := a.List(context.Background(), api.ListRequest{After: "nonsense"}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Fatalf("a bad position: %v", err)
	}
}

// A request whose caller is gone before the agent gets to it is not worked
// on: nobody would read the answer. (One under way is finished.)
func TestAbandonedRequestsAreNotBegun(t *testing.T) {
	a, k := newFakeAgent(t)
	if _, err := fakeStart(t, a, "x"); err != nil {
		t.Fatal(err)
	}
	k.takeOps()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	port := 0
	if _, err := a.Start(gone, api.Request{ID: "y", Name: "app", Command: []string{"/bin/true"}, Port: &port}); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("start: %v, want unavailable", err)
	}
	if _, err := a.Limit(gone, api.LimitRequest{ID: "x", Limits: api.Limits{MemoryBytes: i64(96 << 20)}}); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("limit: %v, want unavailable", err)
	}
	if _, err := a.Stop(gone, api.StopRequest{ID: "x"}); !errors.Is(err, api.ErrUnavailable) {
		t.Fatalf("stop: %v, want unavailable", err)
	}
	if ops := k.takeOps(); len(ops) != 0 {
		t.Fatalf("abandoned requests did %v", ops)
	}
	if rec := diskRecord(t, a, "y"); rec != nil {
		t.Fatalf("abandoned start left a record: %+v", rec)
	}
	if rec := diskRecord(t, a, "x"); rec.State != api.StateRunning || *rec.Limits.MemoryBytes != 64<<20 {
		t.Fatalf("x after abandoned requests: %s, %d", rec.State, *rec.Limits.MemoryBytes)
	}
}

// Resources marked beside are created and released side by side; a
// failure among them still undoes exactly what was made: the others of
// the run that succeeded, then the earlier ones, in reverse.
func TestResourcesBesideEachOther(t *testing.T) {
	a, k := newFakeAgent(t)
	for i := range a.steps {
		if n := a.steps[i].String(); n == "b" || n == "c" {
			a.steps[i].beside = true
		}
	}
	k.failOn = "create:c"
	if _, err := fakeStart(t, a, "x"); !errors.Is(err, errFake) {
		t.Fatalf("start: %v", err)
	}
	ops := k.takeOps()
	if len(ops) != 5 || ops[0] != "create a" || ops[3] != "release b" || ops[4] != "release a" ||
		!slices.Contains(ops[1:3], "create b") || !slices.Contains(ops[1:3], "create c FAILED") {
		t.Fatalf("operations %v, want create a, create b and c side by side, release b, release a", ops)
	}
	if len(k.made) != 0 || diskRecord(t, a, "x") != nil {
		t.Fatalf("left behind: %v", k.made)
	}

	k.failOn = ""
	if _, err := fakeStart(t, a, "x"); err != nil {
		t.Fatal(err)
	}
	k.takeOps()
	k.failOn = "release:b"
	if _, err := a.Stop(context.Background(), api.StopRequest{ID: "x"}); err == nil {
		t.Fatal("stop succeeded through a failed release")
	}
	ops = k.takeOps()
	if len(ops) != 3 || ops[0] != "release d" || !slices.Contains(ops[1:], "release b FAILED") || !slices.Contains(ops[1:], "release c") {
		t.Fatalf("operations %v, want release d, then b and c side by side", ops)
	}
	if _, ok := k.made["a"]; !ok || len(k.made) != 2 {
		t.Fatalf("after the failed release: %v, want a and b", k.made)
	}
}
