package agent

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/spawn"
)

// killWait bounds how long the agent waits for a killed group to empty.
// SIGKILL cannot be ignored, so only a task stuck in the kernel (D state,
// e.g. on a dead NFS server) outlasts it.
const killWait = 10 * time.Second

// Stop ends an instance: SIGTERM to every process, up to timeout for them
// to go, then SIGKILL to what is left; then everything the instance held is
// released. Stopping a stopped instance returns it as it is.
func (a *Agent) Stop(ctx context.Context, req api.StopRequest) (_ *api.Instance, err error) {
	defer func() { a.count(func(c Counters) { c.InstanceStop(result(err)) }) }()
	if err := validateID("id", req.ID); err != nil {
		return nil, err
	}
	timeout := a.cfg.Stop.Timeout.D()
	if req.TimeoutMS != nil {
		if *req.TimeoutMS < 0 || *req.TimeoutMS > 3_600_000 {
			return nil, invalid("timeout_ms", "must be in [0, 3600000], got %d", *req.TimeoutMS)
		}
		timeout = time.Duration(*req.TimeoutMS) * time.Millisecond
	}
	in, err := a.lookup(req.ID)
	if err != nil {
		return nil, err
	}
	in.opMu.Lock()
	defer in.opMu.Unlock()
	if in.gone() {
		return nil, notFound(req.ID)
	}

	in.mu.Lock()
	state := in.rec.State
	in.mu.Unlock()
	if state.Terminal() {
		// Ended, but its release was interrupted: finish it.
		if err := a.finish(in, state, "", false); err != nil {
			return nil, api.Internal(err)
		}
		return a.snapshot(in, false), nil
	}
	if err := a.setStopping(in, state); err != nil {
		return nil, api.Internal(err)
	}
	// A stopping instance stops answering: that is no news, and routers
	// must stop sending it requests first.
	a.health.Remove(in.id)
	a.unroute(in)
	crashpoint("stop:recorded")
	a.terminate(in, timeout)
	// An OOM kill by the agent that this stop overtook (its exit watcher
	// waits behind the stop) is still the instance's end.
	in.mu.Lock()
	killedForOOM := in.oomKill
	in.mu.Unlock()
	f := a.facts(in)
	end, reason := api.StateStopped, "stopped by request"
	if killedForOOM {
		end, reason = api.StateOOMKilled, oomReason(f)
	}
	a.noteEnd(in, f, end)
	crashpoint("stop:terminated")
	// "stopping" is on record: a crash from here on is finished by the
	// next agent as stopped, so the final state is written once, after
	// the release — unless the end is an OOM kill, which the next agent
	// could not know: announcing it and then "stopped" would contradict.
	if err := a.finish(in, end, reason, end != api.StateStopped); err != nil {
		return nil, api.Internal(err)
	}
	return a.snapshot(in, false), nil
}

// terminate sends SIGTERM to every process and waits up to grace for the
// group to empty, then kills whatever is left.
func (a *Agent) terminate(in *instance, grace time.Duration) {
	g := in.group
	if g == nil {
		return
	}
	if grace > 0 {
		if err := g.Signal(unix.SIGTERM); err != nil {
			a.log.Warn("stop: SIGTERM", "id", in.id, "err", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		// The main process usually goes first and its children with it:
		// its exit is an event, so wait for that before polling the group.
		if in.proc != nil {
			select {
			case <-in.proc.Done():
			case <-ctx.Done():
			}
		}
		if g.WaitEmpty(ctx) == nil {
			return
		}
	}
	if err := g.KillAll(); err != nil {
		a.log.Warn("stop: kill", "id", in.id, "err", err)
	}
}

// finish moves an instance to a terminal state, releases what it held and
// announces its end. With recordFirst the terminal state (and exit status)
// is written before the release, so a crash mid-release loses nothing the
// agent knew; a stop needs no such write, its "stopping" record already
// says what to finish.
//
// The end is announced after the release and before the record says
// "released": a released record has always been announced, and an agent
// that dies before that write finds the release unfinished and announces
// the end again (at least once, never lost).
func (a *Agent) finish(in *instance, state api.State, reason string, recordFirst bool) error {
	in.mu.Lock()
	rec := &in.rec
	rec.State = state
	if rec.ExitedAt == nil {
		now := time.Now().UTC()
		rec.ExitedAt = &now
	}
	if in.proc != nil {
		select {
		case <-in.proc.Done():
			a.setExit(rec, in.proc.Exited())
		default:
		}
	}
	if reason != "" {
		rec.Reason = reason
	}
	in.mu.Unlock()
	if recordFirst {
		if err := a.store.save(rec); err != nil {
			a.announceEnd(in)
			return err
		}
	}
	err := a.release(in)
	a.announceEnd(in)
	if err != nil {
		a.store.save(rec) // the terminal state at least; the release is retried
		return err
	}
	if err := a.store.save(rec); err != nil {
		return err
	}
	// Only now: a lease handed on before the record says "released" could
	// end up held by two records after a crash.
	a.releaseLeases(rec)
	return nil
}

// announceEnd emits in's terminal event, once per agent: a release retried
// after a failure does not announce the end again. Caller holds in.opMu.
func (a *Agent) announceEnd(in *instance) {
	if in.endAnnounced {
		return
	}
	in.endAnnounced = true
	in.mu.Lock()
	state, reason, code := in.rec.State, in.rec.Reason, in.rec.ExitCode
	in.mu.Unlock()
	a.emit(in, eventKind(state), reason, code)
}

// setExit records how the main process ended. Caller holds in.mu.
func (a *Agent) setExit(rec *record, e spawn.Exit) {
	if !e.Known {
		return
	}
	if e.Signal != 0 {
		rec.Signal = unix.SignalName(e.Signal)
		return
	}
	c := e.Code
	rec.ExitCode = &c
}

// release frees everything a terminal instance holds: its processes,
// cgroup, directory and leases, and marks the record released (the caller
// saves it). It is idempotent and resumable.
func (a *Agent) release(in *instance) error {
	in.mu.Lock()
	rec := &in.rec
	done := rec.Released
	in.mu.Unlock()
	if done {
		return nil
	}
	// The group goes: its notifications are of no more use, and an rmdir
	// under a live registration would only be reported back as a removal.
	a.unwatchMemory(in)
	a.health.Remove(in.id)
	a.unroute(in)
	remove := func() error { return a.cg.Remove(rec.Cgroup) }
	if g := in.group; g != nil {
		remove = g.Remove
	}
	// The cgroup and the directory go side by side. A process still
	// dying in the group can create a file while the directory is being
	// removed; once the group is gone a second pass finds nothing new.
	dirErr := make(chan error, 1)
	target := a.quotaTarget(rec)
	go func() { dirErr <- a.quota.Remove(target) }()
	if err := remove(); err != nil {
		<-dirErr
		return fmt.Errorf("release %s: %w", rec.Spec.ID, err)
	}
	crashpoint("release:cgroup")
	if err := <-dirErr; err != nil {
		if err := a.quota.Remove(target); err != nil {
			return fmt.Errorf("release %s: %w", rec.Spec.ID, err)
		}
	}
	crashpoint("release:dir")
	if in.proc != nil {
		select {
		case <-in.proc.Done():
		case <-time.After(killWait):
			return fmt.Errorf("release %s: main process %d did not exit after SIGKILL", rec.Spec.ID, rec.PID)
		}
	}
	in.mu.Lock()
	rec.Released = true
	in.group = nil
	in.mu.Unlock()
	return nil
}

// setStopping records the intent to stop (see store.saveIntent). If that
// fails the instance stays as it was, so its exit is still watched.
func (a *Agent) setStopping(in *instance, was api.State) error {
	in.mu.Lock()
	in.rec.State = api.StateStopping
	in.mu.Unlock()
	err := a.store.saveIntent(&in.rec)
	if err != nil {
		in.mu.Lock()
		in.rec.State = was
		in.mu.Unlock()
	}
	return err
}

// watch waits for the main process to end; an end nobody asked for makes
// the instance exited or crashed, and the rest of it is killed and released.
func (a *Agent) watch(in *instance) {
	p := in.proc
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		<-p.Done()
		in.opMu.Lock()
		defer in.opMu.Unlock()
		in.mu.Lock()
		state := in.rec.State
		in.mu.Unlock()
		if state != api.StateRunning {
			return // a stop owns this exit
		}
		in.mu.Lock()
		killedForOOM := in.oomKill
		in.mu.Unlock()
		f := a.facts(in)
		state, reason := classifyEnd(p.Exited(), f, killedForOOM, a.policyKill())
		a.noteEnd(in, f, state)
		if err := a.finish(in, state, reason, true); err != nil {
			a.log.Error("instance exit: release", "id", in.id, "err", err)
		}
		a.log.Info("instance ended", "id", in.id, "state", state, "reason", reason)
		if killedForOOM && a.oomLatency != nil {
			in.mu.Lock()
			at := in.oomAt
			in.mu.Unlock()
			a.oomLatency(time.Since(at))
		}
	}()
}

// classifyExit names the state and reason of a main process's own end.
func classifyExit(e spawn.Exit) (api.State, string) {
	switch {
	case !e.Known:
		// Re-adopted processes are not the agent's children: the kernel
		// gives their status to someone else.
		return api.StateExited, "main process exited; exit status unknown (it was started before the agent restarted)"
	case e.Signal != 0:
		return api.StateCrashed, fmt.Sprintf("main process killed by signal %s", unix.SignalName(e.Signal))
	case e.Code != 0:
		return api.StateCrashed, fmt.Sprintf("main process exited with code %d", e.Code)
	}
	return api.StateExited, "main process exited with code 0"
}

// eventKind is the event kind of a terminal state.
func eventKind(s api.State) string {
	switch s {
	case api.StateStopped:
		return api.EventStopped
	case api.StateOOMKilled:
		return api.EventOOMKilled
	case api.StateCrashed:
		return api.EventCrashed
	}
	return api.EventExited
}

// noteEnd keeps what the cgroup and logs said about an ending instance in
// its record: its memory peak and OOM kills, and for an abnormal end the
// last lines of its stderr. Caller holds in.opMu.
func (a *Agent) noteEnd(in *instance, f endFacts, state api.State) {
	var tail string
	if state == api.StateCrashed || state == api.StateOOMKilled {
		in.mu.Lock()
		dir, uid := in.rec.Dir, in.rec.UID
		in.mu.Unlock()
		tail = stderrTail(dir, uid)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if f.known {
		if f.peak > 0 {
			peak := f.peak
			in.rec.MemoryPeak = &peak
		}
		in.rec.OOMKills = f.oomKills
	}
	if tail != "" {
		in.rec.StderrTail = tail
	}
}
