package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/accounts"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/health"
	"github.com/hostward/ward/lease"
	"github.com/hostward/ward/oom"
	"github.com/hostward/ward/outbox"
	"github.com/hostward/ward/quota"
	"github.com/hostward/ward/reporter"
	"github.com/hostward/ward/spawn"
)

// DefaultRetention is how long a terminal instance's record is kept for
// `info` and for start's idempotency before it is forgotten.
const DefaultRetention = time.Hour

// Options configure an Agent beyond its configuration file.
type Options struct {
	Config *config.Config
	Logger *slog.Logger
	// CgroupRoot overrides where cgroup hierarchies are mounted (tests).
	CgroupRoot string
	// Passwd is the passwd file checked against the uid pool (default /etc/passwd).
	Passwd string
	// Retention of terminal records (default DefaultRetention).
	Retention time.Duration
	// Counters are told what the agent does, for its metrics (nil: none).
	Counters Counters
	// Routes is where running instances' routes are announced (nil:
	// nowhere). Instances re-adopted at startup are announced there
	// before New returns.
	Routes RouteSink
	// Init is ward-init's path (default: nsinit.Path, beside the running
	// binary). Every instance starts through it.
	Init string
	// ConfigFile is the file Config was read from (default
	// config.DefaultPath): it and its directory are hidden from
	// namespaced instances.
	ConfigFile string
}

// Agent runs the instances of one host. Its methods are the API both
// transports serve; each is safe for concurrent use.
type Agent struct {
	cfg       *config.Config
	log       *slog.Logger
	cg        *cgroup.Manager
	uids      *accounts.UIDPool
	ports     *lease.Pool
	store     *store
	events    *Broker
	outbox    *outbox.Outbox
	host      hostInfo
	defaults  api.Limits
	retention time.Duration
	instDir   string
	quota     quota.Backend
	oom       *oom.Watcher
	sampler   *reporter.Sampler
	health    *health.Checker
	routes    routes
	counters  atomic.Pointer[countersBox]
	// oomLatency, when set (benchmarks), is told how long each OOM kill
	// took from the kernel's notification to the oom_killed event.
	oomLatency func(time.Duration)
	lockFile   *os.File
	parentLock *os.File
	// steps are the per-instance resources, in creation order (see
	// resource).
	steps []step
	iso   isolation

	// Lock order: an instance's opMu, then a.mu, then an instance's mu;
	// the outbox's lock is taken under any of them and takes none.
	mu        sync.Mutex
	instances map[string]*instance
	unowned   map[string]int // leak key → consecutive scans seen without an owner

	// closing is closed by Close: the goroutines below (exit watchers, OOM
	// kills) end and are waited for.
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// instance is one instance in memory. opMu serializes lifecycle operations
// (start, stop, limit, exit handling) so they never interleave; mu guards
// the fields and is only held briefly, so info never waits for a stop.
type instance struct {
	id, name string // immutable copies of rec.Spec's, readable without a lock
	index    int

	opMu sync.Mutex

	mu      sync.Mutex
	rec     record
	removed bool // rolled back or pruned: no longer in Agent.instances
	proc    *spawn.Process
	group   *cgroup.Group
	cpu     cpuTracker
	oomKill bool      // the agent killed the instance because it ran out of memory
	oomAt   time.Time // when the kernel's OOM notification was read
	// Guarded by opMu: the log files between the directory's creation and
	// the spawn (see instanceDir), the stop's grace period for SIGTERM
	// (see processes.release), and whether the instance's resources are
	// being released to undo its start.
	logs        []*os.File
	grace       time.Duration
	stopCtx     context.Context // the stop request's: its end cuts the grace short
	rollingBack bool
	// seenKills is the OOM counter as the watcher last reported it.
	seenKills uint64
	// diskUsage reads the instance's quota usage for the sampler; made
	// once (its directory and uid never change), not every sample.
	diskUsage func() (int64, bool)
}

// New prepares the agent: it takes the state directory's lock, checks the
// uid pool against passwd and reconciles the host with the records — live
// instances are re-adopted, half-done work finished or undone, leftovers
// removed — before any request is served.
func New(opts Options) (*Agent, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("agent: no configuration")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{
		cfg:       cfg,
		log:       log,
		events:    NewBroker(),
		retention: opts.Retention,
		closing:   make(chan struct{}),
		instances: make(map[string]*instance),
		unowned:   make(map[string]int),
		uids:      accounts.NewUIDPool(cfg.Users.UIDMin, cfg.Users.UIDMax, cfg.Users.Group, uint32(cfg.Users.GID)),
		ports:     lease.New(cfg.Ports.Min, cfg.Ports.Max),
		instDir:   cfg.InstancesDir(),
		store:     &store{dir: filepath.Join(cfg.StateDir, "records")},
		defaults: api.Limits{
			MemoryBytes:   i64(cfg.Defaults.MemoryBytes),
			SwapBytes:     i64(cfg.Defaults.SwapBytes),
			CPUShares:     i64(cfg.Defaults.CPUShares),
			CPUMillicores: i64(cfg.Defaults.CPUMillicores),
			Pids:          i64(cfg.Defaults.Pids),
			DiskBytes:     i64(cfg.Defaults.DiskBytes),
		},
	}
	if a.retention == 0 {
		a.retention = DefaultRetention
	}
	a.steps = a.defaultSteps()
	iso, err := newIsolation(cfg, opts)
	if err != nil {
		return nil, err
	}
	a.iso = iso
	var capped bool
	if a.iso.nofile, capped = instanceFileLimit(cfg.Isolation.NOFILE); capped {
		log.Warn("isolation.nofile is above the agent's hard open-file limit, which it may not raise: instances get the agent's; raise the service's LimitNOFILE", "nofile", cfg.Isolation.NOFILE, "limit", a.iso.nofile)
	}
	a.counters.Store(&countersBox{opts.Counters})
	a.routes.sink = opts.Routes
	a.raiseFileLimit()
	passwd := opts.Passwd
	if passwd == "" {
		passwd = "/etc/passwd"
	}
	if err := a.uids.CheckPasswd(passwd); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	mem, err := memTotal()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.host = hostInfo{memTotal: mem, cpus: runtime.NumCPU(), portMin: cfg.Ports.Min, portMax: cfg.Ports.Max}

	// The state dir is traversable (not listable) by the pool: each
	// instance reaches its own 0700 directory through it.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{cfg.StateDir, 0o711}, {a.instDir, 0o711}, {a.store.dir, 0o700}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if err := checkTraversable("state_dir", cfg.StateDir); err != nil {
		return nil, err
	}
	if err := checkTraversable("quota.path", a.instDir); err != nil {
		return nil, err
	}
	if err := a.lock(); err != nil {
		return nil, err
	}
	// A backend that would not enforce is found now, not by a tenant
	// filling the disk.
	if a.quota, err = quota.New(cfg.Quota.Backend, a.instDir); err != nil {
		a.lockFile.Close()
		return nil, fmt.Errorf("agent: quota.backend: %w", err)
	}
	if err := a.quota.Verify(); err != nil {
		a.lockFile.Close()
		return nil, fmt.Errorf("agent: quota.backend %s on %s: %w", cfg.Quota.Backend, a.instDir, err)
	}
	if a.outbox, err = outbox.Open(filepath.Join(cfg.StateDir, "outbox")); err != nil {
		a.lockFile.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.cg, err = cgroup.NewManager(cgroup.Config{Root: opts.CgroupRoot, Parent: cfg.Cgroup.Parent})
	if err != nil {
		a.lockFile.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	// The state dir's lock does not stop a second agent with another
	// state dir from sharing the parent — and removing our groups as leaks.
	if err = retryLocked(func() (err error) { a.parentLock, err = a.cg.Lock(); return err }); err != nil {
		a.lockFile.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	if a.sampler, err = reporter.NewSampler(reporter.SamplerOptions{Mode: a.cg.Mode(), Weights: cfg.Report.Weights}); err != nil {
		a.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	if a.cg.Mode() == cgroup.V1 {
		// v1 counts IO per group only on disks with a throttle rule.
		root := opts.CgroupRoot
		if root == "" {
			root = "/sys/fs/cgroup"
		}
		// The parent is ours in every hierarchy; the rule goes on it
		// before any instance exists.
		dir := filepath.Join(root, "blkio", cfg.Cgroup.Parent)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			a.log.Warn("blkio accounting: instance IO figures may read 0", "err", err)
		} else if _, err := reporter.EnableBlkioAccounting(dir); err != nil {
			a.log.Warn("blkio accounting: instance IO figures may read 0", "err", err)
		}
	}
	a.health = health.NewChecker(a.onHealthChange)
	if a.oom, err = oom.NewWatcher(a.cg.Mode(), a.onMemoryEvent); err != nil {
		a.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.reconcile(); err != nil {
		a.Close()
		return nil, fmt.Errorf("agent: reconcile: %w", err)
	}
	return a, nil
}

// lock makes sure one agent at a time owns the state dir: two would each
// treat the other's instances as leaks.
func (a *Agent) lock() error {
	p := filepath.Join(a.cfg.StateDir, "agent.lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	err = retryLocked(func() error {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return errLocked
		}
		return err
	})
	if err != nil {
		f.Close()
		return fmt.Errorf("agent: another agent holds %s: %w", p, err)
	}
	a.lockFile = f
	return nil
}

// lockWait is how long a starting agent waits for a lock to come free. A
// lock outlives a SIGKILLed agent for as long as a child it was forking
// still shares its descriptors (between clone and exec): a restart right
// after the kill must not take that for a second agent.
const lockWait = 2 * time.Second

var errLocked = errors.New("locked")

// retryLocked calls try until it stops returning errLocked (or an error
// wrapping cgroup.ErrLocked), for at most lockWait.
func retryLocked(try func() error) error {
	deadline := time.Now().Add(lockWait)
	for {
		err := try()
		if !errors.Is(err, errLocked) && !errors.Is(err, cgroup.ErrLocked) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Close stops the agent's watchers, waits for the goroutines it started
// and releases its locks. Instances keep running: a later agent re-adopts
// them.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() { close(a.closing) })
	// The watchers first: no new event starts a goroutine of the agent's
	// once it waits for them.
	if a.oom != nil {
		a.oom.Close()
	}
	if a.health != nil {
		a.health.Close()
	}
	a.wg.Wait()
	if a.sampler != nil {
		a.sampler.Close()
	}
	if a.parentLock != nil {
		a.parentLock.Close()
	}
	if a.lockFile != nil {
		return a.lockFile.Close()
	}
	return nil
}

// Config returns the agent's configuration.
func (a *Agent) Config() *config.Config { return a.cfg }

// CgroupMode says which cgroup version the agent drives.
func (a *Agent) CgroupMode() cgroup.Mode { return a.cg.Mode() }

// Events is the agent's local event stream.
func (a *Agent) Events() *Broker { return a.events }

// Outbox holds the agent's numbered events until the bus confirms them.
func (a *Agent) Outbox() *outbox.Outbox { return a.outbox }

// Run does the agent's periodic work — log rotation, the leak scan, the
// pruning of old terminal records — until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	scan := time.NewTicker(a.cfg.Reconcile.Interval.D())
	defer scan.Stop()
	// Rotation touches files instances control; it runs apart so that
	// nothing an instance does to its logs can hold up the leak scan.
	var rotation sync.WaitGroup
	defer rotation.Wait()
	rotation.Go(func() {
		logs := time.NewTicker(logCheckInterval)
		defer logs.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-logs.C:
				a.rotateLogs()
			}
		}
	})
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-scan.C:
			a.retryReleases()
			a.scanLeaks(false)
			a.prune()
		}
	}
}

func (a *Agent) lookup(id string) (*instance, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	in, ok := a.instances[id]
	if !ok {
		return nil, notFound(id)
	}
	return in, nil
}

// all returns every instance, sorted by name, index, id.
func (a *Agent) all() []*instance {
	a.mu.Lock()
	out := make([]*instance, 0, len(a.instances))
	for _, in := range a.instances {
		out = append(out, in)
	}
	a.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		ri, rj := out[i], out[j]
		if ri.name != rj.name {
			return ri.name < rj.name
		}
		if ri.index != rj.index {
			return ri.index < rj.index
		}
		return ri.id < rj.id
	})
	return out
}

func (a *Agent) cgroupName(spec *api.Request) string {
	return fmt.Sprintf("%s-%d-%s", spec.Name, spec.Index, spec.ID)
}

// checkTraversable fails unless every ancestor of dir lets others search
// it: pool users reach their instance dirs through it, and would fail
// their very first chdir with a puzzling "permission denied".
func checkTraversable(field, dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("agent: %s: %w", field, err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("agent: %s: %s (mode %04o) is not searchable by pool users; chmod o+x it or move %s", field, d, st.Mode().Perm(), field)
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}
