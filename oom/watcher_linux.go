package oom

import (
	"container/heap"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
)

// Epoll tokens below firstToken name the Watcher's own descriptors; the
// others name one source each. Tokens, not descriptor numbers, go into the
// epoll set because a number is reused as soon as Remove closes it, while a
// readiness report for the old descriptor may still be in the loop's hands.
const (
	tokWake uint64 = iota + 1
	tokTimer
	tokInotify
	firstToken = 16
)

type srcKind uint8

const (
	srcV1OOM      srcKind = iota + 1 // eventfd bound to memory.oom_control
	srcV1Pressure                    // eventfd bound to memory.pressure_level
	srcPSI                           // v2 memory.pressure holding a trigger
)

// source is one descriptor of a group in the epoll set.
type source struct {
	g     *group
	kind  srcKind
	fd    int
	level string
}

// group is one watched cgroup. All fields are guarded by Watcher.mu.
type group struct {
	key, dir string
	// counter is, on v1, the open memory.oom_control, read with pread: an
	// open file keeps naming this group even if another one is created at
	// the same path later. -1 on v2.
	counter int
	// dirfd is, on v2, the group's directory opened O_PATH; its files are
	// opened relative to it, for the same reason. -1 on v1.
	dirfd int
	// reported is the oom_kill count accounted for; an OOM event is sent
	// only when the counter is read above it.
	reported   uint64
	groupKills uint64 // v2: oom_group_kill last seen
	populated  bool   // v2: cgroup.events populated last seen
	frozen     uint64 // v2: cgroup.events frozen last seen
	emptySent  bool   // v2: Empty reported, populated not seen since
	tokens     []uint64
	wds        []int32 // v2: watches on memory.events and cgroup.events
	parent     int32   // v2: the watch on the parent directory; 0 if none
	limit      limiter
	// step and due place the group on the v1 re-read schedule; hidx is its
	// index in Watcher.rechecks, -1 when not scheduled.
	step int
	due  time.Time
	hidx int
}

// recheckDelays is the v1 re-read schedule after a wakeup (see the package
// documentation): the OOM killer raises oom_kill only after it has chosen a
// victim, which it may have to queue for behind other groups' OOMs on the
// global oom_lock. 13 reads over about 1.9 s per notification.
var recheckDelays = []time.Duration{
	200 * time.Microsecond, 300 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
	time.Second,
}

// Watcher watches many groups of one cgroup version with one event loop.
// Its methods are safe for concurrent use.
type Watcher struct {
	mode  cgroup.Mode
	epfd  int
	wake  int // eventfd written by Close
	timer int // v1: timerfd driving the re-reads; -1 on v2
	ino   int // v2: the inotify instance of all groups; -1 on v1

	q           *queue
	loopDone    chan struct{}
	deliverDone chan struct{}
	loopErr     error // set by the loop before loopDone closes

	mu       sync.Mutex
	closed   bool
	groups   map[string]*group
	dirs     map[string]*group
	sources  map[uint64]*source
	wds      map[int32]*group
	parents  map[int32]map[string]*group // v2: parent watch → groups by name
	next     uint64
	rechecks recheckHeap
	armed    time.Time  // when the timerfd fires; zero when disarmed
	rbuf     [1024]byte // counter reads, under mu
	wakeups  uint64     // epoll_wait returns, for the idle benchmark
}

// NewWatcher starts a Watcher for groups of the given cgroup version.
// handle receives every event, in order and never concurrently, on a
// goroutine of the Watcher's own: it may call Add and Remove, but not Close,
// and while it runs later events wait (their detection does not).
func NewWatcher(mode cgroup.Mode, handle func(Event)) (_ *Watcher, err error) {
	if _, err := counterFile(mode); err != nil {
		return nil, err
	}
	if handle == nil {
		return nil, errors.New("oom: handle is nil")
	}
	w := &Watcher{
		mode: mode, epfd: -1, wake: -1, timer: -1, ino: -1,
		q:           newQueue(),
		loopDone:    make(chan struct{}),
		deliverDone: make(chan struct{}),
		groups:      map[string]*group{},
		dirs:        map[string]*group{},
		sources:     map[uint64]*source{},
		wds:         map[int32]*group{},
		parents:     map[int32]map[string]*group{},
		next:        firstToken,
	}
	defer func() {
		if err != nil {
			w.closeOwn()
		}
	}()
	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("oom: epoll_create1: %w", err)
	}
	if w.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("oom: eventfd: %w", err)
	}
	if err := w.epollAdd(w.wake, tokWake, unix.EPOLLIN); err != nil {
		return nil, err
	}
	if mode == cgroup.V1 {
		if w.timer, err = unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK); err != nil {
			return nil, fmt.Errorf("oom: timerfd_create: %w", err)
		}
		if err := w.epollAdd(w.timer, tokTimer, unix.EPOLLIN); err != nil {
			return nil, err
		}
	} else {
		if w.ino, err = unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err != nil {
			return nil, fmt.Errorf("oom: inotify_init1: %w", err)
		}
		if err := w.epollAdd(w.ino, tokInotify, unix.EPOLLIN); err != nil {
			return nil, err
		}
	}
	go w.loop()
	go func() {
		defer close(w.deliverDone)
		w.q.run(handle)
	}()
	return w, nil
}

// closeOwn closes the Watcher's own descriptors.
func (w *Watcher) closeOwn() {
	for _, fd := range []int{w.epfd, w.wake, w.timer, w.ino} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

func (w *Watcher) epollAdd(fd int, tok uint64, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(tok), Pad: int32(tok >> 32)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// Add starts watching the group at dir under key: on v1 the group's
// directory in the memory hierarchy, on v2 the group's directory. Register
// a new group before its first process enters it. A kill the counter shows
// beyond the baseline (see WithBaseline) when Add reads it, after
// registering, is reported at once. Bad input is refused with the field
// named, and a failed Add leaves nothing registered.
func (w *Watcher) Add(key, dir string, opts ...Option) error {
	if err := checkKey(key); err != nil {
		return err
	}
	dir, err := checkDir(dir)
	if err != nil {
		return err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.pressure != nil {
		p, err := o.pressure.validate()
		if err != nil {
			return err
		}
		o.pressure = &p
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if _, ok := w.groups[key]; ok {
		return fmt.Errorf("oom: key %q: %w", key, ErrExist)
	}
	if g, ok := w.dirs[dir]; ok {
		return fmt.Errorf("oom: dir %s (key %q): %w", dir, g.key, ErrExist)
	}
	g := &group{key: key, dir: dir, counter: -1, dirfd: -1, reported: o.baseline, step: -1, hidx: -1}
	if o.pressure != nil {
		g.limit.every = o.pressure.MinInterval
	}
	if w.mode == cgroup.V1 {
		err = w.addV1(g, o.pressure)
	} else {
		err = w.addV2(g, o.pressure)
	}
	if err != nil {
		w.drop(g)
		return fmt.Errorf("oom: add %q: %w", key, err)
	}
	w.groups[key] = g
	w.dirs[dir] = g
	if w.mode == cgroup.V1 {
		// A kill whose notification fired before the eventfd was bound
		// may still be on its way to the counter.
		now := time.Now()
		w.schedule(g, now)
		w.armTimer()
	}
	return nil
}

// baseline checks the counter read right after registering against the
// caller's baseline and reports kills beyond it.
func (w *Watcher) baseline(g *group, kills uint64) error {
	if kills < g.reported {
		return fmt.Errorf("baseline %d is above the group's oom_kill counter %d", g.reported, kills)
	}
	if kills > g.reported {
		g.reported = kills
		w.q.push(Event{Key: g.key, Kind: OOM, OOMKills: kills, Time: time.Now()})
	}
	return nil
}

// addSource registers fd as a source of g; drop closes it from then on.
func (w *Watcher) addSource(g *group, kind srcKind, fd int, level string) (*source, uint64) {
	s := &source{g: g, kind: kind, fd: fd, level: level}
	tok := w.next
	w.next++
	w.sources[tok] = s
	g.tokens = append(g.tokens, tok)
	return s, tok
}

// Remove stops watching key and closes every descriptor it held. Events
// detected before Remove may still be delivered after it returns; none are
// detected after. Removing an unknown key is a no-op. A caller that needs
// the final kill count of a group it is about to delete reads OOMKills
// before deleting it: a deleted group's counter is gone, and on v2 the
// deletion also cancels a notification the kernel was holding back (a
// caller that deletes a v2 group on its Empty event has already had the
// OOM event of a kill that emptied it).
func (w *Watcher) Remove(key string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if g, ok := w.groups[key]; ok {
		w.drop(g)
		w.armTimer()
	}
	return nil
}

// Close stops the Watcher: it removes every group, stops the event loop
// and returns once every event already detected has been handled. It must
// not be called from the handler.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		for _, g := range w.groups {
			w.drop(g)
		}
		var one [8]byte
		one[0] = 1 // the eventfd adds the native-endian value; any non-zero will do
		unix.Write(w.wake, one[:])
	}
	w.mu.Unlock()
	<-w.loopDone
	w.mu.Lock()
	if w.epfd >= 0 {
		w.closeOwn()
		w.epfd, w.wake, w.timer, w.ino = -1, -1, -1, -1
		w.q.close()
	}
	w.mu.Unlock()
	<-w.deliverDone
	return w.loopErr
}

// drop forgets g and closes everything it holds. It undoes a partial Add
// as well as a complete one.
func (w *Watcher) drop(g *group) {
	for _, tok := range g.tokens {
		s := w.sources[tok]
		delete(w.sources, tok)
		// Delete before closing: a copy of the descriptor in a child forked
		// at this moment would otherwise keep the registration alive.
		unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
		unix.Close(s.fd)
	}
	g.tokens = nil
	for _, wd := range g.wds {
		unix.InotifyRmWatch(w.ino, uint32(wd))
		delete(w.wds, wd)
	}
	g.wds = nil
	if g.parent != 0 {
		w.unwatchParent(g)
	}
	for _, fd := range []*int{&g.counter, &g.dirfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	if g.hidx >= 0 {
		heap.Remove(&w.rechecks, g.hidx)
	}
	if w.groups[g.key] == g {
		delete(w.groups, g.key)
	}
	if w.dirs[g.dir] == g {
		delete(w.dirs, g.dir)
	}
}

// removed reports g gone and drops it.
func (w *Watcher) removed(g *group, now time.Time) {
	w.q.push(Event{Key: g.key, Kind: Removed, Time: now})
	w.drop(g)
}

// pressure reports pressure at level unless rate-limited.
func (w *Watcher) pressure(g *group, level string, now time.Time) {
	if g.limit.allow(level, now) {
		w.q.push(Event{Key: g.key, Kind: Pressure, Level: level, Time: now})
	}
}

// loop is the event loop: it sleeps in epoll_wait and turns readiness into
// events. It holds the lock while it works, so Add, Remove and the loop
// see a group in one state at a time.
func (w *Watcher) loop() {
	defer close(w.loopDone)
	evs := make([]unix.EpollEvent, 256)
	var buf []byte
	if w.ino >= 0 {
		buf = make([]byte, 64<<10)
	}
	for {
		n, err := unix.EpollWait(w.epfd, evs, -1)
		if err == unix.EINTR {
			continue
		}
		now := time.Now()
		w.mu.Lock()
		w.wakeups++
		if w.closed {
			w.mu.Unlock()
			return
		}
		if err != nil {
			w.loopErr = fmt.Errorf("oom: epoll_wait: %w", err)
			w.mu.Unlock()
			return
		}
		for i := range evs[:n] {
			switch tok := token(&evs[i]); tok {
			case tokWake:
			case tokTimer:
				drain(w.timer)
				w.armed = time.Time{}
				w.runRechecks(now)
			case tokInotify:
				w.readInotify(buf, now)
			default:
				if s, ok := w.sources[tok]; ok {
					w.onSource(s, evs[i].Events, now)
				}
			}
		}
		w.armTimer()
		w.mu.Unlock()
	}
}

// onSource handles readiness of one group descriptor.
func (w *Watcher) onSource(s *source, events uint32, now time.Time) {
	g := s.g
	switch s.kind {
	case srcV1OOM:
		drain(s.fd)
		if w.checkV1(g, now) {
			w.schedule(g, now)
		}
	case srcV1Pressure:
		drain(s.fd)
		// The pressure eventfd fires on the group's removal too.
		if w.checkV1(g, now) {
			w.pressure(g, s.level, now)
		}
	case srcPSI:
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			w.removed(g, now)
			return
		}
		if events&unix.EPOLLPRI != 0 {
			w.pressure(g, s.level, now)
		}
	}
}

// drain empties an eventfd or timerfd.
func drain(fd int) {
	var b [8]byte
	for {
		if _, err := unix.Read(fd, b[:]); err != unix.EINTR {
			return
		}
	}
}

// read preads a flat-keyed cgroup file from its open descriptor into the
// Watcher's buffer; the result is valid until the next read.
func (w *Watcher) read(fd int) ([]byte, error) {
	buf := w.rbuf[:]
	for {
		n, err := unix.Pread(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// readAt reads a small cgroup file of g (v2) into the Watcher's buffer;
// the result is valid until the next read.
func (w *Watcher) readAt(g *group, name string) ([]byte, error) {
	fd, err := openAt(g, name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	b, err := w.read(fd)
	if err != nil {
		return nil, &os.PathError{Op: "read", Path: filepath.Join(g.dir, name), Err: err}
	}
	return b, nil
}

// gone reports whether an error means the group was removed: a removed
// cgroupfs file answers ENODEV through a descriptor opened before, and a
// removed directory has no files to open (ENOENT).
func gone(err error) bool {
	return errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENOENT)
}

// schedule (re)starts g's v1 re-read schedule at its first step.
func (w *Watcher) schedule(g *group, now time.Time) {
	g.step = 0
	g.due = now.Add(recheckDelays[0])
	if g.hidx >= 0 {
		heap.Fix(&w.rechecks, g.hidx)
	} else {
		heap.Push(&w.rechecks, g)
	}
}

// runRechecks re-reads every group whose next step is due.
func (w *Watcher) runRechecks(now time.Time) {
	for len(w.rechecks) > 0 && !w.rechecks[0].due.After(now) {
		g := w.rechecks[0]
		if !w.checkV1(g, now) {
			continue // removed, and off the schedule
		}
		g.step++
		if g.step >= len(recheckDelays) {
			heap.Pop(&w.rechecks)
			g.step = -1
			continue
		}
		g.due = now.Add(recheckDelays[g.step])
		heap.Fix(&w.rechecks, 0)
	}
}

// armTimer sets the timerfd to the earliest scheduled re-read.
func (w *Watcher) armTimer() {
	if w.timer < 0 {
		return
	}
	var spec unix.ItimerSpec
	if len(w.rechecks) == 0 {
		if w.armed.IsZero() {
			return
		}
		w.armed = time.Time{}
	} else {
		due := w.rechecks[0].due
		if due.Equal(w.armed) {
			return
		}
		// A zero value disarms, so an overdue step gets the shortest wait.
		spec.Value = unix.NsecToTimespec(max(int64(time.Until(due)), 1))
		w.armed = due
	}
	unix.TimerfdSettime(w.timer, 0, &spec, nil)
}

// recheckHeap orders groups by their next re-read.
type recheckHeap []*group

func (h recheckHeap) Len() int           { return len(h) }
func (h recheckHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h recheckHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *recheckHeap) Push(x any) {
	g := x.(*group)
	g.hidx = len(*h)
	*h = append(*h, g)
}
func (h *recheckHeap) Pop() any {
	old := *h
	g := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	g.hidx = -1
	return g
}
