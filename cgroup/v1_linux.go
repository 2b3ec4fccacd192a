package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// v1Hierarchy is containerd's view of ward's hierarchies. It is spelled out
// instead of cgroup1.Default, which reads /proc/self/mountinfo and would
// drag in cpuset, devices and named hierarchies.
func v1Hierarchy(root string) cgroup1.Hierarchy {
	return func() ([]cgroup1.Subsystem, error) {
		return []cgroup1.Subsystem{
			cgroup1.NewMemory(root, cgroup1.OptionalSwap()),
			cgroup1.NewCpu(root),
			cgroup1.NewCpuacct(root),
			cgroup1.NewPids(root),
			cgroup1.NewBlkio(root),
			cgroup1.NewFreezer(root),
		}, nil
	}
}

// loadV1 wraps the existing directories in a containerd cgroup. Load, not
// New: New would MkdirAll, re-creating hierarchies a partial group lacks.
func (g *Group) loadV1() error {
	cg, err := cgroup1.Load(cgroup1.StaticPath(g.path), cgroup1.WithHierarchy(v1Hierarchy(g.m.root)))
	if errors.Is(err, cgroup1.ErrCgroupDeleted) {
		return fmt.Errorf("%w: %w", ErrNotExist, err)
	}
	if err != nil {
		return err
	}
	g.v1 = cg
	return nil
}

func (g *Group) initV1(res *specs.LinuxResources) error {
	if err := g.loadV1(); err != nil {
		return err
	}
	return g.updateV1(res)
}

func (g *Group) updateV1(res *specs.LinuxResources) error {
	if err := g.setMemoryV1(res.Memory); err != nil {
		return err
	}
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit <= 0 {
		// containerd skips non-positive limits, which would leave a
		// lowered-then-lifted limit in place.
		if err := writeFile(g.v1File("pids", "pids.max"), "max"); err != nil {
			return err
		}
	}
	// containerd writes the rest; its memory Update is kept away from
	// limit and memsw, whose order it gets wrong (see setMemoryV1).
	rest := *res
	if res.Memory != nil {
		mem := *res.Memory
		mem.Limit, mem.Swap = nil, nil
		rest.Memory = &mem
	}
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit <= 0 {
		rest.Pids = nil
	}
	return g.v1.Update(&rest)
}

func (g *Group) v1File(controller, file string) string {
	return filepath.Join(g.m.root, controller, g.path, file)
}

// setMemoryV1 writes memory.limit_in_bytes and memory.memsw.limit_in_bytes.
// The kernel requires memsw >= memory at every moment and refuses (EINVAL)
// any single write that would break it, so the order depends on the
// direction: if the new memory limit fits under the current memsw limit it
// goes first (then memsw, which is >= it); otherwise memsw goes first (it
// is >= the new memory limit > the current memsw >= the current memory
// limit). containerd's own Update means to do this but swaps the wrong
// entries of its settings list (limit and soft_limit).
func (g *Group) setMemoryV1(mem *specs.LinuxMemory) error {
	if mem == nil || (mem.Limit == nil && mem.Swap == nil) {
		return nil
	}
	limitFile := g.v1File("memory", "memory.limit_in_bytes")
	swapFile := g.v1File("memory", "memory.memsw.limit_in_bytes")
	type write struct {
		file  string
		value int64
	}
	var writes []write

	switch {
	case mem.Swap != nil && !g.m.memsw:
		// Without swap accounting there is no memsw to write. A total at or
		// below the memory limit (or unlimited) is what the host gives
		// anyway; a bounded allowance above it cannot be enforced.
		limit, err := g.currentOr(mem.Limit, limitFile)
		if err != nil {
			return err
		}
		if *mem.Swap != -1 && limitValue(*mem.Swap) > limitValue(limit) {
			return fmt.Errorf("memory+swap limit %d needs swap accounting, which this kernel lacks (no memory.memsw.limit_in_bytes; boot with swapaccount=1)", *mem.Swap)
		}
		if mem.Limit != nil {
			writes = []write{{limitFile, *mem.Limit}}
		}
	case mem.Swap == nil:
		if g.m.memsw {
			cur, err := g.currentOr(nil, swapFile)
			if err != nil {
				return err
			}
			if limitValue(*mem.Limit) > limitValue(cur) {
				return fmt.Errorf("memory limit %d is above the current memory+swap limit %d: set Swap too", *mem.Limit, cur)
			}
		}
		writes = []write{{limitFile, *mem.Limit}}
	case mem.Limit == nil:
		writes = []write{{swapFile, *mem.Swap}}
	default:
		cur, err := g.currentOr(nil, swapFile)
		if err != nil {
			return err
		}
		writes = []write{{limitFile, *mem.Limit}, {swapFile, *mem.Swap}}
		if limitValue(*mem.Limit) > limitValue(cur) {
			writes[0], writes[1] = writes[1], writes[0]
		}
	}
	for _, w := range writes {
		if err := writeFile(w.file, strconv.FormatInt(w.value, 10)); err != nil {
			return err
		}
	}
	return nil
}

// currentOr returns *v, or the value file holds when v is nil.
func (g *Group) currentOr(v *int64, file string) (int64, error) {
	if v != nil {
		return *v, nil
	}
	cur, err := readInt(file)
	if err != nil {
		return 0, err
	}
	return unlimitedV1(cur), nil
}

// unlimitedV1 maps the kernel's "no limit" (LONG_MAX rounded down to a page
// multiple, 9223372036854771712 with 4 KiB pages) to OCI's -1. Any value
// within 1 MiB of LONG_MAX is that, whatever the page size.
func unlimitedV1(v int64) int64 {
	if v > 1<<63-1-1<<20 {
		return -1
	}
	return v
}

func (g *Group) resourcesV1() (*specs.LinuxResources, error) {
	limit, err := readInt(g.v1File("memory", "memory.limit_in_bytes"))
	if err != nil {
		return nil, err
	}
	limit = unlimitedV1(limit)
	mem := &specs.LinuxMemory{Limit: &limit}
	if g.m.memsw {
		swap, err := readInt(g.v1File("memory", "memory.memsw.limit_in_bytes"))
		if err != nil {
			return nil, err
		}
		swap = unlimitedV1(swap)
		mem.Swap = &swap
	}
	shares, err := readInt(g.v1File("cpu", "cpu.shares"))
	if err != nil {
		return nil, err
	}
	quota, err := readInt(g.v1File("cpu", "cpu.cfs_quota_us"))
	if err != nil {
		return nil, err
	}
	period, err := readInt(g.v1File("cpu", "cpu.cfs_period_us"))
	if err != nil {
		return nil, err
	}
	pids, err := readInt(g.v1File("pids", "pids.max"))
	if err != nil {
		return nil, err
	}
	ushares, uperiod := uint64(shares), uint64(period)
	return &specs.LinuxResources{
		Memory: mem,
		CPU:    &specs.LinuxCPU{Shares: &ushares, Quota: &quota, Period: &uperiod},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}, nil
}

// statsV1 reads the handful of files Stats reports, not containerd's full
// Stat (every file of every controller, ~0.5 ms): `info` and `list` call
// this per instance.
func (g *Group) statsV1() (*Stats, error) {
	var st Stats
	for _, f := range []struct {
		ctrl, file string
		dst        *uint64
	}{
		{"memory", "memory.usage_in_bytes", &st.MemoryUsage},
		{"memory", "memory.limit_in_bytes", &st.MemoryLimit},
		{"memory", "memory.max_usage_in_bytes", &st.MemoryPeak},
		{"cpuacct", "cpuacct.usage", &st.CPUUsage},
		{"pids", "pids.current", &st.Pids},
	} {
		v, err := readString(g.v1File(f.ctrl, f.file))
		if errors.Is(err, fs.ErrNotExist) {
			continue // a partial group
		}
		if err != nil {
			return nil, err
		}
		if *f.dst, err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, fmt.Errorf("%s: %w", f.file, err)
		}
	}
	oc, err := readString(g.v1File("memory", "memory.oom_control"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, line := range strings.Split(oc, "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			st.OOMKills, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return &st, nil
}

// freezeTimeout bounds the wait for the v1 freezer to settle. containerd's
// Freeze loops until FROZEN with no bound, which would hang ward on a task
// stuck in uninterruptible sleep.
const freezeTimeout = time.Second

// killAllV1 freezes the group, SIGKILLs every process, and thaws it. While
// frozen nothing can fork or exit, so the pid list is complete and no pid
// in it can be reused before the signal lands; the kills are delivered on
// thaw. The group is thawed even if a step fails.
func (g *Group) killAllV1() error { return g.signalFrozenV1(unix.SIGKILL) }

// signalFrozenV1 sends sig to every process with the group frozen: nothing
// can fork or exit meanwhile, so the pid list is complete and no pid in it
// can be reused by another process before the signal lands.
func (g *Group) signalFrozenV1(sig unix.Signal) error {
	state := g.v1File("freezer", "freezer.state")
	_, err := os.Stat(state)
	freezable := err == nil // a partial group may lack the freezer
	var errs []error
	if freezable {
		if err := freezeV1(state); err != nil {
			// Kill what can be seen anyway; the caller's WaitEmpty will
			// tell whether anything escaped.
			errs = append(errs, err)
		}
	}
	pids, err := g.Pids()
	if err == nil {
		err = signalAll(pids, sig)
	}
	if err != nil {
		errs = append(errs, err)
	}
	if freezable {
		if err := writeFile(state, "THAWED"); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cgroup %s: signal %s: %w", g.path, unix.SignalName(sig), err)
	}
	return nil
}

func freezeV1(state string) error {
	deadline := time.Now().Add(freezeTimeout)
	delay := 100 * time.Microsecond
	for {
		// Rewriting FROZEN retries tasks that could not be frozen yet.
		if err := writeFile(state, "FROZEN"); err != nil {
			return err
		}
		s, err := readString(state)
		if err != nil {
			return err
		}
		if s == "FROZEN" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("freeze: %s still %s after %v", state, s, freezeTimeout)
		}
		time.Sleep(delay)
		delay = min(delay*2, 20*time.Millisecond)
	}
}
