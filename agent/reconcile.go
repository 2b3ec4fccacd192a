package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/accounts"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/lease"
	"github.com/hostward/ward/oom"
	"github.com/hostward/ward/spawn"
)

// reconcile makes the host match the records, once, before the agent serves
// anything: see recover for each record, then everything under the cgroup
// parent and the instances directory that no record owns is removed.
func (a *Agent) reconcile() error {
	boot, err := bootTime()
	if err != nil {
		return err
	}
	recs, torn, err := a.store.load(boot)
	for _, t := range torn {
		a.log.Warn("reconcile: set aside a record torn by a power loss", "record", t)
	}
	if err != nil {
		// Guessing about an unreadable record could kill a live instance
		// (its cgroup would look unowned) or leak one: an operator decides.
		return fmt.Errorf("%w; move the file aside to start without it", err)
	}
	announced := a.announcedStarts(recs)
	for _, rec := range recs {
		if err := a.recover(rec, announced[rec.Spec.ID]); err != nil {
			return err
		}
	}
	a.correctAnnouncedLimits()
	a.scanLeaks(true)
	a.prune()
	return nil
}

// recover brings one record's instance back under management:
//   - starting: the start was never acknowledged; it is rolled back, and
//     if its started event is stored (announced), its end follows it.
//   - running: the process is re-adopted if it still lives (same pid, same
//     start time); otherwise it ended while the agent was down — exited,
//     status unknown — and the rest of the instance is released.
//   - stopping: the stop is finished.
//   - terminal, not yet released: the release is finished.
func (a *Agent) recover(rec *record, announced bool) error {
	in := &instance{id: rec.Spec.ID, name: rec.Spec.Name, index: rec.Spec.Index, rec: *rec}
	log := a.log.With("id", in.id)
	if !rec.Released {
		// A lease outside the configured range (the range changed) stays
		// the instance's; nobody else can be handed it.
		if err := a.uids.Claim(rec.UID, in.id); errors.Is(err, lease.ErrOutOfRange) {
			log.Warn("reconcile: uid outside users.uid_min..uid_max", "uid", rec.UID)
		} else if err != nil {
			return fmt.Errorf("record %s: uid: %w", in.id, err)
		}
		if rec.Port != 0 {
			if err := a.ports.Claim(rec.Port, in.id); errors.Is(err, lease.ErrOutOfRange) {
				log.Warn("reconcile: port outside ports.min..max", "port", rec.Port)
			} else if err != nil {
				return fmt.Errorf("record %s: port: %w", in.id, err)
			}
		}
	}
	if rec.State == api.StateStarting {
		log.Info("reconcile: rolling back an unfinished start", "announced", announced)
		if announced {
			// Its end is stored before the record goes (see
			// endAnnouncedStart).
			a.endAnnouncedStart(in)
		}
		a.rollbackStart(in, true)
		return nil
	}
	a.mu.Lock()
	a.instances[in.id] = in
	a.mu.Unlock()
	if rec.Released {
		return nil
	}
	g, err := a.cg.Load(rec.Cgroup)
	if err != nil && !errors.Is(err, cgroup.ErrNotExist) {
		return fmt.Errorf("record %s: %w", in.id, err)
	}
	in.group = g

	switch rec.State {
	case api.StateRunning:
		p, err := spawn.Adopt(rec.PID, rec.StartTime)
		if err == nil && g != nil {
			in.proc = p
			// A limit change that reached the kernel but not the record was
			// never acknowledged: the record wins.
			if err := g.Update(resources(rec.Limits)); err != nil {
				log.Warn("reconcile: re-applying limits", "err", err)
			}
			// So does its disk limit.
			if err := a.quota.SetLimit(a.quotaTarget(rec), *rec.Limits.DiskBytes); err != nil {
				log.Warn("reconcile: re-applying the disk limit", "err", err)
			}
			kills, err := oom.OOMKills(a.cg.Mode(), g.MemoryDir())
			if err != nil {
				log.Warn("reconcile: reading the OOM counter", "err", err)
			}
			switch {
			case kills > rec.OOMKills && a.policyKill():
				// Under policy kill an OOM ends the instance: this one
				// came while nobody watched.
				log.Warn("reconcile: instance ran out of memory while the agent was down: killing it", "oom_kills", kills)
				in.oomKill, in.oomAt = true, time.Now()
				if err := g.KillAll(); err != nil {
					log.Error("reconcile: oom kill", "err", err)
				}
			case kills > rec.OOMKills:
				a.notifyOOM(in, kills, " (while the agent was down)")
				fallthrough
			default:
				if err := a.watchMemory(in, g.MemoryDir(), kills); err != nil {
					log.Error("reconcile: OOM watch; this instance's OOMs will be seen only when it ends", "err", err)
				}
			}
			a.watch(in)
			if !in.oomKill {
				a.checkHealth(in)
			}
			log.Info("reconcile: re-adopted", "pid", rec.PID)
			return nil
		}
		if err == nil {
			// Alive but its cgroup is gone: it and whatever it forked run
			// unconfined. Not ours to leave like that, nor to hand the uid
			// on to.
			p.Signal(unix.SIGKILL)
			accounts.KillUID(rec.UID)
			return a.recoverFinish(in, api.StateCrashed, "cgroup vanished while the agent was down; main process killed")
		}
		if !errors.Is(err, spawn.ErrGone) {
			return fmt.Errorf("record %s: %w", in.id, err)
		}
		// Its cgroup's OOM counter still says whether memory ended it.
		f := a.facts(in)
		state, reason := classifyEnd(spawn.Exit{}, f, false, a.policyKill())
		if state == api.StateExited {
			reason = "main process exited while the agent was down; exit status unknown"
		} else {
			reason += " (while the agent was down)"
		}
		a.noteEnd(in, f, state)
		return a.recoverFinish(in, state, reason)
	case api.StateStopping:
		a.terminate(in, 0)
		return a.recoverFinish(in, api.StateStopped, "stopped by request")
	}
	log.Info("reconcile: finishing release", "state", rec.State)
	if err := a.finish(in, rec.State, "", false); err != nil {
		log.Error("reconcile: release", "err", err)
	}
	return nil
}

// announcedStarts finds the starts among recs whose started event is in
// the outbox although their record never said running: the agent died
// between storing the event and recording the start (see create). Nothing
// of the outbox has been sent since — this runs before any publisher — so
// the event has not gone out yet, and it is answered with the end of the
// start it announces. Cheap when no record is starting: nothing is read.
//
// A started event followed by an end of the same id belongs to an earlier
// instance under that id, already answered; the order of the outbox tells,
// not the events' times, which a wall-clock step could put out of order.
func (a *Agent) announcedStarts(recs []*record) map[string]bool {
	starting := map[string]bool{}
	for _, rec := range recs {
		if rec.State == api.StateStarting {
			starting[rec.Spec.ID] = true
		}
	}
	if len(starting) == 0 {
		return nil
	}
	announced := map[string]bool{}
	for _, it := range a.outbox.Pending(a.outbox.Len()) {
		var e api.Event
		if json.Unmarshal(it.Data, &e) != nil || !starting[e.ID] {
			continue
		}
		switch {
		case e.Kind == api.EventStarted:
			announced[e.ID] = true
		case isEnd(e):
			announced[e.ID] = false
		}
	}
	return announced
}

// correctAnnouncedLimits answers the limit changes that were announced but
// never recorded: the agent died between storing a limit_changed event and
// writing the record (see Limit), and recover has put the kernel back to
// the record's limits. Nothing of the outbox has been sent yet, so the
// announcement still goes out; a limit_changed with the limits in force
// follows it, so that the last word a subscriber gets is the truth. Only
// the last limit_changed of the id's latest instance matters: any earlier
// one was followed by a recorded change, and one before a started or an
// end event was about an earlier instance under the id.
func (a *Agent) correctAnnouncedLimits() {
	last := map[string]*api.Limits{}
	for _, it := range a.outbox.Pending(a.outbox.Len()) {
		var e api.Event
		if json.Unmarshal(it.Data, &e) != nil {
			continue
		}
		switch {
		case e.Kind == api.EventLimitChanged && e.Limits != nil:
			last[e.ID] = e.Limits
		case e.Kind == api.EventStarted || isEnd(e):
			delete(last, e.ID)
		}
	}
	for id, l := range last {
		a.mu.Lock()
		in := a.instances[id]
		a.mu.Unlock()
		if in == nil {
			continue
		}
		// recover has started the instance's watchers: an end that comes
		// meanwhile takes opMu, and is announced after the correction.
		in.opMu.Lock()
		in.mu.Lock()
		rec, running := in.rec.Limits, in.rec.State == api.StateRunning && !in.rec.Released
		in.mu.Unlock()
		if running && !reflect.DeepEqual(*l, rec) {
			a.log.Info("reconcile: a limit change was announced but not recorded: announcing the limits in force", "id", id)
			a.emitLimits(in, rec)
		}
		in.opMu.Unlock()
	}
}

// isEnd reports whether e announces an instance's end (an oom_killed
// event under the notify policy leaves it running).
func isEnd(e api.Event) bool {
	switch e.Kind {
	case api.EventStopped, api.EventExited, api.EventCrashed:
		return true
	case api.EventOOMKilled:
		return e.State != api.StateRunning
	}
	return false
}

func (a *Agent) recoverFinish(in *instance, state api.State, reason string) error {
	a.log.Info("reconcile: instance ended", "id", in.id, "state", state, "reason", reason)
	if err := a.finish(in, state, reason, true); err != nil {
		// Recorded as terminal already; the next scan or agent retries.
		a.log.Error("reconcile: release", "id", in.id, "err", err)
	}
	return nil
}

// scanLeaks removes cgroups under the parent and directories under
// instances/ that no record owns. At startup nothing is in flight, so they
// go at once; later a thing must be seen unowned on two scans in a row, so
// a start racing the scan is never mistaken for a leak.
func (a *Agent) scanLeaks(startup bool) {
	ownedCg := map[string]bool{}
	ownedDir := map[string]bool{}
	a.mu.Lock()
	for _, in := range a.instances {
		in.mu.Lock()
		if !in.rec.Released {
			ownedCg[in.rec.Cgroup] = true
			ownedDir[in.id] = true
		}
		in.mu.Unlock()
	}
	a.mu.Unlock()

	seen := map[string]bool{}
	names, err := a.cg.List()
	if err != nil {
		a.log.Warn("leak scan: list cgroups", "err", err)
	}
	for _, n := range names {
		if ownedCg[n] {
			continue
		}
		key := "cg:" + n
		seen[key] = true
		if a.sightings(key, startup) {
			a.log.Warn("leak scan: removing unowned cgroup", "cgroup", a.cg.Path(n))
			if err := a.cg.Remove(n); err != nil {
				a.log.Error("leak scan: remove cgroup", "cgroup", a.cg.Path(n), "err", err)
			}
		}
	}
	ents, err := os.ReadDir(a.instDir)
	if err != nil {
		a.log.Warn("leak scan: list instance dirs", "err", err)
	}
	for _, e := range ents {
		n := e.Name()
		if ownedDir[n] || strings.HasPrefix(n, ".") {
			continue
		}
		key := "dir:" + n
		seen[key] = true
		if a.sightings(key, startup) {
			p := a.instDir + "/" + n
			a.log.Warn("leak scan: removing unowned instance dir", "dir", p)
			if err := a.removeLeakedDir(p); err != nil {
				a.log.Error("leak scan: remove dir", "dir", p, "err", err)
			}
		}
	}
	a.mu.Lock()
	for k := range a.unowned {
		if !seen[k] {
			delete(a.unowned, k)
		}
	}
	a.mu.Unlock()
}

// removeLeakedDir removes an instance directory no record owns, with its
// quota: the backend knows which of its quotas a leftover takes along
// (a uid's only when no live instance holds that uid).
func (a *Agent) removeLeakedDir(dir string) error {
	return a.quota.RemoveLeftover(dir, a.uids.IsLeased)
}

// sightings counts one more scan that found key unowned and says whether it
// is time to remove it.
func (a *Agent) sightings(key string, startup bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unowned[key]++
	if startup || a.unowned[key] >= 2 {
		delete(a.unowned, key)
		return true
	}
	return false
}

// prune forgets terminal instances that ended more than the retention ago.
func (a *Agent) prune() {
	cutoff := time.Now().Add(-a.retention)
	for _, in := range a.all() {
		in.mu.Lock()
		old := in.rec.State.Terminal() && in.rec.Released && in.rec.ExitedAt != nil && in.rec.ExitedAt.Before(cutoff)
		in.mu.Unlock()
		if !old || !in.opMu.TryLock() {
			continue // busy: next time
		}
		if err := a.store.remove(in.id); err != nil {
			a.log.Warn("prune", "id", in.id, "err", err)
		} else {
			in.mu.Lock()
			in.removed = true
			in.mu.Unlock()
			a.mu.Lock()
			delete(a.instances, in.id)
			a.mu.Unlock()
		}
		in.opMu.Unlock()
	}
}

// retryReleases finishes releases that failed earlier (a group that would
// not empty, a record that could not be written): terminal instances that
// still hold something.
func (a *Agent) retryReleases() {
	for _, in := range a.all() {
		in.mu.Lock()
		stuck := in.rec.State.Terminal() && !in.rec.Released
		state := in.rec.State
		in.mu.Unlock()
		if !stuck || !in.opMu.TryLock() {
			continue
		}
		if !in.gone() {
			if err := a.finish(in, state, "", false); err != nil {
				a.log.Warn("release retry", "id", in.id, "err", err)
			}
		}
		in.opMu.Unlock()
	}
}
