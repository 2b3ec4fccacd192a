package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/oom"
)

// watchMemory registers in's group with the OOM watcher. It is called
// before the instance's first process enters the group, so nothing the
// instance does can OOM unseen; an adopted group passes the kills it
// already had as the baseline.
func (a *Agent) watchMemory(in *instance, dir string, baseline uint64) error {
	in.mu.Lock()
	in.seenKills = baseline
	in.mu.Unlock()
	return a.oom.Add(in.id, dir, oom.WithBaseline(baseline), oom.WithPressure(oom.PressureConfig{}))
}

func (a *Agent) unwatchMemory(in *instance) {
	if err := a.oom.Remove(in.id); err != nil && !errors.Is(err, oom.ErrClosed) {
		a.log.Warn("oom watcher: remove", "id", in.id, "err", err)
	}
}

// onMemoryEvent is the OOM watcher's handler. It runs on the watcher's one
// handler goroutine: a kill, which waits for a freeze on v1, is handed to
// a goroutine of its own so that fifty OOMs at once are killed side by
// side, not one after the other.
func (a *Agent) onMemoryEvent(ev oom.Event) {
	switch ev.Kind {
	case oom.OOM:
		in, err := a.lookup(ev.Key)
		if err != nil {
			return
		}
		// The watcher reports each rise once; the counter counts kills.
		in.mu.Lock()
		rise := ev.OOMKills - min(in.seenKills, ev.OOMKills)
		in.seenKills = max(in.seenKills, ev.OOMKills)
		in.mu.Unlock()
		a.count(func(c Counters) { c.AddOOMKills(rise) })
		a.wg.Go(func() { a.handleOOM(in, ev) })
	case oom.Pressure:
		in, err := a.lookup(ev.Key)
		if err != nil {
			return
		}
		in.mu.Lock()
		running := in.rec.State == api.StateRunning
		in.mu.Unlock()
		if running {
			a.emitPressure(in, ev.Level)
		}
	}
}

// notifyGrace is how long an OOM notice under policy notify waits to see
// whether the kernel's victim was the main process: then the instance has
// ended, and its exit watcher reports that instead.
const notifyGrace = 100 * time.Millisecond

func (a *Agent) policyKill() bool { return a.cfg.OOM.Policy != config.OOMNotify }

// handleOOM applies oom.policy to an instance the kernel reports out of
// memory. kill: the whole instance is killed at once, and its exit watcher
// records it oom_killed. notify: the kernel killed one task; the instance
// lives on and an oom_killed event with state running says so. Both hold
// in.opMu: the instance's state does not change under them, and a stop or
// an exit that got there first owns its end.
func (a *Agent) handleOOM(in *instance, ev oom.Event) {
	in.opMu.Lock()
	defer in.opMu.Unlock()
	in.mu.Lock()
	live := !in.removed && in.rec.State == api.StateRunning && in.group != nil && ev.OOMKills > in.rec.OOMKills
	g, proc := in.group, in.proc
	in.mu.Unlock()
	if !live {
		return
	}
	if !a.policyKill() {
		if proc != nil {
			select {
			case <-proc.Done():
				return
			case <-time.After(notifyGrace):
			}
		}
		a.notifyOOM(in, ev.OOMKills, "")
		return
	}
	in.mu.Lock()
	in.oomKill, in.oomAt = true, ev.Time
	in.mu.Unlock()
	a.log.Warn("instance out of memory: killing it", "id", in.id, "oom_kills", ev.OOMKills)
	if err := g.KillAll(); err != nil {
		a.log.Error("oom: kill", "id", in.id, "err", err)
	}
}

// notifyOOM records that the instance has had kills OOM kills, all of them
// now reported, and says so in an oom_killed event with state running —
// in one commit, so that a restart neither reports these kills again nor,
// under a policy changed to kill, ends the instance for them, nor loses
// the notice. Caller holds in.opMu.
func (a *Agent) notifyOOM(in *instance, kills uint64, when string) {
	next := in.record()
	next.OOMKills = kills
	reason := oomReason(endFacts{oomKills: kills, limit: *next.Limits.MemoryBytes}) + when + "; the kernel killed a task, oom.policy notify leaves the instance running"
	e := next.event(api.EventOOMKilled)
	e.Reason, e.OOMKills = reason, kills
	if err := a.commit(in, next, &e, ""); err != nil {
		a.log.Error("oom: notice not recorded", "id", in.id, "err", err)
	}
}

func (a *Agent) emitPressure(in *instance, level string) {
	in.mu.Lock()
	e := in.event(api.EventMemoryPressure)
	e.Level = level
	e.Reason = fmt.Sprintf("memory pressure %s near the %d byte limit", level, *in.rec.Limits.MemoryBytes)
	in.mu.Unlock()
	a.publish(e)
}
