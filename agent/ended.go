package agent

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/spawn"
)

// endFacts is what the cgroup knew about an instance as it ended. It is read
// before the group is removed: afterwards the kernel's counters are gone.
type endFacts struct {
	known    bool   // the group could be read
	oomKills uint64 // tasks the kernel killed for the memory limit
	reported uint64 // of those, the ones already reported (policy notify)
	peak     uint64 // bytes; 0 when the kernel keeps no peak
	limit    int64  // bytes, the memory limit in force
}

// facts reads the OOM counter and memory peak of in's group. Caller holds
// in.opMu.
func (a *Agent) facts(in *instance) endFacts {
	in.mu.Lock()
	g, limit, reported := in.group, *in.rec.Limits.MemoryBytes, in.rec.OOMKills
	in.mu.Unlock()
	if g == nil {
		return endFacts{limit: limit, reported: reported}
	}
	st, err := g.Stats()
	if err != nil {
		return endFacts{limit: limit, reported: reported}
	}
	return endFacts{known: true, oomKills: st.OOMKills, reported: reported, peak: st.MemoryPeak, limit: limit}
}

// classifyEnd names the terminal state of an instance whose main process
// ended on its own. The group is new with the instance, so an OOM kill on
// its counter beyond those already reported (policy notify) is this
// instance's and unreported. The end is oom_killed when the agent killed
// the instance for memory; or, with such a fresh kill, under policy kill
// (whatever the main process died of: its children's OOM ends it), or when
// the main process died by SIGKILL — the kernel's OOM killer — or in a way
// nobody saw (it was re-adopted). Under notify, a main process that outlived
// a child's OOM and then exited is an ordinary exit or crash.
func classifyEnd(e spawn.Exit, f endFacts, killedForOOM, policyKill bool) (api.State, string) {
	fresh := f.oomKills > f.reported
	if killedForOOM || fresh && (policyKill || !e.Known || e.Signal == unix.SIGKILL) {
		return api.StateOOMKilled, oomReason(f)
	}
	return classifyExit(e)
}

// oomReason says in words why an instance was killed for memory.
func oomReason(f endFacts) string {
	kills := "1 OOM kill"
	if f.oomKills != 1 {
		kills = fmt.Sprintf("%d OOM kills", f.oomKills)
	}
	if f.peak > 0 {
		return fmt.Sprintf("out of memory: %d byte limit, peak %d bytes, %s", f.limit, f.peak, kills)
	}
	return fmt.Sprintf("out of memory: %d byte limit, %s", f.limit, kills)
}
