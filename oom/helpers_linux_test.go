package oom

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/testroot"
)

// TestMain lets the test binary double as the memory hog the kernel tests
// put into their groups (no external tools needed).
func TestMain(m *testing.M) {
	if mode := os.Getenv("OOMTEST_HOG"); mode != "" {
		os.Exit(hogMain(mode))
	}
	os.Exit(m.Run())
}

// hogMain is the hog: it blocks until its stdin yields a byte or EOF (so
// the test can move it into a group first), then
//
//	anon:  touches OOMTEST_BYTES of anonymous memory (0: until killed);
//	       with OOMTEST_STAMP, stores the wall clock in that file's first
//	       8 bytes every 64 KiB, so the last stamp is the kill's lower bound
//	child: runs an unbounded anon hog as its own child and exits 0 only if
//	       that child was SIGKILLed
//	file:  writes OOMTEST_BYTES to the file OOMTEST_FILE (page cache) and
//	       reads it back twice through a mapping; with OOMTEST_LOOP, again
//	       and again until killed
func hogMain(mode string) int {
	var b [1]byte
	os.Stdin.Read(b[:])
	n, _ := strconv.ParseInt(os.Getenv("OOMTEST_BYTES"), 10, 64)
	switch mode {
	case "anon":
		var stamp *uint64
		if p := os.Getenv("OOMTEST_STAMP"); p != "" {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return 2
			}
			m, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err != nil {
				return 2
			}
			stamp = (*uint64)(unsafe.Pointer(&m[0]))
		}
		const chunk = 1 << 20
		for done := int64(0); n == 0 || done < n; done += chunk {
			m, err := unix.Mmap(-1, 0, chunk, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
			if err != nil {
				return 3
			}
			for i := 0; i < chunk; i += 4096 {
				if stamp != nil && i%(64<<10) == 0 {
					atomic.StoreUint64(stamp, uint64(time.Now().UnixNano()))
				}
				m[i] = 1
			}
		}
		return 0
	case "child":
		cmd := exec.Command(testBinary())
		cmd.Env = append(os.Environ(), "OOMTEST_HOG=anon", "OOMTEST_BYTES=0")
		if sigkilled(cmd.Run()) {
			return 0
		}
		return 1
	case "file":
		f, err := os.Create(os.Getenv("OOMTEST_FILE"))
		if err != nil {
			return 2
		}
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = byte(i)
		}
		for {
			if _, err := f.Seek(0, 0); err != nil {
				return 3
			}
			for done := int64(0); done < n; done += int64(len(buf)) {
				if _, err := f.Write(buf); err != nil {
					return 3
				}
			}
			// Read it back through a mapping, twice: mapped pages that
			// are used again resist reclaim, which is what pressure is.
			m, err := unix.Mmap(int(f.Fd()), 0, int(n), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				return 3
			}
			var sum byte
			for range 2 {
				for i := 0; i < len(m); i += 4096 {
					sum += m[i]
				}
			}
			unix.Munmap(m)
			sink = sum
			if os.Getenv("OOMTEST_LOOP") == "" {
				return 0
			}
		}
	}
	return 4
}

// sink keeps the hog's reads from being optimised away.
var sink byte

// collector records every event a Watcher delivers.
type collector struct {
	mu  sync.Mutex
	evs []Event
}

func (c *collector) handle(ev Event) {
	c.mu.Lock()
	c.evs = append(c.evs, ev)
	c.mu.Unlock()
}

func (c *collector) all() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.evs...)
}

// of returns the events of key of the given kinds (all kinds if none).
func (c *collector) of(key string, kinds ...Kind) []Event {
	var out []Event
	for _, ev := range c.all() {
		if ev.Key != key {
			continue
		}
		if len(kinds) == 0 || containsKind(kinds, ev.Kind) {
			out = append(out, ev)
		}
	}
	return out
}

func containsKind(ks []Kind, k Kind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

// waitFor waits until key has n events of kind, failing t after timeout.
func (c *collector) waitFor(t testing.TB, key string, kind Kind, n int, timeout time.Duration) []Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := c.of(key, kind)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("key %q: %d %v events after %v, want %d; all events: %v", key, len(evs), kind, timeout, n, c.all())
		}
		time.Sleep(time.Millisecond)
	}
}

func newWatcher(t testing.TB, mode cgroup.Mode) (*Watcher, *collector) {
	t.Helper()
	c := &collector{}
	w, err := NewWatcher(mode, c.handle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return w, c
}

// quiesce waits until w has no v1 re-reads scheduled and every event it
// detected has been handled, so that a count of events is final. On v2 it
// first waits out what the kernel may still owe: it holds back a cgroup
// file's notification that comes within 20 ms of the previous one until
// that interval ends, then delivers it from a workqueue.
func quiesce(t testing.TB, w *Watcher) {
	t.Helper()
	if w.mode == cgroup.V2 {
		time.Sleep(cgtest.Timeout(100 * time.Millisecond))
	}
	bound := cgtest.Timeout(15 * time.Second)
	deadline := time.Now().Add(bound)
	for {
		w.mu.Lock()
		pending := len(w.rechecks)
		w.mu.Unlock()
		w.q.mu.Lock()
		idle := w.q.pushed == w.q.delivered
		w.q.mu.Unlock()
		if pending == 0 && idle {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watcher busy after %v: %d re-reads pending, queue idle %v", bound, pending, idle)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countFDs counts this process's open descriptors.
func countFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// inotifyWatches counts the watches of w's inotify instance.
func inotifyWatches(t testing.TB, w *Watcher) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(w.ino))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "inotify wd:")
}

// kernel is a real cgroup hierarchy with a random test parent of its own,
// in whichever mode the host runs (v1 here; v2 in a v2 VM).
type kernel struct {
	mode   cgroup.Mode
	parent string // absolute directory
}

func realKernel(t testing.TB) *kernel {
	t.Helper()
	testroot.Require(t)
	k := &kernel{mode: cgroup.V1}
	root := "/sys/fs/cgroup/memory"
	if cgroups.Mode() == cgroups.Unified {
		k.mode, root = cgroup.V2, "/sys/fs/cgroup"
		if _, err := os.Stat(filepath.Join(root, "memory.pressure")); err != nil {
			t.Skip("cgroup v2 without the memory controller enabled at the root")
		}
	} else if _, err := os.Stat(filepath.Join(root, "memory.limit_in_bytes")); err != nil {
		t.Skip("no cgroup v1 memory hierarchy on this host")
	}
	b := make([]byte, 6)
	rand.Read(b)
	k.parent = filepath.Join(root, "ward-oom-test-"+hex.EncodeToString(b))
	if err := os.Mkdir(k.parent, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeGroup(t, k.parent) })
	if k.mode == cgroup.V2 {
		if err := os.WriteFile(filepath.Join(k.parent, "cgroup.subtree_control"), []byte("+memory"), 0); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

// group makes a child group of the test parent capped at limit bytes.
func (k *kernel) group(t testing.TB, name string, limit int64) string {
	t.Helper()
	dir := filepath.Join(k.parent, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { removeGroup(t, dir) })
	file := "memory.limit_in_bytes"
	if k.mode == cgroup.V2 {
		file = "memory.max"
		os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0)
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0); err != nil {
		t.Fatal(err)
	}
	return dir
}

// removeGroup kills what a test left in dir (only ever processes of the
// test's own groups) and removes it and its children.
func removeGroup(t testing.TB, dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.IsDir() {
			removeGroup(t, filepath.Join(dir, e.Name()))
		}
	}
	for i := 0; ; i++ {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return
		}
		if i == 500 {
			t.Errorf("cleanup: rmdir %s: %v", dir, err)
			return
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hog is a started, still blocked hog process inside a group.
type hog struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	once  sync.Once
	err   error
}

// startHog starts the test binary as a hog (see hogMain) with env, moves
// it into the group at dir and leaves it blocked until release.
func startHog(t testing.TB, dir string, env ...string) *hog {
	t.Helper()
	cmd := exec.Command(testBinary())
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &hog{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		cmd.Process.Kill()
		h.wait()
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *hog) release() {
	h.stdin.Write([]byte{1})
	h.stdin.Close()
}

func (h *hog) wait() error {
	h.once.Do(func() { h.err = h.cmd.Wait() })
	return h.err
}

// sigkilled reports whether err says the process died of SIGKILL.
func sigkilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// testBinary is this test binary's path, for re-executing it as a hog: not
// os.Args[0], which is a bare name when the binary was found through PATH.
func testBinary() string {
	p, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return p
}
