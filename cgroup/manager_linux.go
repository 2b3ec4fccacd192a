package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Manager creates and finds the instance groups under one parent.
// It is safe for concurrent use.
type Manager struct {
	mode   Mode
	root   string
	parent string

	// v1 only: whether the kernel accounts swap (memory.memsw.* exist).
	memsw bool

	// mkdir and rmdir create and remove one cgroup directory. On a real
	// cgroupfs they are plain mkdir(2)/rmdir(2), and the kernel populates
	// the interface files; the v2 tests swap in versions that emulate that
	// on an ordinary directory.
	mkdir func(dir string) error
	rmdir func(dir string) error
}

// HostMode is the cgroup version this host mounts at /sys/fs/cgroup: V2
// for the unified hierarchy alone, V1 for legacy and hybrid hosts, 0 when
// neither is mounted.
func HostMode() Mode {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return V2
	case cgroups.Legacy, cgroups.Hybrid:
		return V1
	}
	return 0
}

// NewManager validates cfg and checks that the host has what ward needs:
// on v1 a hierarchy for every controller under Root, on v2 a cgroup2 mount at
// Root offering memory, cpu and pids.
func NewManager(cfg Config) (*Manager, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if cfg.Mode == 0 {
		cfg.Mode = V1
		if HostMode() == V2 {
			cfg.Mode = V2
		}
	}
	m := &Manager{
		mode:   cfg.Mode,
		root:   cfg.Root,
		parent: cfg.Parent,
		mkdir:  func(dir string) error { return os.Mkdir(dir, 0o755) },
		rmdir:  unix.Rmdir,
	}
	switch m.mode {
	case V1:
		for _, c := range v1Controllers {
			dir := filepath.Join(m.root, c)
			st, err := os.Stat(dir)
			if err != nil {
				return nil, fmt.Errorf("cgroup: v1 controller %s: %w", c, err)
			}
			if !st.IsDir() {
				return nil, fmt.Errorf("cgroup: v1 controller %s: %s is not a directory", c, dir)
			}
		}
		_, err := os.Stat(filepath.Join(m.root, "memory", "memory.memsw.limit_in_bytes"))
		m.memsw = err == nil
	case V2:
		avail, err := readFields(filepath.Join(m.root, "cgroup.controllers"))
		if err != nil {
			return nil, fmt.Errorf("cgroup: %s is not a cgroup2 mount: %w", m.root, err)
		}
		for _, c := range v2Controllers {
			if c != "io" && !slices.Contains(avail, c) {
				return nil, fmt.Errorf("cgroup: v2 controller %s not available at %s", c, m.root)
			}
		}
	}
	return m, nil
}

func (m *Manager) Mode() Mode     { return m.mode }
func (m *Manager) Parent() string { return m.parent }

// Controllers lists the controllers every group is created with.
func (m *Manager) Controllers() []string {
	if m.mode == V1 {
		return slices.Clone(v1Controllers)
	}
	return slices.Clone(v2Controllers)
}

// Path is the cgroup path (not the filesystem path) of the group name.
func (m *Manager) Path(name string) string { return m.parent + "/" + name }

// parentDirs are the parent's filesystem directories, one per hierarchy.
func (m *Manager) parentDirs() []string {
	if m.mode == V2 {
		return []string{filepath.Join(m.root, m.parent)}
	}
	dirs := make([]string, len(v1Controllers))
	for i, c := range v1Controllers {
		dirs[i] = filepath.Join(m.root, c, m.parent)
	}
	return dirs
}

func (m *Manager) group(name string) *Group {
	g := &Group{m: m, name: name, path: m.Path(name)}
	g.dirs = g.buildDirs()
	return g
}

// Create makes group name with res applied. It fails with ErrExist if the
// group exists in any hierarchy (so of concurrent Creates of one name,
// exactly one wins), and on any failure removes every directory it made,
// parents included, so a failed Create leaves nothing behind.
func (m *Manager) Create(name string, res *specs.LinuxResources) (_ *Group, retErr error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if res == nil {
		res = &specs.LinuxResources{}
	}
	if err := m.checkResources(res); err != nil {
		return nil, err
	}
	g := m.group(name)
	var made []string
	defer func() {
		if retErr != nil {
			// Reverse order removes each leaf before the parents made for it.
			// A parent another group now lives in stays (EBUSY), as it should.
			for i := len(made) - 1; i >= 0; i-- {
				_ = m.rmdir(made[i])
			}
		}
	}()
	for _, dir := range g.Dirs() {
		created, err := m.mkdirParents(filepath.Dir(dir))
		made = append(made, created...)
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", g.path, err)
		}
		// A plain mkdir rather than MkdirAll: EEXIST is how two concurrent
		// Creates of one name find out, atomically.
		if err := m.mkdir(dir); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("cgroup %s: %w (%s)", g.path, ErrExist, dir)
			}
			return nil, fmt.Errorf("cgroup %s: %w", g.path, err)
		}
		made = append(made, dir)
	}
	var err error
	if m.mode == V1 {
		err = g.initV1(res)
	} else {
		err = g.initV2(res)
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g.path, err)
	}
	return g, nil
}

// mkdirParents makes the missing directories of dir, top down, and returns
// those it made. On v2 it also enables ward's controllers in the
// subtree_control of every level from the mount down to the parent, so that
// the parent's children get the interface files.
func (m *Manager) mkdirParents(dir string) ([]string, error) {
	var missing []string
	for d := dir; d != m.root && len(d) > len(m.root); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		err := m.mkdir(missing[i])
		switch {
		case err == nil:
			made = append(made, missing[i])
		case !errors.Is(err, fs.ErrExist): // else a concurrent Create made it
			return made, fmt.Errorf("create parent: %w", err)
		}
	}
	if m.mode == V2 {
		d := m.root
		for _, elem := range strings.Split(strings.TrimPrefix(m.parent, "/"), "/") {
			if err := enableControllers(d); err != nil {
				return made, err
			}
			d = filepath.Join(d, elem)
		}
		if err := enableControllers(d); err != nil {
			return made, err
		}
	}
	return made, nil
}

// Load finds an existing group. On v1 a group present in only some
// hierarchies (a crash mid-Create or mid-Delete) still loads, so that it
// can be deleted.
func (m *Manager) Load(name string) (*Group, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	g := m.group(name)
	found := false
	for _, dir := range g.Dirs() {
		if _, err := os.Stat(dir); err == nil {
			found = true
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cgroup %s: %w", g.path, err)
		}
	}
	if !found {
		return nil, fmt.Errorf("cgroup %s: %w", g.path, ErrNotExist)
	}
	if err := g.load(); err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g.path, err)
	}
	return g, nil
}

// List returns the names of the groups directly under the parent, sorted;
// on v1 the union over all hierarchies, so partial groups show up too.
func (m *Manager) List() ([]string, error) {
	var names []string
	for _, dir := range m.parentDirs() {
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("cgroup: list %s: %w", dir, err)
		}
		for _, e := range entries {
			if e.IsDir() && !slices.Contains(names, e.Name()) {
				names = append(names, e.Name())
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// removeTimeout bounds how long Remove waits for killed processes to exit.
const removeTimeout = 5 * time.Second

// Remove kills everything in group name and deletes it; it is for cleaning
// up orphans, e.g. groups left by a previous run. A group already gone is
// not an error.
func (m *Manager) Remove(name string) error {
	g, err := m.Load(name)
	if errors.Is(err, ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return g.Remove()
}

// Remove kills whatever still runs in the group, waits for it to go (up to
// removeTimeout) and deletes the group. A group already gone is not an
// error.
func (g *Group) Remove() error {
	// The usual caller has already emptied the group; a kill-all (on v1 a
	// freeze and thaw) would only cost time.
	if pids, err := g.Pids(); err == nil && len(pids) == 0 {
		return g.Delete()
	}
	if err := g.KillAll(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		return fmt.Errorf("cgroup %s: %w: %w", g.path, ErrNotEmpty, err)
	}
	return g.Delete()
}

// Group is one instance's control group.
type Group struct {
	m    *Manager
	name string
	path string

	v1 cgroup1.Cgroup   // set on v1
	v2 *cgroup2.Manager // set on v2

	// dirs is built once: the sampler asks for it for every instance in
	// every sample.
	dirs []string
}

func (g *Group) Name() string { return g.name }

// Path is the cgroup path, e.g. "/ward/shop-web-0-7f3c9a".
func (g *Group) Path() string { return g.path }

// Dirs are the group's filesystem directories: on v1 one per controller
// (Root/<controller>/<path>), whether or not it currently exists; on v2 one.
//
// The slice is shared: callers must not modify it.
func (g *Group) Dirs() []string { return g.dirs }

func (g *Group) buildDirs() []string {
	if g.m.mode == V2 {
		return []string{filepath.Join(g.m.root, g.path)}
	}
	dirs := make([]string, len(v1Controllers))
	for i, c := range v1Controllers {
		dirs[i] = filepath.Join(g.m.root, c, g.path)
	}
	return dirs
}

// MemoryDir is the directory of the group's memory controller: where its
// OOM and pressure notifications are registered (v1 memory hierarchy, v2
// the group's one directory).
func (g *Group) MemoryDir() string {
	if g.m.mode == V2 {
		return filepath.Join(g.m.root, g.path)
	}
	return g.v1Dir("memory")
}

func (g *Group) load() error {
	if g.m.mode == V1 {
		return g.loadV1()
	}
	mgr, err := cgroup2.Load(g.path, cgroup2.WithMountpoint(g.m.root))
	if err != nil {
		return err
	}
	g.v2 = mgr
	return nil
}

// Update applies res to the live group; nil fields are left as they are.
func (g *Group) Update(res *specs.LinuxResources) error {
	if res == nil {
		return nil
	}
	if err := g.m.checkResources(res); err != nil {
		return err
	}
	var err error
	if g.m.mode == V1 {
		err = g.updateV1(res)
	} else {
		err = g.updateV2(res)
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: update: %w", g.path, err)
	}
	return nil
}

// Resources reads back the limits the kernel files hold, in the same OCI
// terms Create and Update take (-1 for unlimited; Memory.Swap nil when the
// kernel does not account swap). The kernel rounds memory limits down to
// whole pages. On v2 CPU.Shares is
// derived from cpu.weight by inverting SharesToWeight; as that map rounds,
// it returns the largest share count with that weight (the defaults, 1024
// and 100, round-trip exactly).
func (g *Group) Resources() (*specs.LinuxResources, error) {
	var (
		res *specs.LinuxResources
		err error
	)
	if g.m.mode == V1 {
		res, err = g.resourcesV1()
	} else {
		res, err = g.resourcesV2()
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", g.path, err)
	}
	return res, nil
}

// Stats reports the group's current usage.
func (g *Group) Stats() (*Stats, error) {
	var (
		st  *Stats
		err error
	)
	if g.m.mode == V1 {
		st, err = g.statsV1()
	} else {
		st, err = g.statsV2()
	}
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: stats: %w", g.path, err)
	}
	return st, nil
}

// Pids lists every process in the group and its descendants, sorted; on v1
// the union over all hierarchies, so a process half-moved still shows up.
func (g *Group) Pids() ([]int, error) {
	dirs := g.Dirs()
	if g.m.mode == V1 {
		// Every process ward places joins all six hierarchies and its
		// children inherit them, so one hierarchy lists them all. The
		// freezer's is the one kill-all acts on. Only a partial leftover
		// lacks it; then every hierarchy is read.
		if d := g.v1Dir("freezer"); exists(d) {
			dirs = []string{d}
		}
	}
	var pids []int
	for _, dir := range dirs {
		ps, err := pidsUnder(dir)
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: pids: %w", g.path, err)
		}
		pids = append(pids, ps...)
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

func (g *Group) v1Dir(controller string) string {
	return filepath.Join(g.m.root, controller, g.path)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// pidsUnder reads dir's cgroup.procs and, if it has child groups, theirs.
// A cgroupfs directory's link count is 2 plus its subdirectories, so the
// usual childless group costs one stat and one read, not a directory walk:
// this runs on every stop.
func pidsUnder(dir string) ([]int, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	pids, err := readPids(filepath.Join(dir, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil || st.Nlink <= 2 {
		return pids, err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return pids, nil
		}
		return nil, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		ps, err := pidsUnder(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		pids = append(pids, ps...)
	}
	return pids, nil
}

// Signal sends sig to every process in the group. A process exiting
// meanwhile is not an error. On v1 the group is frozen while it is done, so
// no process forked meanwhile is missed and no pid reused meanwhile is hit.
// On v2 pids are read first and signalled after, with those two races (in
// principle); KillAll has neither.
func (g *Group) Signal(sig unix.Signal) error {
	if g.m.mode == V1 {
		return g.signalFrozenV1(sig)
	}
	pids, err := g.Pids()
	if err != nil {
		return err
	}
	return signalAll(pids, sig)
}

func signalAll(pids []int, sig unix.Signal) error {
	var errs []error
	self := os.Getpid()
	for _, pid := range pids {
		// A v1 group lists the process of every thread in it. The caller
		// may have a thread passing through (see package spawn): never
		// signal ourselves.
		if pid == self {
			continue
		}
		if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("signal %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// KillAll SIGKILLs every process in the group, including ones forking while
// it runs. It does not wait for them to exit: use WaitEmpty.
func (g *Group) KillAll() error {
	if g.m.mode == V1 {
		return g.killAllV1()
	}
	// cgroup.kill is atomic against forks; containerd falls back to
	// freeze-kill-thaw on kernels older than 5.14 that lack it.
	if err := g.v2.Kill(); err != nil {
		return fmt.Errorf("cgroup %s: kill: %w", g.path, err)
	}
	return nil
}

// WaitEmpty returns nil once no process is left in the group (or the group
// is gone), or ctx's error. On v2 it sleeps until the kernel reports the
// group unpopulated in cgroup.events; v1 has no notification for emptiness,
// so there it polls, backing off from 50µs to 20ms.
func (g *Group) WaitEmpty(ctx context.Context) error {
	if g.m.mode == V2 {
		return g.waitEmptyV2(ctx)
	}
	// A killed process is gone within tens of microseconds; start polling
	// at that scale and back off to 20 ms for stragglers.
	delay := 50 * time.Microsecond
	for {
		pids, err := g.Pids()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cgroup %s: %d processes left: %w", g.path, len(pids), ctx.Err())
		case <-t.C:
		}
		delay = min(delay*2, 20*time.Millisecond)
	}
}

// deleteTimeout bounds how long Delete retries EBUSY. A process that was
// just killed keeps its group busy until it has finished exiting, which
// takes milliseconds; anything longer is a live process.
const deleteTimeout = time.Second

// Delete removes the group, child groups first, from every hierarchy. Parts
// already gone count as removed. A group that still holds processes fails
// within about a second with an error wrapping ErrNotEmpty.
func (g *Group) Delete() error {
	deadline := time.Now().Add(deleteTimeout)
	for _, dir := range g.Dirs() {
		// The usual group has no children: one rmdir does. EBUSY means
		// children or processes; the walk below sorts them out.
		if err := g.m.rmdir(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
			continue
		}
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
			return fmt.Errorf("cgroup %s: delete: %w", g.path, err)
		}
		// WalkDir is pre-order: reversed, every child precedes its parent.
		for i := len(tree) - 1; i >= 0; i-- {
			if err := g.m.rmdirRetry(tree[i], deadline); err != nil {
				return fmt.Errorf("cgroup %s: delete: %w", g.path, err)
			}
		}
	}
	return nil
}

func (m *Manager) rmdirRetry(dir string, deadline time.Time) error {
	delay := time.Millisecond
	for {
		err := m.rmdir(dir)
		switch {
		case err == nil || errors.Is(err, fs.ErrNotExist):
			return nil
		case !errors.Is(err, unix.EBUSY):
			return fmt.Errorf("rmdir %s: %w", dir, err)
		case time.Now().After(deadline):
			return fmt.Errorf("rmdir %s: %w: %w", dir, ErrNotEmpty, err)
		}
		time.Sleep(delay)
		delay = min(delay*2, 20*time.Millisecond)
	}
}

// AddProc moves process pid into the group, in every hierarchy.
func (g *Group) AddProc(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("cgroup %s: invalid pid %d", g.path, pid)
	}
	var err error
	if g.m.mode == V1 {
		err = g.v1.AddProc(uint64(pid))
	} else {
		err = g.v2.AddProc(uint64(pid))
	}
	if err != nil {
		return fmt.Errorf("cgroup %s: add process %d: %w", g.path, pid, err)
	}
	return nil
}

// checkResources rejects requests that no write order could satisfy, before
// anything is written.
func (m *Manager) checkResources(res *specs.LinuxResources) error {
	if mem := res.Memory; mem != nil && mem.Limit != nil && mem.Swap != nil {
		if limitValue(*mem.Swap) < limitValue(*mem.Limit) {
			return fmt.Errorf("cgroup: memory+swap limit %d is below memory limit %d", *mem.Swap, *mem.Limit)
		}
	}
	return nil
}

// limitValue orders OCI byte limits, with -1 (unlimited) above all others.
func limitValue(v int64) int64 {
	if v == -1 {
		return 1<<63 - 1
	}
	return v
}

// readPids parses a cgroup.procs file.
func readPids(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", file, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

func readFields(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return strings.Fields(string(b)), nil
}

func readString(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// readInt reads a single-number interface file; "max" reads as -1.
func readInt(file string) (int64, error) {
	s, err := readString(file)
	if err != nil {
		return 0, err
	}
	if s == "max" {
		return -1, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", file, err)
	}
	return v, nil
}

// writeFile writes one value to an existing interface file. Unlike
// os.WriteFile it never creates the file: a missing file means a missing
// controller and must not be papered over.
func writeFile(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// The bare errno: the *PathError would repeat the file name.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("write %q to %s: %w", value, file, err)
	}
	return nil
}

// Lock takes an exclusive lock on the parent group (creating it if
// needed), held until the returned file is closed. Two agents sharing a
// parent would each remove the other's groups as leaks; the lock is keyed
// on the parent itself so that no choice of state directories can allow it.
func (m *Manager) Lock() (*os.File, error) {
	dir := m.parentDirs()[0]
	if _, err := m.mkdirParents(dir); err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", m.parent, err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", m.parent, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("cgroup %s: %w", m.parent, ErrLocked)
		}
		return nil, fmt.Errorf("cgroup %s: lock: %w", m.parent, err)
	}
	return f, nil
}
