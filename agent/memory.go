package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/hostward/ward/oom"
)

// watchMemory registers in's group with the OOM watcher. It is called
// before the instance's first process enters the group, so nothing the
// instance does can OOM unseen; an adopted group passes the kills it
// already had as the baseline.
func (a *Agent) watchMemory(in *instance, dir string, baseline uint64) error {
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
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.handleOOM(in, ev)
		}()
	case oom.Pressure:
		in, err := a.lookup(ev.Key)
		if err != nil {
			return
		}
		in.mu.Lock()
		running := in.rec.State == StateRunning
		in.mu.Unlock()
		if running {
			a.emitPressure(in, ev.Level)
		}
	}
}

// handleOOM applies oom.policy to an instance the kernel reports out of
// memory. kill: the whole instance is killed at once, and its exit watcher
// records it oom_killed. notify: the kernel killed one task; the instance
// lives on and an oom_killed event with state running says so.
func (a *Agent) handleOOM(in *instance, ev oom.Event) {
	if a.cfg.OOM.Policy == "notify" {
		in.mu.Lock()
		running := in.rec.State == StateRunning
		if running {
			in.rec.OOMKills = ev.OOMKills
		}
		limit := *in.rec.Limits.MemoryBytes
		in.mu.Unlock()
		if running {
			reason := oomReason(endFacts{oomKills: ev.OOMKills, limit: limit}) + "; the kernel killed one task, oom.policy notify leaves the instance running"
			a.emit(in, EventOOMKilled, reason, nil)
		}
		return
	}
	in.opMu.Lock()
	defer in.opMu.Unlock()
	in.mu.Lock()
	live := !in.removed && in.rec.State == StateRunning && in.group != nil
	if live {
		in.oomKill = true
		in.oomAt = ev.Time
	}
	g := in.group
	in.mu.Unlock()
	if !live {
		return // a stop, or the exit watcher, owns its end
	}
	a.log.Warn("instance out of memory: killing it", "id", in.id, "oom_kills", ev.OOMKills)
	if err := g.KillAll(); err != nil {
		a.log.Error("oom: kill", "id", in.id, "err", err)
	}
}

func (a *Agent) emitPressure(in *instance, level string) {
	in.mu.Lock()
	e := Event{
		Time:   time.Now().UTC(),
		ID:     in.id,
		Name:   in.name,
		Index:  in.index,
		Kind:   EventMemoryPressure,
		State:  in.rec.State,
		Level:  level,
		Reason: fmt.Sprintf("memory pressure %s near the %d byte limit", level, *in.rec.Limits.MemoryBytes),
	}
	in.mu.Unlock()
	a.publish(e)
}
