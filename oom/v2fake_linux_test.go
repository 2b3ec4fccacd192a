package oom

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
)

// The v2 code paths run here against directories that hold the files a
// v2 group has: inotify reports IN_MODIFY when a test rewrites them, just
// as cgroupfs does when the kernel changes a counter. PSI triggers need a
// real v2 kernel (an epoll set refuses a regular file), so these tests do
// not enable pressure except to check that the refusal rolls back.

type fakeGroup struct {
	dir string
}

func newFakeGroup(t *testing.T) *fakeGroup {
	t.Helper()
	return newFakeGroupAt(t, filepath.Join(t.TempDir(), "g"))
}

func newFakeGroupAt(t *testing.T, dir string) *fakeGroup {
	t.Helper()
	g := &fakeGroup{dir: dir}
	if err := os.Mkdir(g.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	g.events(t, 0, 0)
	g.populated(t, 0)
	if err := os.WriteFile(filepath.Join(g.dir, "memory.pressure"), []byte("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *fakeGroup) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(g.dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// events rewrites memory.events the way the kernel formats it.
func (g *fakeGroup) events(t *testing.T, kills, groupKills int) {
	t.Helper()
	g.write(t, "memory.events", fmt.Sprintf("low 0\nhigh 0\nmax 3\noom %d\noom_kill %d\noom_group_kill %d\n", kills, kills, groupKills))
}

func (g *fakeGroup) populated(t *testing.T, p int) {
	t.Helper()
	g.write(t, "cgroup.events", fmt.Sprintf("populated %d\nfrozen 0\n", p))
}

// barrier makes sure that every notification queued before it has been
// handled: inotify reports in order, and the loop handles a read's events
// in order, so when the barrier group's OOM arrives the earlier ones are
// done.
type barrier struct {
	g *fakeGroup
	n int
}

func newBarrier(t *testing.T, w *Watcher) *barrier {
	b := &barrier{g: newFakeGroup(t)}
	if err := w.Add("barrier", b.g.dir); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *barrier) pass(t *testing.T, c *collector) {
	t.Helper()
	b.n++
	b.g.events(t, b.n, 0)
	c.waitFor(t, "barrier", OOM, b.n, 5*time.Second)
}

func TestV2OOMRises(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	b := newBarrier(t, w)
	g := newFakeGroup(t)
	if err := w.Add("k", g.dir); err != nil {
		t.Fatal(err)
	}
	// An OOM without a kill yet, and a rewrite without change: nothing.
	g.write(t, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\noom_group_kill 0\n")
	g.events(t, 0, 0)
	b.pass(t, c)
	if evs := c.of("k"); len(evs) != 0 {
		t.Fatalf("events without a kill: %v", evs)
	}
	g.events(t, 1, 0)
	c.waitFor(t, "k", OOM, 1, 5*time.Second)
	g.events(t, 1, 0) // the same count again
	b.pass(t, c)
	g.events(t, 1, 1) // a group kill
	c.waitFor(t, "k", OOM, 2, 5*time.Second)
	g.events(t, 3, 1)
	c.waitFor(t, "k", OOM, 3, 5*time.Second)
	b.pass(t, c)
	var got []uint64
	for _, ev := range c.of("k") {
		if ev.Kind != OOM {
			t.Errorf("unexpected %v", ev)
		}
		got = append(got, ev.OOMKills)
	}
	if fmt.Sprint(got) != "[1 1 3]" {
		t.Errorf("OOMKills of the events %v, want [1 1 3]", got)
	}
}

func TestV2BaselineAtAdd(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	b := newBarrier(t, w)
	g := newFakeGroup(t)
	g.events(t, 2, 0)
	if err := w.Add("fresh", g.dir); err != nil {
		t.Fatal(err)
	}
	if evs := c.waitFor(t, "fresh", OOM, 1, 5*time.Second); evs[0].OOMKills != 2 {
		t.Errorf("event at Add %v, want OOMKills 2", evs[0])
	}
	w.Remove("fresh")
	if err := w.Add("adopted", g.dir, WithBaseline(3)); err == nil {
		t.Error("baseline above the counter accepted")
	}
	if err := w.Add("adopted", g.dir, WithBaseline(2)); err != nil {
		t.Fatal(err)
	}
	b.pass(t, c)
	if evs := c.of("adopted"); len(evs) != 0 {
		t.Errorf("events of a group adopted at its counter: %v", evs)
	}
	g.events(t, 3, 0)
	if evs := c.waitFor(t, "adopted", OOM, 1, 5*time.Second); evs[0].OOMKills != 3 {
		t.Errorf("event %v, want OOMKills 3", evs[0])
	}
}

func TestV2Empty(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	b := newBarrier(t, w)
	g := newFakeGroup(t)
	if err := w.Add("k", g.dir); err != nil {
		t.Fatal(err)
	}
	g.populated(t, 1)
	b.pass(t, c)
	g.populated(t, 0)
	c.waitFor(t, "k", Empty, 1, 5*time.Second)
	g.populated(t, 0) // e.g. a frozen change: still empty
	b.pass(t, c)
	g.populated(t, 1)
	b.pass(t, c)
	g.populated(t, 0)
	c.waitFor(t, "k", Empty, 2, 5*time.Second)
	b.pass(t, c)
	if evs := c.of("k"); len(evs) != 2 {
		t.Errorf("events %v, want two Empty", evs)
	}
}

// The kernel may hold back a memory.events notification (it sends at most
// one per file per 20 ms and defers the rest) and drops it if the group is
// removed meanwhile; the kill is in the counter before the group can
// empty. So a change of cgroup.events reads memory.events first: a kill
// that emptied the group comes before the Empty, even when the counter's
// own notification arrives after the group's.
func TestV2OOMBeforeEmpty(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	b := newBarrier(t, w)
	g := newFakeGroup(t)
	if err := w.Add("k", g.dir); err != nil {
		t.Fatal(err)
	}
	g.populated(t, 1)
	b.pass(t, c)
	func() {
		w.mu.Lock() // hold the loop off: both changes are read together
		defer w.mu.Unlock()
		g.populated(t, 0)
		g.events(t, 1, 0)
	}()
	c.waitFor(t, "k", Empty, 1, 5*time.Second)
	b.pass(t, c)
	var kinds []Kind
	for _, ev := range c.of("k") {
		kinds = append(kinds, ev.Kind)
	}
	if fmt.Sprint(kinds) != "[oom empty]" {
		t.Errorf("events %v, want [oom empty]", kinds)
	}
}

// A process that enters and leaves between two reads of cgroup.events
// still makes an Empty: the notification says something changed, and
// frozen did not. The kernel's second notification of the same exit (it
// defers one that comes within 20 ms of the previous) and a freeze of the
// empty group make none.
func TestV2EmptyAfterUnseenProcess(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	b := newBarrier(t, w)
	g := newFakeGroup(t)
	if err := w.Add("k", g.dir); err != nil {
		t.Fatal(err)
	}
	blip := func() {
		w.mu.Lock() // hold the loop off: it sees only the end state
		defer w.mu.Unlock()
		g.populated(t, 1)
		g.populated(t, 0)
	}
	blip()
	c.waitFor(t, "k", Empty, 1, 5*time.Second)
	g.populated(t, 0)
	b.pass(t, c)
	g.write(t, "cgroup.events", "populated 0\nfrozen 1\n")
	b.pass(t, c)
	g.write(t, "cgroup.events", "populated 0\nfrozen 0\n")
	b.pass(t, c)
	if evs := c.of("k"); len(evs) != 1 {
		t.Fatalf("events %v, want one Empty", evs)
	}
	g.populated(t, 1)
	b.pass(t, c)
	blip()
	c.waitFor(t, "k", Empty, 2, 5*time.Second)
	b.pass(t, c)
	if evs := c.of("k"); len(evs) != 2 {
		t.Errorf("events %v, want two Empty", evs)
	}
}

func TestV2RemovedOnRmdir(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	g := newFakeGroup(t)
	fds, watches := countFDs(t), inotifyWatches(t, w)
	if err := w.Add("k", g.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(g.dir); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "k", Removed, 1, 5*time.Second)
	quiesce(t, w)
	if evs := c.all(); len(evs) != 1 {
		t.Errorf("events %v, want exactly one Removed", evs)
	}
	if n := countFDs(t); n != fds {
		t.Errorf("%d descriptors open after Removed, %d before Add", n, fds)
	}
	if n := inotifyWatches(t, w); n != watches {
		t.Errorf("%d inotify watches after Removed, %d before Add", n, watches)
	}
	if err := w.Add("k", newFakeGroup(t).dir); err != nil {
		t.Errorf("Add of the key again: %v", err)
	}
}

// Removal is seen as IN_DELETE of the group's name in its parent, which
// may be late: one for an earlier directory at the path of a group added
// since is not that group's removal.
func TestV2DeleteOfAnEarlierDirAtThePath(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	parent := t.TempDir()
	x := newFakeGroupAt(t, filepath.Join(parent, "x")) // keeps the parent watched
	if err := w.Add("x", x.dir); err != nil {
		t.Fatal(err)
	}
	// Keep the loop from reading inotify while the earlier directory goes
	// and a group at its path is added.
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, w.ino, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(newFakeGroupAt(t, filepath.Join(parent, "a")).dir); err != nil {
		t.Fatal(err)
	}
	a := newFakeGroupAt(t, filepath.Join(parent, "a"))
	addErr := w.Add("a", a.dir)
	if err := w.epollAdd(w.ino, tokInotify, unix.EPOLLIN); err != nil {
		t.Fatal(err)
	}
	if addErr != nil {
		t.Fatal(addErr)
	}
	x.events(t, 1, 0) // a barrier: inotify reports in order
	c.waitFor(t, "x", OOM, 1, 5*time.Second)
	if evs := c.of("a"); len(evs) != 0 {
		t.Fatalf("events of the group at the path: %v, want none", evs)
	}
	if err := os.RemoveAll(a.dir); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "a", Removed, 1, 5*time.Second)
}

func TestV2RemoveReleasesEverything(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	b := newBarrier(t, w)
	g := newFakeGroup(t)
	fds, watches := countFDs(t), inotifyWatches(t, w)
	if err := w.Add("k", g.dir); err != nil {
		t.Fatal(err)
	}
	if d := inotifyWatches(t, w) - watches; d != 3 {
		t.Errorf("Add made %d inotify watches, want 3", d)
	}
	if err := w.Remove("k"); err != nil {
		t.Fatal(err)
	}
	if n := countFDs(t); n != fds {
		t.Errorf("%d descriptors open after Remove, %d before Add", n, fds)
	}
	if n := inotifyWatches(t, w); n != watches {
		t.Errorf("%d inotify watches after Remove, %d before Add", n, watches)
	}
	g.events(t, 1, 0)
	os.RemoveAll(g.dir)
	b.pass(t, c)
	if evs := c.of("k"); len(evs) != 0 {
		t.Errorf("events after Remove: %v", evs)
	}
}

// A refusal late in Add (the epoll set takes no regular file as a PSI
// trigger) undoes everything done before it.
func TestV2FailedAddRollsBack(t *testing.T) {
	w, _ := newWatcher(t, cgroup.V2)
	g := newFakeGroup(t)
	fds, watches := countFDs(t), inotifyWatches(t, w)
	err := w.Add("k", g.dir, WithPressure(PressureConfig{}))
	if err == nil {
		t.Fatal("PSI trigger on a regular file accepted")
	}
	if n := countFDs(t); n != fds {
		t.Errorf("%d descriptors open after a failed Add, %d before", n, fds)
	}
	if n := inotifyWatches(t, w); n != watches {
		t.Errorf("%d inotify watches after a failed Add, %d before", n, watches)
	}
	if err := w.Add("k", g.dir); err != nil {
		t.Errorf("Add after a failed Add: %v", err)
	}
}

func TestAddRefusesBadInput(t *testing.T) {
	w, _ := newWatcher(t, cgroup.V2)
	g := newFakeGroup(t)
	if err := w.Add("taken", g.dir); err != nil {
		t.Fatal(err)
	}
	other := newFakeGroup(t)
	fds, watches := countFDs(t), inotifyWatches(t, w)
	for _, tc := range []struct {
		name, key, dir string
		opts           []Option
		want           string
		is             error
	}{
		{"empty key", "", other.dir, nil, "key", nil},
		{"relative dir", "k", "rel/dir", nil, "dir", nil},
		{"missing dir", "k", "/nonexistent/group", nil, "/nonexistent/group", fs.ErrNotExist},
		{"key taken", "taken", other.dir, nil, `"taken"`, ErrExist},
		{"dir taken", "k", g.dir + "/", nil, g.dir, ErrExist},
		{"bad level", "k", other.dir, []Option{WithPressure(PressureConfig{V1Levels: []string{"medium", "high"}})}, "V1Levels[1]", nil},
		{"level twice", "k", other.dir, []Option{WithPressure(PressureConfig{V1Levels: []string{"low", "low"}})}, "V1Levels[1]", nil},
		{"bad trigger", "k", other.dir, []Option{WithPressure(PressureConfig{V2Triggers: []string{"some 100 100000"}})}, "V2Triggers[0]", nil},
		{"negative interval", "k", other.dir, []Option{WithPressure(PressureConfig{MinInterval: -time.Second})}, "MinInterval", nil},
	} {
		err := w.Add(tc.key, tc.dir, tc.opts...)
		switch {
		case err == nil:
			t.Errorf("%s: accepted", tc.name)
		case !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s: %v, want it to name %s", tc.name, err, tc.want)
		case tc.is != nil && !errors.Is(err, tc.is):
			t.Errorf("%s: %v, want errors.Is %v", tc.name, err, tc.is)
		}
	}
	if n := countFDs(t); n != fds {
		t.Errorf("%d descriptors open after refused Adds, %d before", n, fds)
	}
	if n := inotifyWatches(t, w); n != watches {
		t.Errorf("%d inotify watches after refused Adds, %d before", n, watches)
	}
}

func TestNewWatcherRefusesBadInput(t *testing.T) {
	if _, err := NewWatcher(0, func(Event) {}); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("mode 0: %v, want an error naming the mode", err)
	}
	if _, err := NewWatcher(cgroup.V2, nil); err == nil || !strings.Contains(err.Error(), "handle") {
		t.Errorf("nil handle: %v, want an error naming handle", err)
	}
}

// Lost notifications (a full inotify queue) are made up for by reading
// every group.
func TestV2QueueOverflow(t *testing.T) {
	w, c := newWatcher(t, cgroup.V2)
	a, b1, b2 := newFakeGroup(t), newFakeGroup(t), newFakeGroup(t)
	for key, g := range map[string]*fakeGroup{"a": a, "b1": b1, "b2": b2} {
		if err := w.Add(key, g.dir); err != nil {
			t.Fatal(err)
		}
	}
	max, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	var limit int
	fmt.Sscan(string(max), &limit)
	// Hold the loop off while b1 and b2 fill the queue (alternating, so
	// that inotify cannot merge their notifications); then a changes, and
	// its only notification is dropped.
	func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		for range limit/2 + 1 {
			b1.events(t, 0, 0)
			b2.events(t, 0, 0)
		}
		a.events(t, 1, 0)
	}()
	if evs := c.waitFor(t, "a", OOM, 1, 5*time.Second); evs[0].OOMKills != 1 {
		t.Errorf("event %v, want OOMKills 1", evs[0])
	}
	quiesce(t, w)
	if evs := c.all(); len(evs) != 1 {
		t.Errorf("events %v, want only a's OOM", evs)
	}
}

// A slow handler holds up delivery, not detection: Event.Time is when the
// loop saw the change.
func TestSlowHandlerDoesNotDelayDetection(t *testing.T) {
	release := make(chan struct{})
	var c collector
	w, err := NewWatcher(cgroup.V2, func(ev Event) {
		if ev.Key == "a" {
			<-release
		}
		c.handle(ev)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a, b := newFakeGroup(t), newFakeGroup(t)
	for key, g := range map[string]*fakeGroup{"a": a, "b": b} {
		if err := w.Add(key, g.dir); err != nil {
			t.Fatal(err)
		}
	}
	a.events(t, 1, 0)
	time.Sleep(20 * time.Millisecond) // the handler is now stuck on a
	b.events(t, 1, 0)
	time.Sleep(300 * time.Millisecond)
	released := time.Now()
	close(release)
	evs := c.waitFor(t, "b", OOM, 1, 5*time.Second)
	if lag := released.Sub(evs[0].Time); lag < 250*time.Millisecond {
		t.Errorf("b's event read %v before the handler was free, want about 300ms: detection waited for the handler", lag)
	}
	if all := c.all(); len(all) != 2 || all[0].Key != "a" {
		t.Errorf("delivered %v, want a then b", all)
	}
}

// The handler may call Remove and Add; Close delivers what was detected
// and refuses further Adds.
func TestHandlerReentryAndClose(t *testing.T) {
	var c collector
	var w *Watcher
	next := newFakeGroup(t)
	w, err := NewWatcher(cgroup.V2, func(ev Event) {
		// Collected last: the test writes next's files once it sees a's
		// event, and must not race the Add that reads them.
		defer c.handle(ev)
		if ev.Key == "a" {
			if err := w.Remove("a"); err != nil {
				t.Errorf("Remove from the handler: %v", err)
			}
			if err := w.Add("next", next.dir); err != nil {
				t.Errorf("Add from the handler: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	a := newFakeGroup(t)
	if err := w.Add("a", a.dir); err != nil {
		t.Fatal(err)
	}
	a.events(t, 1, 0)
	c.waitFor(t, "a", OOM, 1, 5*time.Second)
	next.events(t, 1, 0)
	c.waitFor(t, "next", OOM, 1, 5*time.Second)
	next.events(t, 2, 0)
	// Close right away: the rise may or may not be seen, but whatever was
	// detected is delivered before Close returns.
	fdsBefore := countFDs(t)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w.q.mu.Lock()
	pushed, delivered := w.q.pushed, w.q.delivered
	w.q.mu.Unlock()
	if pushed != delivered {
		t.Errorf("Close returned with %d of %d events undelivered", pushed-delivered, pushed)
	}
	if n := countFDs(t); n >= fdsBefore {
		t.Errorf("Close left descriptors open: %d before, %d after", fdsBefore, n)
	}
	if err := w.Add("late", newFakeGroup(t).dir); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
