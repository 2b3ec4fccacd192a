package oom

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
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
// everything it held.
func TestRmdirReportsRemoved(t *testing.T) {
	k := realKernel(t)
	dir := k.group(t, "g", 16*mib)
	w, c := newWatcher(t, k.mode)
	before := countFDs(t)
	if err := w.Add("k", dir, WithPressure(PressureConfig{})); err != nil {
		t.Fatal(err)
	}
	if err := unix.Rmdir(dir); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, "k", Removed, 1, 5*time.Second)
	quiesce(t, w)
	if evs := c.all(); len(evs) != 1 {
		t.Errorf("events %v, want exactly one Removed", evs)
	}
	if n := countFDs(t); n != before {
		t.Errorf("%d descriptors open after Removed, %d before Add", n, before)
	}
	if err := w.Remove("k"); err != nil {
		t.Errorf("Remove after Removed: %v", err)
	}
	// The key is free again.
	if err := w.Add("k", k.group(t, "g2", 16*mib)); err != nil {
		t.Errorf("Add of the key again: %v", err)
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
	// v1: eventfd + oom_control + one eventfd per level; v2: one PSI
	// trigger (the events files are watched through the shared inotify
	// descriptor and read by path).
	want := map[cgroup.Mode]int{cgroup.V1: 5, cgroup.V2: 1}[k.mode]
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
	quiesce(t, w)
	if evs := c.of("oom", OOM); len(evs) != 1 {
		t.Errorf("OOM events of the hog's group %v, want 1", evs)
	}
	if evs := c.of("ok", OOM, Pressure, Removed); len(evs) != 0 {
		t.Errorf("neighbour got %v, want nothing", evs)
	}
}

// A group reclaiming page cache hard at its limit reports pressure,
// rate-limited to one event per level within the interval although the
// kernel notifies many times. How soon the kernel rates reclaim as medium
// or critical varies from run to run (it depends on how fast writeback
// cleans the pages), so the hog keeps going until the first event and a
// little longer.
func TestPressureRateLimited(t *testing.T) {
	k := realKernel(t)
	dir := k.group(t, "g", 64*mib)
	w, c := newWatcher(t, k.mode)
	p := PressureConfig{MinInterval: time.Hour, V2Triggers: []string{"some 10000 500000"}}
	if err := w.Add("k", dir, WithPressure(p)); err != nil {
		t.Fatal(err)
	}
	efd := -1
	if k.mode == cgroup.V1 {
		// An independent listener counts what the kernel sends at medium.
		var err error
		if efd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(efd)
		pfd, err := unix.Open(filepath.Join(dir, "memory.pressure_level"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = writeEventControl(dir, fmt.Sprintf("%d %d medium,local", efd, pfd))
		unix.Close(pfd)
		if err != nil {
			t.Fatal(err)
		}
	}
	h := startHog(t, dir, "OOMTEST_HOG=file", "OOMTEST_LOOP=1",
		"OOMTEST_FILE="+filepath.Join(t.TempDir(), "f"), "OOMTEST_BYTES="+strconv.Itoa(256*mib))
	h.release()
	c.waitFor(t, "k", Pressure, 1, 60*time.Second)
	time.Sleep(time.Second)
	h.cmd.Process.Kill()
	h.wait()
	quiesce(t, w)
	if efd >= 0 {
		var b [8]byte
		n, _ := unix.Read(efd, b[:])
		t.Logf("the kernel sent %d medium notifications", map[bool]uint64{true: binary.NativeEndian.Uint64(b[:])}[n == 8])
	}
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
		t.Errorf("page cache reclaim reported as OOM: %v", o)
	}
	t.Logf("pressure events: %v", seen)
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
