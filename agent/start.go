package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/instdir"
	"github.com/hostward/ward/lease"
	"github.com/hostward/ward/quota"
	"github.com/hostward/ward/spawn"
)

// cfsPeriod is the CFS period cpu_millicores is expressed against (100 ms,
// the kernel default): 1000 millicores = one full period per period.
const cfsPeriod = 100_000

// resources maps instance limits onto the OCI resources the cgroup package
// takes. Swap is OCI's memory+swap total; millicores 0 lifts the CFS cap.
func resources(l api.Limits) *specs.LinuxResources {
	mem, swap := *l.MemoryBytes, *l.SwapBytes
	shares := uint64(*l.CPUShares)
	quota, period := int64(-1), uint64(cfsPeriod)
	if m := *l.CPUMillicores; m > 0 {
		quota = m * cfsPeriod / 1000
	}
	memsw := mem + swap
	pids := *l.Pids
	return &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &mem, Swap: &memsw},
		CPU:    &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}
}

// Start creates and starts an instance. It is idempotent by id: the same
// request again returns the existing instance; a different request with the
// same id is a conflict. On any failure every step already taken is undone.
// A caller going away does not abandon a start half-way: ctx is not
// consulted, a late reply is better than a half-made instance.
func (a *Agent) Start(ctx context.Context, req api.Request) (inst *api.Instance, err error) {
	defer func() { a.count(func(c Counters) { c.InstanceStart(result(err)) }) }()
	spec, exe, err := normalize(req, a.defaults, a.host)
	if err != nil {
		return nil, err
	}

	a.mu.Lock()
	if in, ok := a.instances[spec.ID]; ok {
		a.mu.Unlock()
		return a.existing(in, spec)
	}
	// Names and ids may contain '-', so two instances can spell the same
	// <name>-<index>-<id>; the second must not touch the first's group.
	group := a.cgroupName(&spec)
	if other := a.groupOwner(group); other != "" {
		a.mu.Unlock()
		return nil, &api.Error{Code: api.CodeConflict, Field: "name", Message: fmt.Sprintf("cgroup name %s is taken by instance %q; choose another name or id", group, other)}
	}
	uid, err := a.uids.Acquire(spec.ID)
	if err != nil {
		a.mu.Unlock()
		return nil, &api.Error{Code: api.CodeResourceExhausted, Field: "id", Message: fmt.Sprintf("no free uid in users.uid_min..uid_max: %v", err)}
	}
	port := 0
	if spec.Port != nil {
		if *spec.Port == 0 {
			port, err = a.ports.Acquire(spec.ID)
		} else {
			port, err = *spec.Port, a.ports.Claim(*spec.Port, spec.ID)
		}
		if err != nil {
			a.uids.Release(uid, spec.ID)
			a.mu.Unlock()
			if errors.Is(err, lease.ErrInUse) {
				return nil, &api.Error{Code: api.CodeConflict, Field: "port", Message: err.Error()}
			}
			return nil, &api.Error{Code: api.CodeResourceExhausted, Field: "port", Message: err.Error()}
		}
	}
	now := time.Now().UTC()
	in := &instance{id: spec.ID, name: spec.Name, index: spec.Index}
	in.rec = record{
		Version:   recordVersion,
		Spec:      spec,
		Limits:    spec.Limits,
		Exe:       exe,
		State:     api.StateStarting,
		UID:       uid,
		Port:      port,
		Cgroup:    group,
		Dir:       filepath.Join(a.instDir, spec.ID),
		CreatedAt: now,
	}
	// Held across the whole start: a concurrent duplicate waits here and
	// then sees the finished instance (or none).
	in.opMu.Lock()
	a.instances[spec.ID] = in
	a.mu.Unlock()

	err = a.create(in)
	if err != nil {
		a.rollbackStart(in, false)
		in.opMu.Unlock()
		return nil, err
	}
	inst = a.snapshot(in, false)
	in.opMu.Unlock()
	return inst, nil
}

// groupOwner returns the id of the live instance using cgroup name, or "".
// Caller holds a.mu.
func (a *Agent) groupOwner(name string) string {
	for id, in := range a.instances {
		in.mu.Lock()
		taken := !in.rec.Released && in.rec.Cgroup == name
		in.mu.Unlock()
		if taken {
			return id
		}
	}
	return ""
}

// gone reports whether in was rolled back or pruned while the caller
// waited for its lock: the caller holds a stale pointer and must act as if
// the instance did not exist. Caller holds in.opMu.
func (in *instance) gone() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.removed
}

// existing answers a start for an id the agent already knows.
func (a *Agent) existing(in *instance, spec api.Request) (*api.Instance, error) {
	// Wait for a start in flight to settle.
	in.opMu.Lock()
	gone := in.gone()
	in.opMu.Unlock()
	in.mu.Lock()
	same := reflect.DeepEqual(in.rec.Spec, spec)
	in.mu.Unlock()
	if !same {
		return nil, &api.Error{Code: api.CodeConflict, Field: "id", Message: fmt.Sprintf("instance %q exists with a different spec", spec.ID)}
	}
	if gone {
		// the start it waited for failed and was rolled back
		return nil, &api.Error{Code: api.CodeUnavailable, Field: "id", Message: fmt.Sprintf("a concurrent start of %q failed; retry", spec.ID)}
	}
	return a.snapshot(in, false), nil
}

// create performs the side effects of a start, each after the intent to
// make it is on disk.
func (a *Agent) create(in *instance) error {
	rec := &in.rec
	if err := a.store.saveIntent(rec); err != nil {
		return api.Internal(err)
	}
	crashpoint("start:recorded")

	// The cgroup and the directory do not depend on each other: they are
	// made side by side. A failure of either is undone with the other by
	// rollbackStart, which removes both by name.
	var g *cgroup.Group
	cgErr := make(chan error, 1)
	go func() {
		var err error
		g, err = a.cg.Create(rec.Cgroup, resources(rec.Limits))
		if err == nil {
			if werr := a.watchMemory(in, g.MemoryDir(), 0); werr != nil {
				g.Remove()
				err = fmt.Errorf("oom watcher: %w", werr)
			}
		}
		cgErr <- err
	}()
	stdout, stderr, dirErr := a.prepareDir(rec)
	if err := <-cgErr; err != nil {
		closeAll(stdout, stderr)
		if errors.Is(err, cgroup.ErrExist) {
			// Only a leftover of an earlier holder of this very id can
			// collide; it is not ours to adopt blindly.
			return &api.Error{Code: api.CodeConflict, Field: "id", Message: fmt.Sprintf("cgroup %s already exists; a leftover is being cleaned up, retry", a.cg.Path(rec.Cgroup))}
		}
		return api.Internal(err)
	}
	in.group = g // from here on the group is this start's to remove
	if dirErr != nil {
		return api.Internal(dirErr)
	}
	defer closeAll(stdout, stderr)
	crashpoint("start:cgroup")

	sp := spawn.Spec{
		Path:   rec.Exe,
		Args:   rec.Spec.Command,
		Env:    a.environ(rec),
		Dir:    rec.Dir,
		UID:    uint32(rec.UID),
		GID:    uint32(a.cfg.Users.GID),
		Stdout: stdout,
		Stderr: stderr,
	}
	if a.cg.Mode() == cgroup.V2 {
		sp.CgroupV2Dir = g.Dirs()[0]
	} else {
		sp.CgroupV1Dirs = g.Dirs()
	}
	p, err := spawn.Start(sp)
	if errors.Is(err, syscall.EAGAIN) {
		return &api.Error{Code: api.CodeResourceExhausted, Field: "limits.pids", Message: fmt.Sprintf("cannot start: %v", err)}
	}
	if err != nil {
		return invalid("command", "cannot start: %v", err)
	}
	in.proc = p
	crashpoint("start:spawned")
	started := time.Now().UTC()
	in.mu.Lock()
	rec.State = api.StateRunning
	rec.PID = p.Pid
	rec.StartTime = p.StartTime
	rec.StartedAt = &started
	e := in.event(api.EventStarted)
	in.mu.Unlock()
	// Stored before the record says running, sent only after: a crash
	// between the two can neither lose the event nor send it for a start
	// that reconcile then rolls back (it answers it with an end instead).
	// Under in.opMu: an exit handled right after comes later.
	in.announced = a.announce(e)
	crashpoint("start:announced")
	if err := a.store.save(rec); err != nil {
		return api.Internal(err)
	}
	commit := in.announced
	in.announced = nil
	commit()
	crashpoint("start:running")
	a.watch(in)
	a.checkHealth(in)
	a.syncRoute(in)
	return nil
}

// prepareDir makes the instance's directory, with its disk quota in force,
// and opens its log files. A failure leaves the directory to rollbackStart.
func (a *Agent) prepareDir(rec *record) (stdout, stderr *os.File, err error) {
	if err := a.quota.Create(a.quotaTarget(rec), *rec.Limits.DiskBytes); err != nil {
		return nil, nil, err
	}
	return instdir.Prepare(rec.Dir, rec.UID, a.cfg.Users.GID)
}

// quotaTarget names an instance's directory and uid to the quota backend.
func (a *Agent) quotaTarget(rec *record) quota.Target {
	return quota.Target{Dir: rec.Dir, UID: uint32(rec.UID)}
}

func closeAll(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// environ is the request's environment plus what ward sets for everyone.
func (a *Agent) environ(rec *record) []string {
	env := make([]string, 0, len(rec.Spec.Env)+5)
	hasPath := false
	for k, v := range rec.Spec.Env {
		env = append(env, k+"="+v)
		hasPath = hasPath || k == "PATH"
	}
	if !hasPath {
		env = append(env, "PATH="+defaultPath)
	}
	env = append(env,
		"INSTANCE_ID="+rec.Spec.ID,
		"INSTANCE_INDEX="+strconv.Itoa(rec.Spec.Index),
		"HOME="+rec.Dir,
	)
	if rec.Port != 0 {
		env = append(env, "PORT="+strconv.Itoa(rec.Port))
	}
	return env
}

// rollbackStart undoes a failed start: whatever of process, cgroup,
// directory, leases and record exists is removed, in reverse order. A live
// start removes only a cgroup it created (in.group); recovering a
// "starting" record after a crash removes the group by name — nothing else
// can own it, names are unique among live records.
func (a *Agent) rollbackStart(in *instance, recovering bool) {
	rec := &in.rec
	if in.announced != nil {
		// First, before anything is removed or waited for: a held event
		// stops every later one on the way to the bus, and once the
		// record is gone no next agent could tell that this start needs
		// an end.
		a.endAnnouncedStart(in)
	}
	a.unwatchMemory(in)
	a.health.Remove(in.id)
	a.unroute(in)
	var err error
	switch {
	case in.group != nil:
		err = in.group.Remove()
	case recovering:
		err = a.cg.Remove(rec.Cgroup)
	}
	if err != nil {
		a.log.Error("rollback: remove cgroup", "id", rec.Spec.ID, "err", err)
	}
	if in.proc != nil {
		<-in.proc.Done()
	}
	if err := a.quota.Remove(a.quotaTarget(rec)); err != nil {
		a.log.Error("rollback: remove dir", "id", rec.Spec.ID, "err", err)
	}
	if err := a.store.remove(rec.Spec.ID); err != nil {
		a.log.Error("rollback: remove record", "id", rec.Spec.ID, "err", err)
	}
	crashpoint("rollback:removed")
	a.releaseLeases(rec)
	in.mu.Lock()
	in.removed = true
	in.mu.Unlock()
	a.mu.Lock()
	delete(a.instances, rec.Spec.ID)
	a.mu.Unlock()
}

// endAnnouncedStart answers a start whose started event is stored but
// which is being rolled back, never having been recorded running: its
// stopped event is stored right behind it, and only then is the started
// event released (the live path, where it is held) — a crash at any point
// leaves either both events or, with the record still "starting", the
// started event alone for the next agent to answer again. Local
// subscribers get them in order.
func (a *Agent) endAnnouncedStart(in *instance) {
	in.mu.Lock()
	in.rec.State = api.StateStopped
	e := in.event(api.EventStopped)
	e.Reason = "start rolled back: it was never recorded running"
	in.mu.Unlock()
	end := a.number(e, false)
	if commit := in.announced; commit != nil {
		in.announced = nil
		commit()
	}
	a.deliver(end)
}

func (a *Agent) releaseLeases(rec *record) {
	a.uids.Release(rec.UID, rec.Spec.ID)
	if rec.Port != 0 {
		a.ports.Release(rec.Port, rec.Spec.ID)
	}
}
