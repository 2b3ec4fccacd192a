package agent

import (
	"errors"
	"fmt"
	"os"
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

// steps is the agent's list of per-instance resources, in creation order.
// The crash points are the tests' (WARD_CRASHPOINT), at the steps a crash
// can leave behind.
func (a *Agent) defaultSteps() []step {
	return []step{
		{resource: leases{a}},
		{resource: recordFile{a}, created: "start:recorded", released: "rollback:removed"},
		// The cgroup and the directory do not depend on each other: they
		// are made, and removed, side by side.
		{resource: cgroupResource{a}, released: "release:cgroup", beside: true},
		{resource: instanceDir{a}, created: "start:cgroup", released: "release:dir", beside: true},
		{resource: processes{a}, created: "start:spawned", ends: true},
		{resource: exitWatch{a}},
		// The instance is running from here on: what follows announces
		// it, and no failure after this step undoes a start.
		{resource: announceStart{a}, created: "start:running"},
		{resource: healthCheck{a}},
		{resource: route{a}},
	}
}

// leases are the instance's uid and, if it asked for one, its port. They
// live in the record and nowhere else: recover claims them again from
// the records, and a release hands them on only after the record says
// released (they come first, so they go last).
type leases struct{ a *Agent }

func (leases) String() string { return "leases" }

func (r leases) create(in *instance) error {
	a := r.a
	rec := in.record()
	uid, err := a.uids.Acquire(in.id)
	if err != nil {
		return &api.Error{Code: api.CodeResourceExhausted, Field: "id", Message: fmt.Sprintf("no free uid in users.uid_min..uid_max: %v", err)}
	}
	port := 0
	if rec.Spec.Port != nil {
		if *rec.Spec.Port == 0 {
			port, err = a.ports.Acquire(in.id)
		} else {
			port, err = *rec.Spec.Port, a.ports.Claim(*rec.Spec.Port, in.id)
		}
		if err != nil {
			a.uids.Release(uid, in.id)
			if errors.Is(err, lease.ErrInUse) {
				return &api.Error{Code: api.CodeConflict, Field: "port", Message: err.Error()}
			}
			return &api.Error{Code: api.CodeResourceExhausted, Field: "port", Message: err.Error()}
		}
	}
	in.mu.Lock()
	in.rec.UID, in.rec.Port = uid, port
	in.mu.Unlock()
	return nil
}

// adopt claims the record's leases again, so that nobody else is handed
// them. One outside the configured range (the range changed) stays the
// instance's all the same.
func (r leases) adopt(in *instance) error {
	rec := in.record()
	log := r.a.log.With("id", in.id)
	if err := r.a.uids.Claim(rec.UID, in.id); errors.Is(err, lease.ErrOutOfRange) {
		log.Warn("reconcile: uid outside users.uid_min..uid_max", "uid", rec.UID)
	} else if err != nil {
		return fmt.Errorf("uid: %w", err)
	}
	if rec.Port != 0 {
		if err := r.a.ports.Claim(rec.Port, in.id); errors.Is(err, lease.ErrOutOfRange) {
			log.Warn("reconcile: port outside ports.min..max", "port", rec.Port)
		} else if err != nil {
			return fmt.Errorf("port: %w", err)
		}
	}
	return nil
}

func (leases) update(*instance, api.Limits) error { return nil }
func (leases) leaks(ownership) ([]leak, error)    { return nil, nil }
func (r leases) release(in *instance) error {
	rec := in.record()
	r.a.uids.Release(rec.UID, in.id)
	if rec.Port != 0 {
		r.a.ports.Release(rec.Port, in.id)
	}
	return nil
}

// recordFile is the instance's record: created as the intent to start
// ("starting", before any side effect), released by writing it
// released — with the instance's end announced, if it was not yet — or,
// for a start rolled back, by removing it.
type recordFile struct{ a *Agent }

func (recordFile) String() string { return "record" }

func (r recordFile) create(in *instance) error {
	rec := in.record()
	if err := r.a.store.saveIntent(&rec); err != nil {
		return api.Internal(err)
	}
	return nil
}

func (recordFile) adopt(*instance) error              { return nil }
func (recordFile) update(*instance, api.Limits) error { return nil }
func (recordFile) leaks(ownership) ([]leak, error)    { return nil, nil }

func (r recordFile) release(in *instance) error {
	if in.rollingBack {
		return r.a.store.remove(in.id)
	}
	next := in.record()
	if next.Released {
		return nil
	}
	next.Released = true
	return r.a.commit(in, next, endEvent(&next), "")
}

// cgroupResource is the instance's cgroup, with its limits, and the OOM
// watcher's registration of it — made before the first process enters the
// group, so that nothing the instance does can run out of memory unseen.
type cgroupResource struct{ a *Agent }

func (cgroupResource) String() string { return "cgroup" }

func (r cgroupResource) create(in *instance) error {
	rec := in.record()
	g, err := r.a.cg.Create(rec.Cgroup, resources(rec.Limits))
	if errors.Is(err, cgroup.ErrExist) {
		// Only a leftover of an earlier holder of this very id can
		// collide; it is not ours to adopt blindly.
		return &api.Error{Code: api.CodeConflict, Field: "id", Message: fmt.Sprintf("cgroup %s already exists; a leftover is being cleaned up, retry", r.a.cg.Path(rec.Cgroup))}
	}
	if err != nil {
		return api.Internal(err)
	}
	if err := r.a.watchMemory(in, g.MemoryDir(), 0); err != nil {
		if rerr := g.Remove(); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return api.Internal(fmt.Errorf("oom watcher: %w", err))
	}
	in.mu.Lock()
	in.group = g
	in.mu.Unlock()
	return nil
}

// adopt loads the group and watches it from the OOM kills it already had;
// recover compares them with the record's to find those that came while
// nobody watched.
func (r cgroupResource) adopt(in *instance) error {
	g, err := r.a.cg.Load(in.record().Cgroup)
	if errors.Is(err, cgroup.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.group = g
	in.mu.Unlock()
	kills, err := oom.OOMKills(r.a.cg.Mode(), g.MemoryDir())
	if err != nil {
		r.a.log.Warn("reconcile: reading the OOM counter", "id", in.id, "err", err)
	}
	if err := r.a.watchMemory(in, g.MemoryDir(), kills); err != nil {
		r.a.log.Error("reconcile: OOM watch; this instance's OOMs will be seen only when it ends", "id", in.id, "err", err)
	}
	return nil
}

func (r cgroupResource) update(in *instance, l api.Limits) error {
	g := in.cgroup()
	if g == nil {
		return nil
	}
	if err := g.Update(resources(l)); err != nil {
		// Some of the limits may have gone in before the refusal.
		if rerr := g.Update(resources(in.record().Limits)); rerr != nil {
			r.a.log.Error("limit: restore the limits on record", "id", in.id, "err", rerr)
		}
		return invalid("limits", "the kernel refused: %v", err)
	}
	return nil
}

// release removes the group, killing whatever still runs in it. A start
// rolled back after a crash has no group loaded: its name, unique among
// the live records, finds it.
func (r cgroupResource) release(in *instance) error {
	// Its notifications are of no more use, and an rmdir under a live
	// registration would only be reported back as a removal.
	r.a.unwatchMemory(in)
	g := in.cgroup()
	var err error
	if g != nil {
		err = g.Remove()
	} else {
		err = r.a.cg.Remove(in.record().Cgroup)
	}
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.group = nil
	in.mu.Unlock()
	return nil
}

func (r cgroupResource) leaks(owned ownership) ([]leak, error) {
	names, err := r.a.cg.List()
	if err != nil {
		return nil, fmt.Errorf("list cgroups: %w", err)
	}
	var out []leak
	for _, n := range names {
		if owned.cgroups[n] {
			continue
		}
		out = append(out, leak{key: "cg:" + n, what: "cgroup " + r.a.cg.Path(n), remove: func() error { return r.a.cg.Remove(n) }})
	}
	return out, nil
}

// instanceDir is the instance's directory, with its disk quota and log
// files. The log files stay open between create and the processes'
// create, which hands them to the instance.
type instanceDir struct{ a *Agent }

func (instanceDir) String() string { return "directory" }

func (r instanceDir) create(in *instance) error {
	stdout, stderr, err := r.a.prepareDir(in.record())
	if err != nil {
		return api.Internal(err)
	}
	in.logs = []*os.File{stdout, stderr}
	return nil
}

func (instanceDir) adopt(*instance) error { return nil }

func (r instanceDir) update(in *instance, l api.Limits) error {
	rec := in.record()
	if *l.DiskBytes == *rec.Limits.DiskBytes {
		return nil
	}
	if err := r.a.quota.SetLimit(r.a.quotaTarget(rec), *l.DiskBytes); err != nil {
		return invalid("limits.disk_bytes", "the %s quota refused: %v", r.a.quota.Name(), err)
	}
	return nil
}

func (r instanceDir) release(in *instance) error {
	closeAll(in.logs...)
	in.logs = nil
	return r.a.quota.Remove(r.a.quotaTarget(in.record()))
}

func (r instanceDir) leaks(owned ownership) ([]leak, error) {
	ents, err := os.ReadDir(r.a.instDir)
	if err != nil {
		return nil, fmt.Errorf("list instance dirs: %w", err)
	}
	var out []leak
	for _, e := range ents {
		n := e.Name()
		if owned.ids[n] || strings.HasPrefix(n, ".") {
			continue
		}
		p := r.a.instDir + "/" + n
		out = append(out, leak{key: "dir:" + n, what: "instance dir " + p, remove: func() error { return r.a.removeLeakedDir(p) }})
	}
	return out, nil
}

// processes are the instance's main process and whatever it forks, all in
// its cgroup. A namespaced instance's mounts are its processes' too: they
// live in its own mount namespace, made by ward-init, and go with its last
// process, so there is nothing of them on the host to adopt or release.
type processes struct{ a *Agent }

func (processes) String() string                     { return "processes" }
func (processes) update(*instance, api.Limits) error { return nil }

// leaks are mounts in the agent's own namespace below the instance
// directories: ward makes none there, and one would pin a directory the
// scan could then never remove (a namespaced view that propagated out, or
// an operator's mistake).
func (r processes) leaks(ownership) ([]leak, error) {
	ms, err := mountsUnder(r.a.instDir)
	if err != nil {
		return nil, fmt.Errorf("list mounts: %w", err)
	}
	out := make([]leak, 0, len(ms))
	for _, m := range ms {
		out = append(out, leak{key: "mount:" + m, what: "mount " + m, remove: func() error {
			// Gone already with the leaked directory it was in.
			if err := detachMount(m); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return err
			}
			return nil
		}})
	}
	return out, nil
}

func (r processes) create(in *instance) error {
	a := r.a
	rec := in.record()
	g := in.cgroup()
	logs := in.logs
	in.logs = nil
	defer closeAll(logs...)
	sp := spawn.Spec{
		Path:   rec.Exe,
		Args:   rec.Spec.Command,
		Env:    a.environ(&rec),
		Dir:    rec.Dir,
		UID:    uint32(rec.UID),
		GID:    uint32(a.cfg.Users.GID),
		Stdout: logs[0],
		Stderr: logs[1],
	}
	if a.cg.Mode() == cgroup.V2 {
		sp.CgroupV2Dir = g.Dirs()[0]
	} else {
		sp.CgroupV1Dirs = g.Dirs()
	}
	a.spawnIsolation(&sp, &rec)
	p, err := spawn.Start(sp)
	if err != nil {
		return spawnError(err)
	}
	in.mu.Lock()
	in.proc = p
	in.mu.Unlock()
	return nil
}

// adopt finds the main process again by pid and start time; one that is
// gone leaves in.proc nil.
func (r processes) adopt(in *instance) error {
	rec := in.record()
	p, err := spawn.Adopt(rec.PID, rec.StartTime)
	if errors.Is(err, spawn.ErrGone) {
		return nil
	}
	if err != nil {
		return err
	}
	in.mu.Lock()
	in.proc = p
	in.mu.Unlock()
	return nil
}

// release ends every process: SIGTERM first when the instance is given a
// grace period (a stop), SIGKILL to whatever is left, and waits for the
// main process to be gone.
func (r processes) release(in *instance) error {
	in.mu.Lock()
	g, p, rec := in.group, in.proc, in.rec
	in.mu.Unlock()
	if g == nil {
		// A record recovered after a crash, its group not adopted (a start
		// to roll back, a stop or a release to finish): the group its
		// record names holds its processes, if any, and its counters.
		lg, err := r.a.cg.Load(rec.Cgroup)
		if err != nil && !errors.Is(err, cgroup.ErrNotExist) {
			return err
		}
		g = lg
		in.mu.Lock()
		in.group = g
		in.mu.Unlock()
	}
	if g != nil {
		if err := r.a.terminate(in, g, in.grace); err != nil {
			return err
		}
	}
	if p == nil {
		return nil
	}
	pid := rec.PID
	select {
	case <-p.Done():
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("main process %d did not exit after SIGKILL", pid)
	}
}

// exitWatch waits for the main process to end (see watch).
type exitWatch struct{ a *Agent }

func (exitWatch) String() string                     { return "exit watch" }
func (exitWatch) update(*instance, api.Limits) error { return nil }
func (exitWatch) leaks(ownership) ([]leak, error)    { return nil, nil }

// The watcher waits for in.opMu: it acts only once the start it belongs to
// is done, and not at all if that start was rolled back.
func (r exitWatch) create(in *instance) error { r.a.watch(in); return nil }

func (r exitWatch) adopt(in *instance) error {
	if in.process() != nil {
		r.a.watch(in)
	}
	return nil
}

// release has nothing to do: the watcher ends with the process.
func (exitWatch) release(*instance) error { return nil }

// announceStart records the instance running and announces it (started),
// in one commit.
type announceStart struct{ a *Agent }

func (announceStart) String() string                     { return "started" }
func (announceStart) adopt(*instance) error              { return nil }
func (announceStart) update(*instance, api.Limits) error { return nil }
func (announceStart) release(*instance) error            { return nil }
func (announceStart) leaks(ownership) ([]leak, error)    { return nil, nil }

func (r announceStart) create(in *instance) error {
	next := in.record()
	if err := next.move(api.StateRunning); err != nil {
		return api.Internal(err)
	}
	started := time.Now().UTC()
	next.StartedAt = &started
	if p := in.process(); p != nil {
		next.PID, next.StartTime = p.Pid, p.StartTime
	}
	e := next.event(api.EventStarted)
	if err := r.a.commit(in, next, &e, "start:announced"); err != nil {
		return api.Internal(err)
	}
	return nil
}

// healthCheck probes a running instance's port, if it asked for it.
type healthCheck struct{ a *Agent }

func (healthCheck) String() string                     { return "health check" }
func (healthCheck) update(*instance, api.Limits) error { return nil }
func (healthCheck) leaks(ownership) ([]leak, error)    { return nil, nil }

// create never fails a start: an instance without its check is still an
// instance, and says so in the log.
func (r healthCheck) create(in *instance) error { r.a.checkHealth(in); return nil }

func (r healthCheck) adopt(in *instance) error {
	if !in.killedForOOM() {
		r.a.checkHealth(in)
	}
	return nil
}

func (r healthCheck) release(in *instance) error {
	r.a.health.Remove(in.id)
	return nil
}

// route is the instance's registration with the routers.
type route struct{ a *Agent }

func (route) String() string                     { return "route" }
func (route) update(*instance, api.Limits) error { return nil }
func (route) leaks(ownership) ([]leak, error)    { return nil, nil }

func (r route) create(in *instance) error { r.a.syncRoute(in); return nil }

func (r route) adopt(in *instance) error {
	if !in.killedForOOM() {
		r.a.syncRoute(in)
	}
	return nil
}

func (r route) release(in *instance) error { r.a.unroute(in); return nil }

// cgroup, process and killedForOOM read in's fields under in.mu.
func (in *instance) cgroup() *cgroup.Group {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.group
}

func (in *instance) process() *spawn.Process {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.proc
}

func (in *instance) killedForOOM() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.oomKill
}

// killUnconfined kills a process found alive outside its vanished cgroup,
// and whatever else runs under its uid: none of it can be left to run
// unconfined, or the uid handed on.
func killUnconfined(p *spawn.Process, uid int) {
	p.Signal(unix.SIGKILL)
	accounts.KillUID(uid)
}
