package agent

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/instdir"
	"github.com/hostward/ward/spawn"
)

// killWait bounds how long the agent waits for a killed group to empty.
// SIGKILL cannot be ignored, so only a task stuck in the kernel (D state,
// e.g. on a dead NFS server) outlasts it.
const killWait = 10 * time.Second

// Stop ends an instance: SIGTERM to every process, up to timeout for them
// to go, then SIGKILL to what is left; then everything the instance held is
// released, in reverse (see releaseAll). Stopping a stopped instance
// returns it as it is.
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
	if err := callerGone(ctx); err != nil {
		return nil, err
	}

	rec := in.record()
	if rec.State.Terminal() {
		// Ended, but its release was interrupted: finish it.
		if err := a.finish(in, nil); err != nil {
			return nil, api.Internal(err)
		}
		return a.snapshot(in, false), nil
	}
	// The intent first: an agent that dies from here on leaves the stop
	// for the next one to finish.
	if err := rec.move(api.StateStopping); err != nil {
		return nil, api.Internal(err)
	}
	if err := a.store.saveIntent(&rec); err != nil {
		return nil, api.Internal(err)
	}
	in.setRecord(rec)
	crashpoint("stop:recorded")
	in.grace, in.stopCtx = timeout, ctx
	if err := a.finish(in, func() { a.decideStopped(in) }); err != nil {
		return nil, api.Internal(err)
	}
	return a.snapshot(in, false), nil
}

// decideStopped names the end of a stopped instance once its processes
// are gone: stopped — or oom_killed, when the stop overtook an OOM kill
// by the agent (its exit watcher waits behind the stop). "stopping" is on
// record: a crash from here on is finished by the next agent as stopped,
// so the end is written with the release — unless it is an OOM kill,
// which the next agent could not know: that is recorded at once.
func (a *Agent) decideStopped(in *instance) {
	f := a.facts(in)
	end, reason := api.StateStopped, "stopped by request"
	if in.killedForOOM() {
		end, reason = api.StateOOMKilled, oomReason(f)
	}
	a.noteEnd(in, f, end)
	a.end(in, end, reason, end != api.StateStopped)
	crashpoint("stop:terminated")
}

// terminate sends SIGTERM to every process in g and waits up to grace for
// the group to empty, then kills whatever is left and waits for it to go.
// The grace ends early when the stop's request is abandoned (its caller
// went away, or the agent is shutting down and answered it): the stop was
// asked for, and only its politeness is cut short.
func (a *Agent) terminate(in *instance, g *cgroup.Group, grace time.Duration) error {
	if grace > 0 {
		if err := g.Signal(unix.SIGTERM); err != nil {
			a.log.Warn("stop: SIGTERM", "id", in.id, "err", err)
		}
		if in.proc != nil {
			// A namespaced main process is its PID namespace's init,
			// which SIGTERM reaches only through a handler.
			if err := in.proc.TermInit(); err != nil {
				a.log.Warn("stop: SIGTERM to a namespace's init", "id", in.id, "err", err)
			}
		}
		parent := in.stopCtx
		if parent == nil {
			parent = context.Background()
		}
		ctx, cancel := context.WithTimeout(parent, grace)
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
			return nil
		}
	}
	if err := g.KillAll(); err != nil {
		return err
	}
	// SIGKILL cannot be ignored: only a task stuck in the kernel outlasts
	// this wait, and the group's removal then reports it.
	ctx, cancel := context.WithTimeout(context.Background(), killWait)
	defer cancel()
	if err := g.WaitEmpty(ctx); err != nil {
		return fmt.Errorf("processes left after SIGKILL: %w", err)
	}
	return nil
}

// finish releases everything an instance holds, in reverse, and
// announces its end with the record that says it is released. decide,
// when the instance has not ended yet (a stop), names its end once its
// processes are gone. If a release fails, the end is recorded and
// announced anyway — the instance is gone, only some of what it held is
// not — and the release is retried later (retryReleases, or the next
// agent). Caller holds in.opMu.
func (a *Agent) finish(in *instance, decide func()) error {
	if in.record().Released {
		return nil
	}
	decided := false
	err := a.releaseAll(in, func() {
		if decide != nil && !in.record().State.Terminal() {
			decide()
		}
		decided = true
	})
	if err == nil {
		return nil
	}
	if !decided && decide != nil && !in.record().State.Terminal() {
		decide()
	}
	rec := in.record()
	if !rec.State.Terminal() {
		return err
	}
	if cerr := a.commit(in, rec, endEvent(&rec), ""); cerr != nil {
		a.log.Error("end not recorded", "id", in.id, "err", cerr)
	}
	return err
}

// end moves in to its terminal state, with the exit status of its main
// process if known, and, with recordFirst, records it before the release
// begins, so that a crash mid-release loses nothing the agent knew.
func (a *Agent) end(in *instance, state api.State, reason string, recordFirst bool) {
	in.mu.Lock()
	rec := &in.rec
	if err := rec.move(state); err != nil {
		in.mu.Unlock()
		a.log.Error("instance end", "err", err)
		return
	}
	if rec.ExitedAt == nil {
		now := time.Now().UTC()
		rec.ExitedAt = &now
	}
	if in.proc != nil {
		select {
		case <-in.proc.Done():
			setExit(rec, in.proc.Exited())
		default:
		}
	}
	if reason != "" {
		rec.Reason = reason
	}
	next := *rec
	in.mu.Unlock()
	if recordFirst {
		if err := a.store.save(&next); err != nil {
			a.log.Error("instance end: record", "id", in.id, "err", err)
		}
	}
}

// endEvent is the event announcing next's end, or nil when next is not
// ended or its end was announced already (a release resumed).
func endEvent(next *record) *api.Event {
	if !next.State.Terminal() || endAnnounced(next) {
		return nil
	}
	e := next.event(api.EndEvent(next.State))
	e.Reason, e.ExitCode = next.Reason, next.ExitCode
	e.MemoryPeakBytes, e.OOMKills, e.StderrTail = next.MemoryPeak, next.OOMKills, next.StderrTail
	return &e
}

// endAnnounced reports whether rec's end has been announced: its latest
// announcement is of its terminal state. (An oom_killed notice under
// policy notify says "running".)
func endAnnounced(rec *record) bool {
	return rec.State.Terminal() && rec.Announced != nil && rec.Announced.State == rec.State
}

// setExit records how the main process ended. Caller holds in.mu.
func setExit(rec *record, e spawn.Exit) {
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

// watch waits for the main process to end; an end nobody asked for makes
// the instance exited or crashed, and the rest of it is killed and released.
func (a *Agent) watch(in *instance) {
	p := in.process()
	a.wg.Go(func() {
		select {
		case <-p.Done():
		case <-a.closing:
			return // the instance outlives this agent; the next one watches it
		}
		in.opMu.Lock()
		defer in.opMu.Unlock()
		rec := in.record()
		if in.gone() || rec.State != api.StateRunning {
			return // a stop owns this exit, or the start was rolled back
		}
		killedForOOM := in.killedForOOM()
		f := a.facts(in)
		state, reason := classifyEnd(p.Exited(), f, killedForOOM, a.policyKill())
		a.noteEnd(in, f, state)
		a.end(in, state, reason, true)
		if err := a.finish(in, nil); err != nil {
			a.log.Error("instance exit: release", "id", in.id, "err", err)
		}
		a.log.Info("instance ended", "id", in.id, "state", state, "reason", reason)
		if killedForOOM && a.oomLatency != nil {
			in.mu.Lock()
			at := in.oomAt
			in.mu.Unlock()
			a.oomLatency(time.Since(at))
		}
	})
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

// noteEnd keeps what the cgroup and logs said about an ending instance in
// its record: its memory peak and OOM kills, and for an abnormal end the
// last lines of its stderr. Caller holds in.opMu.
func (a *Agent) noteEnd(in *instance, f endFacts, state api.State) {
	var tail string
	if state == api.StateCrashed || state == api.StateOOMKilled {
		in.mu.Lock()
		dir, uid := in.rec.Dir, in.rec.UID
		in.mu.Unlock()
		tail = instdir.StderrTail(dir, uid)
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
