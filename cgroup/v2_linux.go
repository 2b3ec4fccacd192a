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

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// enableControllers turns ward's controllers on in dir's subtree_control,
// writing only the missing ones: a no-op write still takes the kernel's
// cgroup lock, and the mount root is shared with the host's init.
func enableControllers(dir string) error {
	avail, err := readFields(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return err
	}
	file := filepath.Join(dir, "cgroup.subtree_control")
	enabled, err := readFields(file)
	if err != nil {
		return err
	}
	var add []string
	for _, c := range v2Controllers {
		switch {
		case slices.Contains(enabled, c):
		case slices.Contains(avail, c):
			add = append(add, "+"+c)
		case c == "io":
			// Optional: disk weights are a nicety, not an isolation limit.
		default:
			return fmt.Errorf("controller %s not available in %s", c, dir)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(file, strings.Join(add, " "))
}

func (g *Group) v2File(file string) string {
	return filepath.Join(g.m.root, g.path, file)
}

func (g *Group) initV2(res *specs.LinuxResources) error {
	if err := g.load(); err != nil {
		return err
	}
	return g.updateV2(res)
}

func (g *Group) updateV2(res *specs.LinuxResources) error {
	if err := g.setMemoryV2(res.Memory); err != nil {
		return err
	}
	r := cgroup2.ToResources(res)
	// Memory limits are written above: containerd spells "unlimited" as
	// -1, which memory.max refuses ("max"). For the same reason cpu.max is
	// composed here, and it is also merged with the current value so that
	// setting only Quota does not reset Period (containerd writes cpu.max
	// only when Period is set, defaulting a missing Quota to "max").
	if r.Memory != nil {
		r.Memory.Max, r.Memory.Swap = nil, nil
	}
	if cpu := res.CPU; cpu != nil {
		r.CPU.Weight = nil
		if cpu.Shares != nil && *cpu.Shares != 0 {
			w := SharesToWeight(*cpu.Shares)
			r.CPU.Weight = &w
		}
		r.CPU.Max = ""
		if cpu.Quota != nil || cpu.Period != nil {
			cm, err := g.cpuMax(cpu.Quota, cpu.Period)
			if err != nil {
				return err
			}
			r.CPU.Max = cm
		}
	}
	if p := res.Pids; p != nil && p.Limit != nil && *p.Limit <= 0 {
		r.Pids = &cgroup2.Pids{Max: -1} // "max"; containerd skips 0
	}
	return g.v2.Update(r)
}

// cpuMax composes cpu.max from the requested quota and period, keeping the
// current value of whichever is nil.
func (g *Group) cpuMax(quota *int64, period *uint64) (cgroup2.CPUMax, error) {
	cur, err := readFields(g.v2File("cpu.max"))
	if err != nil {
		return "", err
	}
	if len(cur) != 2 {
		return "", fmt.Errorf("parse %s: %q", g.v2File("cpu.max"), cur)
	}
	q, p := cur[0], cur[1]
	if quota != nil {
		q = "max"
		if *quota >= 0 {
			q = strconv.FormatInt(*quota, 10)
		}
	}
	if period != nil {
		p = strconv.FormatUint(*period, 10)
	}
	return cgroup2.CPUMax(q + " " + p), nil
}

// setMemoryV2 writes memory.max and memory.swap.max. v2 limits swap alone,
// so OCI's memory+swap total becomes Swap-Limit, with the memory limit
// taken from the file when only Swap is given. Everything is checked
// before the first write.
func (g *Group) setMemoryV2(mem *specs.LinuxMemory) error {
	if mem == nil {
		return nil
	}
	swapFile := g.v2File("memory.swap.max")
	var swap *int64 // the memory.swap.max value to write, if any
	if mem.Swap != nil {
		limit := mem.Limit
		if limit == nil {
			cur, err := readInt(g.v2File("memory.max"))
			if err != nil {
				return err
			}
			limit = &cur
		}
		_, err := os.Stat(swapFile)
		hasSwap := err == nil
		var v int64
		switch {
		case *mem.Swap == -1:
			v = -1
		case *limit == -1:
			return errors.New("memory+swap limit needs a memory limit")
		case *mem.Swap < *limit:
			return fmt.Errorf("memory+swap limit %d is below memory limit %d", *mem.Swap, *limit)
		case !hasSwap && *mem.Swap > *limit:
			return fmt.Errorf("memory+swap limit %d needs swap accounting, which this kernel lacks (no memory.swap.max)", *mem.Swap)
		default:
			v = *mem.Swap - *limit
		}
		if hasSwap {
			swap = &v
		}
	}
	if mem.Limit != nil {
		if err := writeFile(g.v2File("memory.max"), maxValue(*mem.Limit)); err != nil {
			return err
		}
	}
	if swap != nil {
		return writeFile(swapFile, maxValue(*swap))
	}
	return nil
}

// maxValue spells an OCI limit for a v2 file: -1 is "max".
func maxValue(v int64) string {
	if v == -1 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

func (g *Group) resourcesV2() (*specs.LinuxResources, error) {
	limit, err := readInt(g.v2File("memory.max"))
	if err != nil {
		return nil, err
	}
	mem := &specs.LinuxMemory{Limit: &limit}
	swapMax, err := readInt(g.v2File("memory.swap.max"))
	switch {
	case err == nil:
		total := int64(-1)
		if limit != -1 && swapMax != -1 {
			total = limit + swapMax
		}
		mem.Swap = &total
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	weight, err := readInt(g.v2File("cpu.weight"))
	if err != nil {
		return nil, err
	}
	cm, err := readFields(g.v2File("cpu.max"))
	if err != nil {
		return nil, err
	}
	if len(cm) != 2 {
		return nil, fmt.Errorf("parse %s: %q", g.v2File("cpu.max"), cm)
	}
	quota := int64(-1)
	if cm[0] != "max" {
		if quota, err = strconv.ParseInt(cm[0], 10, 64); err != nil {
			return nil, fmt.Errorf("parse %s: %w", g.v2File("cpu.max"), err)
		}
	}
	period, err := strconv.ParseUint(cm[1], 10, 64)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", g.v2File("cpu.max"), err)
	}
	pids, err := readInt(g.v2File("pids.max"))
	if err != nil {
		return nil, err
	}
	shares := weightToShares(uint64(weight))
	return &specs.LinuxResources{
		Memory: mem,
		CPU:    &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}, nil
}

func (g *Group) statsV2() (*Stats, error) {
	m, err := g.v2.StatFiltered(cgroup2.StatPids | cgroup2.StatCPU | cgroup2.StatMemory | cgroup2.StatMemoryEvents)
	if err != nil {
		return nil, err
	}
	var st Stats
	if m.Memory != nil {
		st.MemoryUsage = m.Memory.Usage
		st.MemoryLimit = m.Memory.UsageLimit
		st.MemoryPeak = m.Memory.MaxUsage
	}
	if m.MemoryEvents != nil {
		st.OOMKills = m.MemoryEvents.OomKill
	}
	if m.CPU != nil {
		st.CPUUsage = m.CPU.UsageUsec * 1000
	}
	if m.Pids != nil {
		st.Pids = m.Pids.Current
	}
	return &st, nil
}

// waitEmptyV2 waits for "populated 0" in the group's cgroup.events, which
// covers the whole subtree. The kernel signals every change of that file
// to inotify as a modification (cgroupfs sends no IN_DELETE for a group's
// last process), so this parks on the netpoller instead of polling.
func (g *Group) waitEmptyV2(ctx context.Context) error {
	file := g.v2File("cgroup.events")
	// The usual caller has just seen the main process exit: often the
	// group is empty already, and one read is all it costs.
	if empty, err := unpopulated(file); err != nil || empty {
		return err
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("cgroup %s: inotify: %w", g.path, err)
	}
	// Non-blocking, so that os.File reads park on the netpoller and a read
	// deadline can interrupt them.
	ino := os.NewFile(uintptr(fd), "inotify:"+file)
	defer ino.Close()
	if _, err := unix.InotifyAddWatch(fd, file, unix.IN_MODIFY); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // the group is gone, and with it every process
		}
		return fmt.Errorf("cgroup %s: watch %s: %w", g.path, file, err)
	}
	stop := context.AfterFunc(ctx, func() { ino.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		// Read after the watch exists and after every event: a change
		// between the two cannot be missed.
		if empty, err := unpopulated(file); err != nil || empty {
			return err
		}
		if _, err := ino.Read(buf); err != nil {
			if ctx.Err() != nil {
				pids, _ := g.Pids()
				return fmt.Errorf("cgroup %s: %d processes left: %w", g.path, len(pids), ctx.Err())
			}
			return fmt.Errorf("cgroup %s: read inotify: %w", g.path, err)
		}
	}
}

// unpopulated reads a cgroup.events file: true when it says "populated 0",
// or when it is gone with its group.
func unpopulated(file string) (bool, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "populated "); ok {
			return v == "0", nil
		}
	}
	return false, fmt.Errorf("parse %s: no populated line", file)
}
