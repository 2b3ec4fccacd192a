// Package reporter owns load reporting: it samples the host and every
// running instance's cgroup, scores their load, keeps the latest sample for
// cheap lookups (the agent's info and ps read it instead of the cgroup), and
// publishes it on ward.<host>.load every report interval.
//
// # Figures
//
// Host (Host):
//
//   - cpu_pct: busy share of ALL host CPUs since the previous sample, 0–100
//     (100 = every core busy). From /proc/stat, where busy is user, nice,
//     system, irq, softirq and steal time.
//   - mem_pct: (MemTotal − MemAvailable) / MemTotal × 100, from /proc/meminfo.
//   - load: the host load score, 0–100 (below).
//   - cores, mem_total_bytes, mem_available_bytes, loadavg (1/5/15 min), and
//     net: per interface rx/tx bytes and bytes/s (rtnetlink link statistics).
//
// Instance (InstanceSample):
//
//   - cpu_pct: CPU time / wall time since the previous sample, in percent of
//     ONE core (100 = one core busy, 200 = two). v1 cpuacct.usage, v2
//     cpu.stat usage_usec.
//   - fair_share_cores: the CPU it is entitled to when every instance is
//     busy: cores × its cpu shares / sum of the shares of all running
//     instances, capped at cpu_millicores/1000 when it has a cap.
//   - cpu_share_pct: cpu_pct / fair_share_cores, i.e. percent of its fair
//     share; above 100 when it uses CPU that others leave idle.
//   - mem_bytes: the working set, what the kernel could not reclaim without
//     swap. v1: total_rss + total_cache − total_inactive_file; v2: anon +
//     file − inactive_file (memory.stat).
//   - mem_limit_bytes and mem_pct = mem_bytes / mem_limit_bytes × 100, where
//     the limit is the instance's memory limit, or host memory when it has
//     none or a larger one.
//   - io_read_bps, io_write_bps (bytes/s) and the io_read_bytes,
//     io_write_bytes totals they come from: block-device IO summed over
//     devices (v1 blkio.throttle.io_service_bytes, which needs
//     EnableBlkioAccounting; v2 io.stat). IO through stacked devices (loop,
//     dm) counts at each layer, as in io.stat.
//   - pids (v1/v2 pids.current: tasks, threads included), disk_bytes (from
//     the caller's Instance.Disk).
//   - load (0–100) and weight (1–100): below.
//
// Rates (cpu_pct, io_*_bps, net bps) are over the time since the previous
// sample. On an instance's first sample they are averages since
// Instance.Started, or null when that is not known; the host's first CPU
// figure is the average since boot, and an interface's first sample has no
// rate. Null means unknown, never zero.
//
// # Load score
//
// As in the product contract, with the weights of config.Report.Weights
// (defaults host 0.3, instance 0.7, cpu 0.3, memory 0.7):
//
//	load(cpu, mem) = W.cpu × clamp(cpu) + W.memory × clamp(mem)   clamp to 0–100
//	host_load      = load(host cpu_pct, host mem_pct)
//	own_load       = load(cpu_share_pct, mem_pct)                 an unknown cpu counts as 0
//	instance load  = W.host × host_load + W.instance × own_load
//	weight         = round(100 − load), clamped to 1–100
//
// Weights are checked to be in [0, 1] with host + instance = 1 and cpu +
// memory = 1, so every load is 0–100. weight is what a router balancing by
// load should use: proportional to the room an instance has left, 100 when
// idle, and never 0, so a fully loaded fleet still shares traffic.
//
// Worked example, default weights. A 2-core host at cpu_pct 50 and mem_pct
// 40: host_load = 0.3×50 + 0.7×40 = 43. On it run four instances of 1024
// shares each, so each one's fair share is 2 × 1024/4096 = 0.5 core; one of
// them has cpu_millicores 250, capping its share at 0.25 core. That one
// uses 20 % of a core (cpu_pct 20), i.e. cpu_share_pct 20/0.25 = 80, and
// holds 128 MiB of its 256 MiB limit (mem_pct 50): own_load = 0.3×80 +
// 0.7×50 = 59; load = 0.3×43 + 0.7×59 = 54.2; weight = round(100 − 54.2) =
// 46.
//
// # Cost
//
// Sampling forks nothing and, after an instance's first sample, opens
// nothing: every cgroup and proc file stays open and is re-read with one
// pread at offset 0 into a reused buffer, and parsed without allocating
// (only a file that is absent, such as io.stat without the io controller,
// is looked for again each time). The link dump reuses one rtnetlink
// socket.
// That costs four descriptors per running instance (v1 and v2 alike),
// released when the instance stops being listed: 1,000 instances need
// about 4,000, within the hard RLIMIT_NOFILE that Go raises the soft limit
// to at start (systemd's default hard limit is 524288).
package reporter
