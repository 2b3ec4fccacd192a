package reporter

import "time"

// Instance is what the sampler needs to know about one running instance.
// The caller (the agent) owns these values; the sampler only reads them.
type Instance struct {
	ID    string // key of the sampler's per-instance state; required
	Name  string
	Index int

	// Dirs are the instance's cgroup directories. v1: one per controller,
	// in cgroup.V1Controllers() order (memory, cpu, cpuacct, pids, blkio,
	// freezer); v2: exactly one, the group's directory.
	Dirs []string

	MemoryLimit   int64 // bytes; <= 0: no limit (mem_pct is then of host memory)
	CPUShares     int64 // v1 shares; <= 0: the kernel default, 1024
	CPUMillicores int64 // hard CPU cap in thousandths of a core; <= 0: none

	// Started is when the instance's cgroup began counting. On an
	// instance's first sample there is no previous reading to take a
	// difference against, so rates are then averages since Started; zero
	// means unknown and leaves those rates null.
	Started time.Time

	// Disk, if set, returns the bytes the instance has on disk and whether
	// that is known. It is called once per sample and must be cheap (a
	// quota counter, not a directory walk).
	Disk func() (int64, bool)
}

// Source lists the instances to sample: those running right now.
type Source interface {
	Instances() []Instance
}

// SourceFunc adapts a function to Source.
type SourceFunc func() []Instance

func (f SourceFunc) Instances() []Instance { return f() }

// Sample is one reading of the host and of every instance. A Sample is
// immutable once returned: it is shared between the publisher and every
// reader of Latest, so callers must not modify it.
type Sample struct {
	Time      time.Time        `json:"time"`
	Host      Host             `json:"host"`
	Instances []InstanceSample `json:"instances"`

	byID map[string]int
}

// Instance returns the figures of instance id in s.
func (s *Sample) Instance(id string) (*InstanceSample, bool) {
	if s == nil {
		return nil, false
	}
	i, ok := s.byID[id]
	if !ok {
		return nil, false
	}
	return &s.Instances[i], true
}

// Host holds the host-wide figures.
type Host struct {
	// CPUPct is the share of all the host's CPUs that was busy, 0–100:
	// 100 means every core was busy (unlike an instance's CPUPct, where
	// 100 is one core). Busy is user, nice, system, irq, softirq and
	// steal time; idle and iowait are not busy. On the sampler's first
	// sample it is the average since boot.
	CPUPct float64 `json:"cpu_pct"`
	// MemPct is the share of memory in use: (MemTotal − MemAvailable) /
	// MemTotal × 100, where MemAvailable is the kernel's estimate of what
	// can be given to new work without swapping (free plus reclaimable).
	MemPct float64 `json:"mem_pct"`
	// Load is the host load score, 0–100 (see the package doc).
	Load float64 `json:"load"`

	Cores             int        `json:"cores"`               // online CPUs
	MemTotalBytes     uint64     `json:"mem_total_bytes"`     // MemTotal
	MemAvailableBytes uint64     `json:"mem_available_bytes"` // MemAvailable
	LoadAvg           [3]float64 `json:"loadavg"`             // 1, 5 and 15 minute run-queue averages

	// Net holds every network interface's traffic, by interface name.
	Net map[string]NetStat `json:"net,omitempty"`
}

// NetStat is one network interface's traffic.
type NetStat struct {
	RxBytes uint64 `json:"rx_bytes"` // received since the interface appeared
	TxBytes uint64 `json:"tx_bytes"` // sent since the interface appeared
	// Received and sent bytes per second since the previous sample; null
	// on the first sample that sees the interface.
	RxBps *float64 `json:"rx_bps"`
	TxBps *float64 `json:"tx_bps"`
}

// InstanceSample holds one instance's figures. Pointer fields are null
// when unknown, never invented.
type InstanceSample struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Index int    `json:"index"`

	// CPUPct is CPU time used per wall time since the previous sample, in
	// percent of ONE core: 100 is one core fully busy, 200 two cores.
	CPUPct *float64 `json:"cpu_pct"`
	// FairShareCores is the CPU the instance is entitled to when every
	// instance is busy: host cores × its shares / the sum of the shares of
	// all sampled instances, capped at CPUMillicores/1000 when set.
	FairShareCores float64 `json:"fair_share_cores"`
	// CPUSharePct is CPUPct relative to FairShareCores: 100 is using
	// exactly its fair share. It exceeds 100 when the instance uses CPU
	// others leave idle.
	CPUSharePct *float64 `json:"cpu_share_pct"`

	// MemBytes is the working set: memory the kernel could not reclaim
	// without swapping. v1: total_rss + total_cache − total_inactive_file;
	// v2: anon + file − inactive_file (memory.stat).
	MemBytes uint64 `json:"mem_bytes"`
	// MemLimitBytes is what MemPct is relative to: the instance's memory
	// limit, or host memory when it has none or a larger one.
	MemLimitBytes uint64  `json:"mem_limit_bytes"`
	MemPct        float64 `json:"mem_pct"`

	// Block-device bytes per second since the previous sample (v1 blkio
	// throttle counters, v2 io.stat), and the totals they come from.
	IOReadBps    *float64 `json:"io_read_bps"`
	IOWriteBps   *float64 `json:"io_write_bps"`
	IOReadBytes  uint64   `json:"io_read_bytes"`
	IOWriteBytes uint64   `json:"io_write_bytes"`

	Pids      uint64 `json:"pids"`       // tasks (threads included) in the group
	DiskBytes *int64 `json:"disk_bytes"` // from Instance.Disk

	Load   float64 `json:"load"`   // instance load score, 0–100
	Weight int     `json:"weight"` // balancing weight, 1–100; higher is less loaded
}
