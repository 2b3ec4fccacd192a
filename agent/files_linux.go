package agent

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FilesPerInstance bounds the descriptors the agent holds for each
// running instance: its pidfd, the OOM watcher's (v1: memory.oom_control
// and eventfds for the OOM and two pressure levels; v2: the group's
// directory and two PSI triggers) and the sampler's four cgroup files,
// kept open so that a sample opens nothing.
const FilesPerInstance = 9

// fileReserve is what the agent needs besides its instances: the bus, the
// socket and its clients, metrics scrapes, records being written, children
// being spawned (about 25 when idle).
const fileReserve = 1024

// fileLimit returns the RLIMIT_NOFILE an agent with a pool of n uids (so
// at most n instances) needs, given the current limit and the kernel's
// ceiling nrOpen (fs.nr_open; 0 if unknown), and whether cur falls short.
func fileLimit(cur unix.Rlimit, n int, nrOpen uint64) (unix.Rlimit, bool) {
	need := uint64(n)*FilesPerInstance + fileReserve
	if nrOpen > 0 {
		need = min(need, nrOpen)
	}
	if cur.Cur >= need {
		return cur, false
	}
	return unix.Rlimit{Cur: need, Max: max(cur.Max, need)}, true
}

// raiseFileLimit makes room for the descriptors of a full uid pool. Go
// raises the soft limit to the hard one at start, but the hard one can be
// low where the agent is not run by the shipped unit (LimitNOFILE=1048576):
// 20,000 on some hosts, which about 2,200 instances exhaust, and then
// starts and samples fail with EMFILE. Raising the hard limit takes
// CAP_SYS_RESOURCE, which a root in a container may lack: then the agent
// says how many instances fit. Instances started afterwards inherit the
// raised limit; their open files are charged to their memory cgroups
// either way.
func (a *Agent) raiseFileLimit() {
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil {
		a.log.Warn("open files limit unknown", "err", err)
		return
	}
	var nrOpen uint64
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		nrOpen, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	pool := a.cfg.Users.UIDMax - a.cfg.Users.UIDMin + 1
	want, short := fileLimit(cur, pool, nrOpen)
	if !short {
		return
	}
	err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want)
	if err != nil && cur.Cur < cur.Max {
		// Unprivileged: the soft limit can still go up to the hard one.
		want = unix.Rlimit{Cur: cur.Max, Max: cur.Max}
		if unix.Setrlimit(unix.RLIMIT_NOFILE, &want) != nil {
			want = cur
		}
	} else if err != nil {
		want = cur
	}
	fit := (int64(want.Cur) - fileReserve) / FilesPerInstance
	if err != nil || fit < int64(pool) {
		a.log.Warn("open files limit too low for the uid pool", "limit", want.Cur, "instances_that_fit", max(fit, 0), "pool", pool, "err", err)
		return
	}
	a.log.Info("open files limit raised for the uid pool", "from", cur.Cur, "to", want.Cur, "pool", pool)
}

// instanceFileLimit is the RLIMIT_NOFILE instances get for
// isolation.nofile: that, unless it is above the agent's own hard limit
// and the agent may not raise a hard limit (no CAP_SYS_RESOURCE), when
// ward-init, a child of the agent, could give no more than the agent's.
// capped says so.
func instanceFileLimit(nofile uint64) (limit uint64, capped bool) {
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err != nil || cur.Max >= nofile {
		return nofile, false
	}
	// Ask the kernel by raising the agent's own hard limit to nofile,
	// which then stays: its children may be given it.
	want := unix.Rlimit{Cur: cur.Cur, Max: nofile}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		return cur.Max, true
	}
	return nofile, false
}
