package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/instdir"
	"github.com/hostward/ward/quota"
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

// Start creates and starts an instance: it creates the instance's
// resources in order (see defaultSteps), the last of which record it
// running and announce it. It is idempotent by id: the same request again
// returns the existing instance; a different request with the same id is
// a conflict. On any failure every resource already made is released, in
// reverse. A start whose caller is gone before it begins is not begun; one
// under way is not abandoned: a late reply is better than a half-made
// instance.
func (a *Agent) Start(ctx context.Context, req api.Request) (inst *api.Instance, err error) {
	defer func() { a.count(func(c Counters) { c.InstanceStart(result(err)) }) }()
	spec, exe, err := normalize(req, a.defaults, a.host)
	if err != nil {
		return nil, err
	}
	if err := callerGone(ctx); err != nil {
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
	in := &instance{id: spec.ID, name: spec.Name, index: spec.Index}
	in.rec = record{
		Version:   recordVersion,
		Spec:      spec,
		Limits:    spec.Limits,
		Exe:       exe,
		State:     api.StateStarting,
		Cgroup:    group,
		Dir:       filepath.Join(a.instDir, spec.ID),
		CreatedAt: time.Now().UTC(),
	}
	// Held across the whole start: a concurrent duplicate waits here and
	// then sees the finished instance (or none).
	in.opMu.Lock()
	defer in.opMu.Unlock()
	a.instances[spec.ID] = in
	a.mu.Unlock()

	if err := a.createAll(in); err != nil {
		return nil, err
	}
	return a.snapshot(in, false), nil
}

// callerGone refuses work for a request whose caller has gone away or
// whose transport is shutting down: nobody would read the answer.
func callerGone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("request abandoned before it began: %v", err)}
	}
	return nil
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

// prepareDir makes the instance's directory, with its disk quota in force,
// and opens its log files. A failure leaves the directory to the rollback.
func (a *Agent) prepareDir(rec record) (stdout, stderr *os.File, err error) {
	if err := a.quota.Create(a.quotaTarget(rec), *rec.Limits.DiskBytes); err != nil {
		return nil, nil, err
	}
	return instdir.Prepare(rec.Dir, rec.UID, a.cfg.Users.GID)
}

// quotaTarget names an instance's directory and uid to the quota backend.
func (a *Agent) quotaTarget(rec record) quota.Target {
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
