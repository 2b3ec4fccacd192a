package oom

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/cgtest"
)

// These tests run against the real kernel, in the cgroup mode the host
// has, under a random parent of their own that t.Cleanup removes.

const mib = 1 << 20

// A kill of a process the instance itself started (not the one the agent
// started) is reported once, with the counter.
func TestOOMByChildReportedOnce(t *testing.T) {
	k := realKernel(t)
	dir := k.group(t, "g", 32*mib)
	w, c := newWatcher(t, k.mode)
	if err := w.Add("k", dir); err != nil {
		t.Fatal(err)
	}
	h := startHog(t, dir, "OOMTEST_HOG=child")
	h.release()
	if err := h.wait(); err != nil {
		t.Fatalf("hog: %v; want its child OOM-killed and itself exiting 0", err)
	}
	c.waitFor(t, "k", OOM, 1, cgtest.Timeout(5*time.Second))
	quiesce(t, w)
	evs := c.of("k", OOM)
	if len(evs) != 1 {
		t.Fatalf("OOM events %v, want exactly 1 (all: %v)", evs, c.all())
	}
	kills, err := OOMKills(k.mode, dir)
	if err != nil {
		t.Fatal(err)
	}
	if evs[0].OOMKills < 1 || evs[0].OOMKills != kills {
		t.Errorf("event OOMKills %d, counter %d: want the counter, at least 1", evs[0].OOMKills, kills)
	}
	if rm := c.of("k", Removed); len(rm) != 0 {
		t.Errorf("unexpected Removed: %v", rm)
	}
}

// A hog that blows its limit as soon as it runs is caught: the watch is
// in place before the first process enters the group.
func TestOOMInFirstMillisecond(t *testing.T) {
	k := realKernel(t)
	dir := k.group(t, "g", 4*mib)
	w, c := newWatcher(t, k.mode)
	if err := w.Add("k", dir); err != nil {
		t.Fatal(err)
	}
	h := startHog(t, dir, "OOMTEST_HOG=anon", "OOMTEST_BYTES=0")
	h.release()
	if err := h.wait(); !sigkilled(err) {
		t.Fatalf("hog: %v, want SIGKILL", err)
	}
	c.waitFor(t, "k", OOM, 1, cgtest.Timeout(5*time.Second))
	quiesce(t, w)
	if evs := c.of("k", OOM); len(evs) != 1 || evs[0].OOMKills != 1 {
		t.Fatalf("OOM events %v, want one with OOMKills 1", evs)
	}
}

// A kill that happened before Add is reported by Add against the default
// baseline 0, and not against a baseline that already accounts for it; a
// baseline above the counter is refused.
func TestOOMBeforeAdd(t *testing.T) {
	k := realKernel(t)
	dir := k.group(t, "g", 8*mib)
	h := startHog(t, dir, "OOMTEST_HOG=anon", "OOMTEST_BYTES=0")
	h.release()
	if err := h.wait(); !sigkilled(err) {
		t.Fatalf("hog: %v, want SIGKILL", err)
	}

	w, c := newWatcher(t, k.mode)
	if err := w.Add("fresh", dir); err != nil {
		t.Fatal(err)
	}
	if evs := c.waitFor(t, "fresh", OOM, 1, 5*time.Second); evs[0].OOMKills != 1 {
		t.Errorf("event %v, want OOMKills 1", evs[0])
	}

	w2, c2 := newWatcher(t, k.mode)
	before := countFDs(t)
	err := w2.Add("adopted", dir, WithBaseline(2))
	if err == nil || countFDs(t) != before {
		t.Fatalf("baseline above the counter: err %v, fds %d -> %d; want an error and nothing left open", err, before, countFDs(t))
	}
	if err := w2.Add("adopted", dir, WithBaseline(1)); err != nil {
		t.Fatal(err)
	}
	quiesce(t, w)
	quiesce(t, w2)
	if evs := c.of("fresh", OOM); len(evs) != 1 {
		t.Errorf("fresh: %v, want exactly one OOM", evs)
	}
	if evs := c2.all(); len(evs) != 0 {
		t.Errorf("adopted with baseline 1: %v, want no events", evs)
	}
}

// 50 groups OOM at the same moment: exactly 50 OOM events, one per group.
func TestFiftyGroupsOOMAtOnce(t *testing.T) {
	k := realKernel(t)
	w, c := newWatcher(t, k.mode)
	const n = 50
	var hogs []*hog
	for i := range n {
		dir := k.group(t, fmt.Sprintf("g%d", i), 16*mib)
		if err := w.Add(strconv.Itoa(i), dir); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, startHog(t, dir, "OOMTEST_HOG=anon", "OOMTEST_BYTES=0"))
	}
	for _, h := range hogs {
		h.release()
	}
	for i, h := range hogs {
		if err := h.wait(); !sigkilled(err) {
			t.Errorf("hog %d: %v, want SIGKILL", i, err)
		}
	}
	for i := range n {
		c.waitFor(t, strconv.Itoa(i), OOM, 1, cgtest.Timeout(10*time.Second))
	}
	quiesce(t, w)
	total := 0
	for i := range n {
		evs := c.of(strconv.Itoa(i), OOM)
		if len(evs) != 1 || evs[0].OOMKills != 1 {
			t.Errorf("group %d: OOM events %v, want exactly one with OOMKills 1", i, evs)
		}
		total += len(evs)
	}
	if total != n {
		t.Errorf("%d OOM events, want %d", total, n)
	}
}

// rmdir of a watched group is Removed, not OOM, and drops the key with
// everything it held; with pressure on (on v2 the PSI trigger reports the
// removal too) and without.
func TestRmdirReportsRemoved(t *testing.T) {
	k := realKernel(t)
	for _, pressure := range []bool{false, true} {
		t.Run(fmt.Sprintf("pressure=%v", pressure), func(t *testing.T) {
			var opts []Option
			if pressure {
				opts = append(opts, WithPressure(PressureConfig{}))
			}
			dir := k.group(t, "g", 16*mib)
			w, c := newWatcher(t, k.mode)
			before := countFDs(t)
			if err := w.Add("k", dir, opts...); err != nil {
				t.Fatal(err)
			}
			if err := unix.Rmdir(dir); err != nil {
				t.Fatal(err)
			}
			c.waitFor(t, "k", Removed, 1, cgtest.Timeout(5*time.Second))
			quiesce(t, w)
			if evs := c.all(); len(evs) != 1 {
				t.Errorf("events %v, want exactly one Removed", evs)
			}
			if n := countFDs(t); n != before {
				t.Errorf("%d descriptors open after Removed, %d before Add", n, before)
			}
			if w.ino >= 0 {
				if n := inotifyWatches(t, w); n != 0 {
					t.Errorf("%d inotify watches left after Removed", n)
				}
			}
			if err := w.Remove("k"); err != nil {
				t.Errorf("Remove after Removed: %v", err)
			}
			// The key and the path are free again.
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := w.Add("k", dir, opts...); err != nil {
				t.Errorf("Add of the key again: %v", err)
			}
		})
	}
}

// Remove closes every descriptor of the key, reports nothing, and the
// group can be deleted afterwards.
func TestRemoveThenRmdir(t *testing.T) {
	k := realKernel(t)
	dir := k.group(t, "g", 16*mib)
	w, c := newWatcher(t, k.mode)
	before := countFDs(t)
	if err := w.Add("k", dir, WithPressure(PressureConfig{V1Levels: []string{"low", "medium", "critical"}})); err != nil {
		t.Fatal(err)
	}
	// v1: eventfd + oom_control + one eventfd per level; v2: the group's
	// directory and one PSI trigger (the events files are watched through
	// the shared inotify descriptor).
	want := map[cgroup.Mode]int{cgroup.V1: 5, cgroup.V2: 2}[k.mode]
	if got := countFDs(t) - before; got != want {
		t.Errorf("Add opened %d descriptors, want %d", got, want)
	}
	for range 2 {
		if err := w.Remove("k"); err != nil {
			t.Fatal(err)
		}
		if n := countFDs(t); n != before {
			t.Errorf("%d descriptors open after Remove, %d before Add", n, before)
		}
	}
	if err := unix.Rmdir(dir); err != nil {
		t.Fatalf("rmdir after Remove: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // time for a stray notification to arrive
	quiesce(t, w)
	if evs := c.all(); len(evs) != 0 {
		t.Errorf("events after Remove: %v", evs)
	}
}

// A neighbour whose hog stays below its limit hears nothing while the
// other group OOMs.
func TestNeighbourBelowLimitQuiet(t *testing.T) {
	k := realKernel(t)
	w, c := newWatcher(t, k.mode)
	oomDir, okDir := k.group(t, "oom", 16*mib), k.group(t, "ok", 64*mib)
	for key, dir := range map[string]string{"oom": oomDir, "ok": okDir} {
		if err := w.Add(key, dir, WithPressure(PressureConfig{})); err != nil {
			t.Fatal(err)
		}
	}
	bad := startHog(t, oomDir, "OOMTEST_HOG=anon", "OOMTEST_BYTES=0")
	good := startHog(t, okDir, "OOMTEST_HOG=anon", "OOMTEST_BYTES="+strconv.Itoa(16*mib))
	good.release()
	bad.release()
	if err := good.wait(); err != nil {
		t.Fatalf("hog below its limit: %v", err)
	}
	if err := bad.wait(); !sigkilled(err) {
		t.Fatalf("hog above its limit: %v, want SIGKILL", err)
	}
	c.waitFor(t, "oom", OOM, 1, cgtest.Timeout(5*time.Second))
	quiesce(t, w)
	if evs := c.of("oom", OOM); len(evs) != 1 {
		t.Errorf("OOM events of the hog's group %v, want 1", evs)
	}
	if evs := c.of("ok", OOM, Pressure, Removed); len(evs) != 0 {
		t.Errorf("neighbour got %v, want nothing", evs)
	}
}

// A group under memory pressure reports it, rate-limited to one event per
// level within the interval although the kernel notifies again and again
// (an independent listener counts the kernel's notifications, and the load
// is kept on until it has had at least two).
//
// v1: a group reclaiming page cache hard at its limit. How soon the kernel
// rates reclaim as medium or critical varies from run to run (it depends
// on how fast writeback cleans the pages).
//
// v2: anonymous memory above the group's memory.high and well below its
// memory.max. Without swap nothing of it can be reclaimed, so every
// allocation stalls in the kernel's reclaim and then in its over-high
// throttling, both of which PSI counts as memory stall — and nothing
// OOMs. (A page-cache load is no use in the cgroup v2 stage: its guest has
// only tmpfs, whose pages cannot be reclaimed without swap, so the group
// OOMs instead.)
func TestPressureRateLimited(t *testing.T) {
	k := realKernel(t)
	const trigger = "some 10000 500000"
	w, c := newWatcher(t, k.mode)
	var dir string
	var load []string
	// sent returns how many notifications the independent listener has had.
	var sent func() uint64
	if k.mode == cgroup.V1 {
		dir = k.group(t, "g", 64*mib)
		efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(efd) })
		pfd, err := unix.Open(filepath.Join(dir, "memory.pressure_level"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = writeEventControl(dir, fmt.Sprintf("%d %d medium,local", efd, pfd))
		unix.Close(pfd)
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		sent = func() uint64 {
			var b [8]byte
			if m, _ := unix.Read(efd, b[:]); m == 8 {
				n += binary.NativeEndian.Uint64(b[:])
			}
			return n
		}
		load = []string{"OOMTEST_HOG=file", "OOMTEST_LOOP=1",
			"OOMTEST_FILE=" + filepath.Join(t.TempDir(), "f"), "OOMTEST_BYTES=" + strconv.Itoa(256*mib)}
	} else {
		dir = k.group(t, "g", 256*mib)
		if err := os.WriteFile(filepath.Join(dir, "memory.high"), []byte(strconv.Itoa(16*mib)), 0); err != nil {
			t.Fatal(err)
		}
		sent = psiListener(t, dir, trigger)
		load = []string{"OOMTEST_HOG=anon", "OOMTEST_BYTES=" + strconv.Itoa(64*mib)}
	}
	p := PressureConfig{MinInterval: time.Hour, V2Triggers: []string{trigger}}
	if err := w.Add("k", dir, WithPressure(p)); err != nil {
		t.Fatal(err)
	}
	h := startHog(t, dir, load...)
	h.release()
	c.waitFor(t, "k", Pressure, 1, cgtest.Timeout(60*time.Second))
	for deadline := time.Now().Add(cgtest.Timeout(30 * time.Second)); sent() < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the kernel notified the independent listener %d times in %v, want at least 2", sent(), cgtest.Timeout(30*time.Second))
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.cmd.Process.Kill()
	h.wait()
	quiesce(t, w)
	t.Logf("the kernel notified the independent listener %d times", sent())
	seen := map[string]int{}
	for _, ev := range c.of("k", Pressure) {
		seen[ev.Level]++
	}
	for level, n := range seen {
		if n != 1 {
			t.Errorf("level %s: %d events within the interval, want 1", level, n)
		}
	}
	if o := c.of("k", OOM); len(o) != 0 {
		t.Errorf("pressure reported as OOM: %v", o)
	}
	t.Logf("pressure events: %v", seen)
}

// psiListener arms the PSI trigger on the v2 group at dir through a
// descriptor of its own and counts, until the test ends, how often the
// kernel fires it (each EPOLLPRI is one firing, at most one per window).
func psiListener(t *testing.T, dir, trigger string) func() uint64 {
	t.Helper()
	fd, err := unix.Open(filepath.Join(dir, "memory.pressure"), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(fd, append([]byte(trigger), 0)); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	var n atomic.Uint64
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
			if k, err := unix.Poll(pfd, 50); err != nil && err != unix.EINTR || k > 0 && pfd[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				return
			} else if k > 0 && pfd[0].Revents&unix.POLLPRI != 0 {
				n.Add(1)
			}
		}
	}()
	t.Cleanup(func() {
		stop.Store(true)
		<-done
		unix.Close(fd)
	})
	return n.Load
}

// Add and Remove from many goroutines at once: no race, no leak, and a
// key is never watched twice.
func TestConcurrentAddRemove(t *testing.T) {
	k := realKernel(t)
	w, _ := newWatcher(t, k.mode)
	var dirs []string
	for i := range 8 {
		dirs = append(dirs, k.group(t, fmt.Sprintf("g%d", i), 16*mib))
	}
	before := countFDs(t)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				n := (g + i) % len(dirs)
				key := strconv.Itoa(n)
				err := w.Add(key, dirs[n], WithPressure(PressureConfig{}))
				if err != nil && !errors.Is(err, ErrExist) {
					select {
					case errs <- err:
					default:
					}
				}
				if i%3 == 0 {
					w.Remove(key)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Add: %v", err)
	}
	for n := range dirs {
		w.Remove(strconv.Itoa(n))
	}
	if n := countFDs(t); n != before {
		t.Errorf("%d descriptors open after removing every key, %d before", n, before)
	}
}

// A caller that deletes a group as soon as it is reported empty still
// hears of the kill that emptied it. The kernel rate-limits notifications
// of a cgroup file (one per 20 ms, the rest deferred to a timer), and rmdir
// cancels a deferred one: the kill's memory.events notification, deferred
// behind the one for reaching memory.max, used to arrive after the Empty —
// or, with the group deleted on Empty, never.
func TestOOMReportedBeforeEmpty(t *testing.T) {
	k := realKernel(t)
	if k.mode != cgroup.V2 {
		t.Skip("cgroup v1 reports no Empty")
	}
	const n = 20
	dirs := map[string]string{}
	for i := range n {
		dirs[strconv.Itoa(i)] = k.group(t, fmt.Sprintf("g%d", i), 4*mib)
	}
	c := &collector{}
	w, err := NewWatcher(k.mode, func(ev Event) {
		c.handle(ev)
		if ev.Kind == Empty {
			if err := unix.Rmdir(dirs[ev.Key]); err != nil {
				t.Errorf("rmdir on Empty: %v", err)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	var hogs []*hog
	for i := range n {
		key := strconv.Itoa(i)
		if err := w.Add(key, dirs[key]); err != nil {
			t.Fatal(err)
		}
		hogs = append(hogs, startHog(t, dirs[key], "OOMTEST_HOG=anon", "OOMTEST_BYTES=0"))
	}
	for _, h := range hogs {
		h.release()
	}
	for i, h := range hogs {
		if err := h.wait(); !sigkilled(err) {
			t.Errorf("hog %d: %v, want SIGKILL", i, err)
		}
	}
	for key := range dirs {
		c.waitFor(t, key, Removed, 1, cgtest.Timeout(10*time.Second))
	}
	quiesce(t, w)
	for i := range n {
		var kinds []Kind
		for _, ev := range c.of(strconv.Itoa(i)) {
			kinds = append(kinds, ev.Kind)
		}
		if fmt.Sprint(kinds) != "[oom empty removed]" {
			t.Errorf("group %d: events %v, want [oom empty removed]", i, kinds)
		}
	}
}
