package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/spawn"
)

// reconcile makes the host match the records, once, before the agent serves
// anything: see recover for each record, then everything on the host that
// no record owns is removed (see scanLeaks).
//
// The records alone say what happened: each names the event that
// announced its latest change (record.Announced), and a number above the
// outbox's last was never stored — the agent died between the two writes
// of a commit — so it is announced now. The outbox's last number is read
// before anything is appended.
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
		// Guessing about an unreadable record — or one of a newer agent:
		// a version or a state this one does not know — could kill a
		// live instance (its cgroup would look unowned) or leak one: an
		// operator decides.
		return fmt.Errorf("%w; run the agent that wrote it, or move the file aside to start without it", err)
	}
	stored := a.outbox.Last()
	for _, rec := range recs {
		if err := a.recover(rec, stored); err != nil {
			return err
		}
	}
	a.scanLeaks(true)
	a.prune()
	return nil
}

// recover brings one record's instance back under management:
//   - starting: the start was never recorded running, nor announced; it is
//     rolled back.
//   - running: the instance is re-adopted if its process still lives (same
//     pid, same start time) in its cgroup; otherwise it ended while the
//     agent was down and the rest of it is released.
//   - stopping: the stop is finished.
//   - ended, not yet released: the release is finished.
//
// Before any of it, an announcement the record names but the outbox never
// stored (its number is above stored) goes out.
func (a *Agent) recover(rec *record, stored uint64) error {
	in := &instance{id: rec.Spec.ID, name: rec.Spec.Name, index: rec.Spec.Index, rec: *rec}
	log := a.log.With("id", in.id)
	if !rec.Released && rec.State != api.StateRunning {
		// A running record's leases are adopted with the rest of it.
		if err := (leases{a}).adopt(in); err != nil {
			return fmt.Errorf("record %s: %w", in.id, err)
		}
	}
	// recover runs before anything is served, but its watchers may act on
	// the instance as soon as they are started.
	in.opMu.Lock()
	defer in.opMu.Unlock()
	if rec.State == api.StateStarting {
		log.Info("reconcile: rolling back an unfinished start")
		if rec.Version < 2 {
			// A version 1 record cannot say whether its start was
			// announced. An end nobody waits for costs a subscriber
			// nothing; a start without one leaves it waiting for ever.
			e := rec.event(api.EventStopped)
			e.State = api.StateStopped
			e.Reason = "start rolled back: it was never recorded running"
			a.publish(e)
		}
		a.rollback(in, len(a.steps))
		return nil
	}
	a.mu.Lock()
	a.instances[in.id] = in
	a.mu.Unlock()
	a.announceUnstored(in, stored)
	if rec.Released {
		return nil
	}
	switch rec.State {
	case api.StateRunning:
		return a.recoverRunning(in, log)
	case api.StateStopping:
		log.Info("reconcile: finishing a stop")
		if err := a.finish(in, func() { a.decideStopped(in) }); err != nil {
			log.Error("reconcile: release", "err", err)
		}
		return nil
	}
	log.Info("reconcile: finishing release", "state", rec.State)
	if err := a.finish(in, nil); err != nil {
		log.Error("reconcile: release", "err", err)
	}
	return nil
}

// announceUnstored announces what in's record says was announced but the
// outbox never stored, and says the limits in force where a version 1
// record cannot tell (a limit change it announced may not have been
// recorded). Caller holds in.opMu.
func (a *Agent) announceUnstored(in *instance, stored uint64) {
	rec := in.record()
	var e *api.Event
	switch {
	case rec.Announced != nil && rec.Announced.Seq > stored:
		again := *rec.Announced
		e = &again
	case rec.Version < 2 && rec.State == api.StateRunning && !rec.Released:
		lc := rec.event(api.EventLimitChanged)
		lc.Limits = &rec.Limits
		e = &lc
	default:
		return
	}
	a.log.Info("reconcile: announcing what the last agent recorded but did not announce", "id", in.id, "kind", e.Kind)
	if err := a.commit(in, rec, e, ""); err != nil {
		a.log.Error("reconcile: announcement not stored", "id", in.id, "kind", e.Kind, "err", err)
	}
}

// recoverRunning re-adopts a running instance's resources, or finishes an
// instance that ended while the agent was down. Caller holds in.opMu.
func (a *Agent) recoverRunning(in *instance, log *slog.Logger) error {
	rec := in.record()
	var end func() error
	var kills uint64
	err := a.adoptAll(in, func() bool {
		g, p := in.cgroup(), in.process()
		in.mu.Lock()
		kills = in.seenKills // as the cgroup's adopt read it
		in.mu.Unlock()
		switch {
		case g != nil && p != nil && kills > rec.OOMKills && a.policyKill():
			// Under policy kill an OOM ends the instance: this one came
			// while nobody watched. Its exit watcher records the end; its
			// health check and route are not adopted.
			log.Warn("reconcile: instance ran out of memory while the agent was down: killing it", "oom_kills", kills)
			in.mu.Lock()
			in.oomKill, in.oomAt = true, time.Now()
			in.mu.Unlock()
			if err := g.KillAll(); err != nil {
				log.Error("reconcile: oom kill", "err", err)
			}
			return true
		case g != nil && p != nil:
			return true
		case p != nil:
			// Alive but its cgroup is gone: it and whatever it forked run
			// unconfined. Not ours to leave like that, nor to hand the
			// uid on to.
			killUnconfined(p, rec.UID)
			end = func() error {
				return a.recoverEnd(in, api.StateCrashed, "cgroup vanished while the agent was down; main process killed")
			}
		default:
			// Its cgroup's OOM counter still says whether memory ended it.
			f := a.facts(in)
			state, reason := classifyEnd(spawn.Exit{}, f, false, a.policyKill())
			if state == api.StateExited {
				reason = "main process exited while the agent was down; exit status unknown"
			} else {
				reason += " (while the agent was down)"
			}
			a.noteEnd(in, f, state)
			end = func() error { return a.recoverEnd(in, state, reason) }
		}
		return false
	})
	if err != nil {
		return fmt.Errorf("record %s: %w", in.id, err)
	}
	if end != nil {
		return end()
	}
	if in.killedForOOM() {
		return nil
	}
	// A limit change that reached the kernel but not the record was never
	// acknowledged: the record wins.
	if err := a.updateAll(in, rec.Limits); err != nil {
		log.Warn("reconcile: re-applying the limits on record", "err", err)
	}
	if kills > rec.OOMKills {
		a.notifyOOM(in, kills, " (while the agent was down)")
	}
	log.Info("reconcile: re-adopted", "pid", rec.PID)
	return nil
}

// recoverEnd ends an instance found dead at reconcile and releases it.
func (a *Agent) recoverEnd(in *instance, state api.State, reason string) error {
	a.log.Info("reconcile: instance ended", "id", in.id, "state", state, "reason", reason)
	a.end(in, state, reason, true)
	if err := a.finish(in, nil); err != nil {
		// Recorded as ended already; the next scan or agent retries.
		a.log.Error("reconcile: release", "id", in.id, "err", err)
	}
	return nil
}

// scanLeaks removes what the resources find on the host that no record
// owns (see resource.leaks). At startup nothing is in flight, so it goes
// at once; later a thing must be seen unowned on two scans in a row, so a
// start racing the scan is never mistaken for a leak.
func (a *Agent) scanLeaks(startup bool) {
	owned := ownership{cgroups: map[string]bool{}, ids: map[string]bool{}}
	a.mu.Lock()
	for _, in := range a.instances {
		in.mu.Lock()
		if !in.rec.Released {
			owned.cgroups[in.rec.Cgroup] = true
			owned.ids[in.id] = true
		}
		in.mu.Unlock()
	}
	a.mu.Unlock()

	seen := map[string]bool{}
	for _, s := range a.steps {
		leaks, err := s.leaks(owned)
		if err != nil {
			a.log.Warn("leak scan", "resource", s.String(), "err", err)
		}
		for _, l := range leaks {
			seen[l.key] = true
			if !a.sightings(l.key, startup) {
				continue
			}
			a.log.Warn("leak scan: removing what no record owns", "what", l.what)
			if err := l.remove(); err != nil {
				a.log.Error("leak scan: remove", "what", l.what, "err", err)
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
	// A mount below it (see processes.leaks) would keep it: those go
	// first, whichever of the two leaks the scan meets first.
	ms, err := mountsUnder(dir)
	if err != nil {
		return fmt.Errorf("list mounts: %w", err)
	}
	for _, m := range ms {
		if err := detachMount(m); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("detach %s: %w", m, err)
		}
	}
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
		in.mu.Unlock()
		if !stuck || !in.opMu.TryLock() {
			continue
		}
		if !in.gone() {
			if err := a.finish(in, nil); err != nil {
				a.log.Warn("release retry", "id", in.id, "err", err)
			}
		}
		in.opMu.Unlock()
	}
}
