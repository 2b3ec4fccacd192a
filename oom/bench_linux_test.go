package oom

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/internal/latency"
)

// BenchmarkOOMLatency measures how soon an OOM kill is reported, over at
// least 200 kills of a hog in one group (limit 8 MiB) on the host's cgroup
// version.
//
// detect: from the hog's last progress stamp to Event.Time. The hog stores
// the wall clock in a shared page every 64 KiB it touches, so the last stamp
// lies within 16 page faults before the allocation that failed; Event.Time
// is when the loop read the risen counter. The figure covers the kernel's
// reclaim attempts and victim selection, the wakeup and, on v1, the wait for
// the re-read that sees the counter rise (the notification precedes the
// kill). deliver: from Event.Time to the handler's call. exit, for
// reference: from the same stamp to the moment the test, as the hog's
// parent, has reaped it (cmd.Wait returned) — when a supervisor that only
// watches its children would learn of the death.
//
// Run with -benchtime=1x: each iteration is at least 200 OOMs (b.N of them
// if more); ns/op is per OOM, including starting the hog.
func BenchmarkOOMLatency(b *testing.B) {
	k := realKernel(b)
	dir := k.group(b, "g", 8*mib)
	var (
		mu        sync.Mutex
		evs       []Event
		delivered []time.Time
	)
	w, err := NewWatcher(k.mode, func(ev Event) {
		now := time.Now()
		mu.Lock()
		if ev.Kind == OOM {
			evs = append(evs, ev)
			delivered = append(delivered, now)
		}
		mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	if err := w.Add("k", dir); err != nil {
		b.Fatal(err)
	}
	stamp := filepath.Join(b.TempDir(), "stamp")
	if err := os.WriteFile(stamp, make([]byte, 4096), 0o644); err != nil {
		b.Fatal(err)
	}
	n := max(b.N, 200)
	var detect, deliver, exit latency.Sample
	start := time.Now()
	for i := range n {
		h := startHog(b, dir, "OOMTEST_HOG=anon", "OOMTEST_BYTES=0", "OOMTEST_STAMP="+stamp)
		h.release()
		if err := h.wait(); !sigkilled(err) {
			b.Fatalf("hog %d: %v, want SIGKILL", i, err)
		}
		reaped := time.Now()
		deadline := time.Now().Add(5 * time.Second)
		for {
			mu.Lock()
			got := len(evs)
			mu.Unlock()
			if got > i {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("OOM %d not reported within 5s", i+1)
			}
			time.Sleep(100 * time.Microsecond)
		}
		raw, err := os.ReadFile(stamp)
		if err != nil {
			b.Fatal(err)
		}
		last := time.Unix(0, int64(binary.NativeEndian.Uint64(raw)))
		mu.Lock()
		ev, at := evs[i], delivered[i]
		mu.Unlock()
		if ev.OOMKills != uint64(i+1) {
			b.Fatalf("event %d: OOMKills %d, want %d", i, ev.OOMKills, i+1)
		}
		detect.Add(ev.Time.Sub(last))
		deliver.Add(at.Sub(ev.Time))
		exit.Add(reaped.Sub(last))
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(n), "ns/op")
	detect.Report(b, "detect")
	deliver.Report(b, "deliver")
	exit.Report(b, "exit")
	b.ReportMetric(float64(detect.Percentile(100).Microseconds())/1000, "detect-max-ms")
}

// BenchmarkIdleWatchers watches 1,000 idle groups (OOM and pressure at two
// levels each) and measures this process's CPU time over 5 s of idleness,
// against 5 s of the same process before the groups were added: a goroutine
// has no CPU clock of its own, so the figure is the whole process's, Go
// runtime included. loop-wakeups counts the event loop's returns from
// epoll_wait in the idle window. Also reported: Add and Remove per group.
// Run with -benchtime=1x.
func BenchmarkIdleWatchers(b *testing.B) {
	const groups = 1000
	const window = 5 * time.Second
	k := realKernel(b)
	var dirs []string
	for i := range groups {
		dirs = append(dirs, k.group(b, fmt.Sprintf("g%d", i), 64*mib))
	}
	w, c := newWatcher(b, k.mode)
	runtime.GC()
	baseline := cpuOver(b, window)
	fds := countFDs(b)

	t0 := time.Now()
	for i, dir := range dirs {
		if err := w.Add(fmt.Sprint(i), dir, WithPressure(PressureConfig{})); err != nil {
			b.Fatal(err)
		}
	}
	add := time.Since(t0)
	perGroup := float64(countFDs(b)-fds) / groups
	quiesce(b, w) // the re-reads Add schedules on v1 (about 2 s)
	runtime.GC()
	w.mu.Lock()
	wake0 := w.wakeups
	w.mu.Unlock()
	idle := cpuOver(b, window)
	w.mu.Lock()
	wakeups := w.wakeups - wake0
	w.mu.Unlock()

	t0 = time.Now()
	for i := range dirs {
		w.Remove(fmt.Sprint(i))
	}
	remove := time.Since(t0)
	if n := countFDs(b); n != fds {
		b.Errorf("%d descriptors after removing every group, %d before", n, fds)
	}
	if evs := c.all(); len(evs) != 0 {
		b.Errorf("idle groups reported %d events, e.g. %v", len(evs), evs[0])
	}
	b.ReportMetric(float64(baseline.Microseconds())/1000, "baseline-cpu-ms")
	b.ReportMetric(float64(idle.Microseconds())/1000, "idle-cpu-ms")
	b.ReportMetric(float64(wakeups), "loop-wakeups")
	b.ReportMetric(perGroup, "fds/group")
	b.ReportMetric(float64(add.Microseconds())/groups, "add-us/group")
	b.ReportMetric(float64(remove.Microseconds())/groups, "remove-us/group")
}

// cpuOver returns the CPU time (user + system) this process spends while
// it sleeps for d.
func cpuOver(b *testing.B, d time.Duration) time.Duration {
	b.Helper()
	var r0, r1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &r0); err != nil {
		b.Fatal(err)
	}
	time.Sleep(d)
	if err := unix.Getrusage(unix.RUSAGE_SELF, &r1); err != nil {
		b.Fatal(err)
	}
	used := func(r unix.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	return used(r1) - used(r0)
}
