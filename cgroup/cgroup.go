// Package cgroup owns the per-instance control groups ward creates under one
// configured parent, on cgroup v1 and v2: it creates them with their limits,
// updates and reads those limits back, reports usage, moves and signals
// processes, and tears the groups down again. Nothing outside the configured
// parent is ever written, and no path is derived from the caller's own cgroup.
//
// Limits are given as OCI [specs.LinuxResources] with OCI semantics on both
// versions: Memory.Limit is the memory cap in bytes, Memory.Swap is the
// memory+swap total (v1 memory.memsw.limit_in_bytes; v2 memory.swap.max is
// Swap-Limit), -1 means unlimited, CPU.Shares is a v1 share count (converted
// to a v2 weight with [SharesToWeight]), CPU.Quota/CPU.Period are CFS
// microseconds (Quota -1: no cap), and Pids.Limit <= 0 means no limit.
// An update that sets Limit but not Swap keeps the other file as it is: on
// v1 the memory+swap total stays, on v2 the swap allowance does.
package cgroup

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
)

// Mode is the cgroup version a Manager drives.
type Mode int

const (
	V1 Mode = 1 // one hierarchy per controller (legacy and hybrid hosts)
	V2 Mode = 2 // the unified hierarchy
)

func (m Mode) String() string {
	switch m {
	case V1:
		return "v1"
	case V2:
		return "v2"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Config says where a Manager keeps its groups.
type Config struct {
	// Mode selects the cgroup version; 0 detects it from the host: a unified
	// host is V2, legacy and hybrid hosts are V1 (a hybrid host's cgroup2
	// mount has no useful controllers).
	Mode Mode
	// Root is, on v1, the directory holding one hierarchy per controller and,
	// on v2, the cgroup2 mountpoint. Default "/sys/fs/cgroup".
	Root string
	// Parent is the absolute, clean cgroup path every instance group lives
	// under, e.g. "/ward". Required; "/" is refused so that ward never mixes
	// its groups with the host's top-level ones.
	Parent string
}

// defaultRoot is where both cgroup versions are conventionally mounted.
const defaultRoot = "/sys/fs/cgroup"

var (
	ErrNotExist = errors.New("cgroup does not exist")
	ErrExist    = errors.New("cgroup already exists")
	ErrNotEmpty = errors.New("cgroup still has processes")
)

// Stats is a point-in-time usage report of one group.
type Stats struct {
	MemoryUsage uint64 // bytes
	MemoryLimit uint64 // bytes; the kernel's "unlimited" value when uncapped
	MemoryPeak  uint64 // v1 memory.max_usage_in_bytes; v2 memory.peak (0 if absent)
	OOMKills    uint64 // v1 memory.oom_control oom_kill; v2 memory.events oom_kill
	CPUUsage    uint64 // ns
	Pids        uint64
}

// v1Controllers are the hierarchies ward creates every v1 group in. cpuset
// and devices are left alone: cpuset needs cpus/mems copied in before a task
// can join, and ward does not restrict devices through cgroups.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "pids", "blkio", "freezer"}

// V1Controllers returns the v1 hierarchies every group is created in.
func V1Controllers() []string { return append([]string(nil), v1Controllers...) }

// v2Controllers are the controllers ward enables for its v2 groups; io is
// enabled when the host offers it, the others are required.
var v2Controllers = []string{"memory", "cpu", "pids", "io"}

// validate checks cfg and fills in defaults.
func (cfg Config) validate() (Config, error) {
	if cfg.Mode != 0 && cfg.Mode != V1 && cfg.Mode != V2 {
		return cfg, fmt.Errorf("cgroup: invalid mode %d", int(cfg.Mode))
	}
	if cfg.Root == "" {
		cfg.Root = defaultRoot
	}
	if !filepath.IsAbs(cfg.Root) {
		return cfg, fmt.Errorf("cgroup: root %q is not absolute", cfg.Root)
	}
	cfg.Root = filepath.Clean(cfg.Root)
	switch {
	case cfg.Parent == "":
		return cfg, errors.New("cgroup: parent is required")
	case !strings.HasPrefix(cfg.Parent, "/"):
		return cfg, fmt.Errorf("cgroup: parent %q is not absolute", cfg.Parent)
	case filepath.Clean(cfg.Parent) != cfg.Parent:
		return cfg, fmt.Errorf("cgroup: parent %q is not clean", cfg.Parent)
	case cfg.Parent == "/":
		return cfg, errors.New(`cgroup: parent must not be "/"`)
	}
	return cfg, nil
}

// validName accepts exactly one path element, so that a group name can never
// reach outside the parent.
func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("cgroup: invalid group name %q: must be a single path element", name)
	}
	return nil
}

// SharesToWeight converts a v1 cpu.shares value to a v2 cpu.weight.
//
// It uses the quadratic fit adopted by runc (opencontainers/runc#4772) and
// crun, in log space:
//
//	L = log2(shares)
//	weight = ceil(10^((L*L + 125*L)/612 - 7/34)), clamped to [1, 10000]
//
// The older linear formula 1 + (shares-2)*9999/262142 maps the v1 default of
// 1024 shares to weight 39 instead of the v2 default 100, so an instance
// converted that way would get less than half the CPU of an unconfigured
// neighbour. The fit passes through all three anchor points of the two
// ranges: 2 → 1 (both minimums), 1024 → 100 (both defaults) and
// 262144 → 10000 (both maximums). Shares 0 means unset and maps to 0.
func SharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	if shares <= 2 {
		return 1
	}
	if shares >= 262144 {
		return 10000
	}
	l := math.Log2(float64(shares))
	// Keep the expression in exactly this form: it is the one runc ships,
	// and reordering it moves results across integer boundaries.
	exponent := (l*l+125*l)/612.0 - 7.0/34.0
	return uint64(math.Ceil(math.Pow(10, exponent)))
}

// weightToShares inverts SharesToWeight for reading a v2 group back. Since
// the forward map rounds up, many share counts share one weight; this returns
// the largest of them (the exact inverse of the unrounded fit, floored), so
// that SharesToWeight(weightToShares(w)) == w and the defaults round-trip
// exactly (100 → 1024).
func weightToShares(weight uint64) uint64 {
	switch {
	case weight == 0:
		return 0
	case weight <= 1:
		return 2
	case weight >= 10000:
		return 262144
	}
	// Solve L*L + 125*L - 612*(log10(w) + 7/34) = 0 for the positive root.
	c := 612 * (math.Log10(float64(weight)) + 7.0/34.0)
	l := (-125 + math.Sqrt(125*125+4*c)) / 2
	// The epsilon absorbs float error at exact powers of two (1024 must not
	// come out as 1023.9999…).
	s := uint64(math.Floor(math.Pow(2, l) + 1e-6))
	for s > 2 && SharesToWeight(s) > weight {
		s--
	}
	for SharesToWeight(s+1) == weight {
		s++
	}
	return s
}

// ErrLocked reports that another process holds the parent's lock.
var ErrLocked = errors.New("cgroup parent is in use by another agent")
