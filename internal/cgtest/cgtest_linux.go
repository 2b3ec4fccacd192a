package cgtest

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/testroot"
)

// Mode is the cgroup version ward drives on this host: what
// cgroup.NewManager picks when its Config leaves Mode 0.
func Mode() cgroup.Mode {
	if cgroups.Mode() == cgroups.Unified {
		return cgroup.V2
	}
	return cgroup.V1
}

// Parent returns a fresh random cgroup parent path, "/<prefix>-<random>",
// that t.Cleanup removes in every hierarchy with whatever groups and
// processes are in it by then. It skips t unless it runs as root on a host
// with the hierarchies ward needs.
func Parent(t testing.TB, prefix string) string {
	t.Helper()
	testroot.Require(t)
	if Mode() == cgroup.V1 {
		if _, err := os.Stat(filepath.Join(Root, "memory", "memory.limit_in_bytes")); err != nil {
			t.Skip("no cgroup v1 memory hierarchy and no unified cgroup2 mount on this host")
		}
	}
	parent := fmt.Sprintf("/%s-%012x", prefix, rand.Uint64()&(1<<48-1))
	t.Cleanup(func() {
		if err := RemoveParent(parent); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return parent
}

// Config returns a Manager configuration for the host's real cgroupfs in
// its own mode, under a fresh parent (see Parent).
func Config(t testing.TB) cgroup.Config {
	t.Helper()
	return cgroup.Config{Mode: Mode(), Root: Root, Parent: Parent(t, "ward-test")}
}

// NewManager returns a Manager over Config(t).
func NewManager(t testing.TB) *cgroup.Manager {
	t.Helper()
	m, err := cgroup.NewManager(Config(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Dirs are the directories of cgroup path p (a parent or a group): one
// per v1 hierarchy ward uses, or the one under the cgroup2 mount.
func Dirs(p string) []string {
	if Mode() == cgroup.V2 {
		return []string{filepath.Join(Root, p)}
	}
	var dirs []string
	for _, c := range cgroup.V1Controllers() {
		dirs = append(dirs, filepath.Join(Root, c, p))
	}
	return dirs
}

// RemoveParent kills every process under cgroup path parent and removes
// the parent and every group below it, in every hierarchy. A parent that
// does not exist is not an error. It is for tests' own parents only: it
// refuses the root.
func RemoveParent(parent string) error {
	if !strings.HasPrefix(parent, "/") || filepath.Clean(parent) == "/" {
		return fmt.Errorf("cgtest: refusing to remove cgroup parent %q", parent)
	}
	var errs []error
	for _, dir := range Dirs(parent) {
		errs = append(errs, removeTree(dir))
	}
	return errors.Join(errs...)
}

// removeTree kills what runs in dir's groups and removes them, children
// first, retrying while killed processes finish exiting.
func removeTree(dir string) error {
	var tree []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			tree = append(tree, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(Timeout(10 * time.Second))
	var errs []error
	// WalkDir is pre-order: reversed, every child precedes its parent.
	for i := len(tree) - 1; i >= 0; i-- {
		for {
			killAll(tree[i])
			err := unix.Rmdir(tree[i])
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("cgtest: rmdir %s: %w", tree[i], err))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs every process in one group: through cgroup.kill on v2
// (forks included), else pid by pid, after thawing a frozen v1 group (a
// frozen process cannot die).
func killAll(dir string) {
	if writeExisting(filepath.Join(dir, "cgroup.kill"), "1") == nil {
		return
	}
	_ = writeExisting(filepath.Join(dir, "freezer.state"), "THAWED")
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return
	}
	self := os.Getpid()
	for _, f := range strings.Fields(string(b)) {
		// The test process itself may be listed while one of its threads
		// passes through a v1 group (see package spawn).
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != self {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// writeExisting writes to an interface file without ever creating one: on
// cgroupfs a missing file means the controller is not there.
func writeExisting(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
