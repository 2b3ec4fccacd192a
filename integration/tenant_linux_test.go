package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/testagent"
)

// Pool range of the containment tests, apart from the ward-binary tests'
// (uidMin): a leak check of one never sees the other's processes.
const containUIDMin = 24000

// resultTimeout bounds the wait for one result line of a tenant.
const resultTimeout = 10 * time.Second

// Result phases written by the tenant program (integration/tenant).
const (
	phaseAwaiting = "awaiting"
	phaseDone     = "done"
)

// tenancy is an in-process agent over a throwaway slice of the host whose
// instances run the tenant program: the containment tests' host.
type tenancy struct {
	t       *testing.T
	cfg     *config.Config
	a       *agent.Agent
	tenants []*tenant
}

func newTenancy(t *testing.T) *tenancy {
	t.Helper()
	return newTenancyWith(t, nil)
}

// newTenancyWith is newTenancy with the agent's configuration changed by
// mutate first.
func newTenancyWith(t *testing.T, mutate func(*config.Config)) *tenancy {
	t.Helper()
	if tenantBin == "" {
		t.Skipf("no tenant program: set %s to a built integration/tenant", tenantEnv)
	}
	cfg := testagent.Config(t, containUIDMin)
	if mutate != nil {
		mutate(cfg)
	}
	ty := &tenancy{t: t, cfg: cfg, a: testagent.New(t, cfg)}
	// Runs before testagent stops the instances (cleanups run last in,
	// first out): a failed test shows every tenant as it was.
	t.Cleanup(func() {
		if t.Failed() {
			for _, tn := range ty.tenants {
				t.Log(tn.diag())
			}
		}
	})
	return ty
}

// tenant is an instance running the tenant program.
type tenant struct {
	ty   *tenancy
	name string
	inst *api.Instance // as Start returned it

	lines          []string // result lines seen so far
	next           int      // the next line result returns
	stdout, stderr []byte   // the logs as last read: the dir goes when the instance ends
}

// start starts an instance called name that runs `tenant args...`.
func (ty *tenancy) start(name string, limits api.Limits, args ...string) *tenant {
	ty.t.Helper()
	return ty.startReq(api.Request{Name: name, Limits: limits}, args...)
}

// startReq starts req with `tenant args...` as its command.
func (ty *tenancy) startReq(req api.Request, args ...string) *tenant {
	ty.t.Helper()
	req.Command = append([]string{tenantBin}, args...)
	inst, err := ty.a.Start(context.Background(), req)
	if err != nil {
		ty.t.Fatalf("start %s %q: %v", req.Name, args, err)
	}
	tn := &tenant{ty: ty, name: req.Name, inst: inst}
	ty.tenants = append(ty.tenants, tn)
	ty.t.Logf("%s: instance %s pid %d uid %d: tenant %s", tn.name, inst.ID, *inst.PID, *inst.UID, strings.Join(args, " "))
	return tn
}

// answers fails t unless the agent lists every tenant started so far.
func (ty *tenancy) answers() {
	ty.t.Helper()
	l, err := ty.a.List(context.Background(), api.ListRequest{})
	if err != nil {
		ty.t.Fatalf("agent does not answer List: %v", err)
	}
	if len(l.Instances) != len(ty.tenants) {
		ty.t.Fatalf("agent lists %d instances, %d were started", len(l.Instances), len(ty.tenants))
	}
}

// result waits for the tenant's next result line, checks its phase and
// decodes it into v (nil: only check). A tenant that exits right after a
// result may take its log along (the dir is removed at release): give it
// -stay when its result matters.
func (tn *tenant) result(phase string, v any) {
	t := tn.ty.t
	t.Helper()
	deadline := time.Now().Add(resultTimeout)
	for {
		tn.readLogs()
		if tn.next < len(tn.lines) {
			line := tn.lines[tn.next]
			tn.next++
			t.Logf("%s: %s", tn.name, line)
			var h struct{ Phase string }
			if err := json.Unmarshal([]byte(line), &h); err != nil || h.Phase != phase {
				t.Fatalf("%s: want a %q result, got %s\n%s", tn.name, phase, line, tn.diag())
			}
			if v != nil {
				if err := json.Unmarshal([]byte(line), v); err != nil {
					t.Fatalf("%s: result %s: %v", tn.name, line, err)
				}
			}
			return
		}
		if in := tn.info(); in.State.Terminal() {
			tn.readLogs()
			if tn.next == len(tn.lines) {
				t.Fatalf("%s: ended without a %q result\n%s", tn.name, phase, tn.diag())
			}
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q result after %v\n%s", tn.name, phase, resultTimeout, tn.diag())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// trigger waits until the tenant (run with -await) is ready and sends it
// SIGUSR1 to go ahead.
func (tn *tenant) trigger() {
	tn.ty.t.Helper()
	tn.result(phaseAwaiting, nil)
	tn.signal(syscall.SIGUSR1)
}

func (tn *tenant) signal(sig syscall.Signal) {
	tn.ty.t.Helper()
	if err := syscall.Kill(*tn.inst.PID, sig); err != nil {
		tn.ty.t.Fatalf("%s: signal %v: %v", tn.name, sig, err)
	}
}

// readLogs rereads the instance's logs; once the dir is gone the last
// copies stay.
func (tn *tenant) readLogs() {
	logs := filepath.Join(tn.inst.Dir, "logs")
	if b, err := os.ReadFile(filepath.Join(logs, "stdout.log")); err == nil {
		tn.stdout = b
	}
	if b, err := os.ReadFile(filepath.Join(logs, "stderr.log")); err == nil {
		tn.stderr = b
	}
	tn.lines = tn.lines[:0]
	out := tn.stdout
	for {
		line, rest, ok := bytes.Cut(out, []byte("\n"))
		if !ok {
			break // a line still being written
		}
		if bytes.HasPrefix(line, []byte("{")) {
			tn.lines = append(tn.lines, string(line))
		}
		out = rest
	}
}

func (tn *tenant) info() *api.Instance {
	tn.ty.t.Helper()
	in, err := tn.ty.a.Info(context.Background(), api.InfoRequest{ID: tn.inst.ID})
	if err != nil {
		tn.ty.t.Fatalf("%s: info: %v", tn.name, err)
	}
	return in
}

// waitEnd waits until the instance is in a terminal state.
func (tn *tenant) waitEnd(timeout time.Duration) *api.Instance {
	tn.ty.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		tn.readLogs()
		if in := tn.info(); in.State.Terminal() {
			return in
		}
		if time.Now().After(deadline) {
			tn.ty.t.Fatalf("%s: still not ended after %v\n%s", tn.name, timeout, tn.diag())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mustRun fails t unless the instance is running with its first pid.
func (tn *tenant) mustRun() *api.Instance {
	tn.ty.t.Helper()
	in := tn.info()
	if in.State != api.StateRunning || in.PID == nil || *in.PID != *tn.inst.PID {
		tn.ty.t.Fatalf("%s: want running with pid %d\n%s", tn.name, *tn.inst.PID, tn.diag())
	}
	if err := syscall.Kill(*tn.inst.PID, 0); err != nil {
		tn.ty.t.Fatalf("%s: pid %d: %v\n%s", tn.name, *tn.inst.PID, err, tn.diag())
	}
	return in
}

// cgroupFile reads one file of the instance's group in a v1 hierarchy.
func (tn *tenant) cgroupFile(ctrl, file string) string {
	tn.ty.t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", ctrl, tn.inst.Cgroup, file))
	if err != nil {
		tn.ty.t.Fatalf("%s: %v\n%s", tn.name, err, tn.diag())
	}
	return strings.TrimSpace(string(b))
}

// cgroupUint reads a cgroup file holding one number, or the number after
// key in a "key value" file.
func (tn *tenant) cgroupUint(ctrl, file, key string) uint64 {
	tn.ty.t.Helper()
	s := tn.cgroupFile(ctrl, file)
	if key != "" {
		v, ok := "", false
		for _, line := range strings.Split(s, "\n") {
			if k, rest, found := strings.Cut(line, " "); found && k == key {
				v, ok = rest, true
			}
		}
		if !ok {
			tn.ty.t.Fatalf("%s: no %q in %s:\n%s", tn.name, key, file, s)
		}
		s = v
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		tn.ty.t.Fatalf("%s: %s: %v", tn.name, file, err)
	}
	return n
}

// diag is everything that explains a failure: the agent's view of the
// instance, its result lines and its stderr.
func (tn *tenant) diag() string {
	var b strings.Builder
	fmt.Fprintf(&b, "--- tenant %s (instance %s, command %q)\n", tn.name, tn.inst.ID, tn.inst.Command)
	if in, err := tn.ty.a.Info(context.Background(), api.InfoRequest{ID: tn.inst.ID}); err != nil {
		fmt.Fprintf(&b, "info: %v\n", err)
	} else {
		fmt.Fprintf(&b, "state %s, reason %q, exit code %s, signal %q, pid %s, usage mem %s pids %s\n",
			in.State, in.Reason, ptrString(in.ExitCode), in.ExitSignal, ptrString(in.PID),
			ptrString(in.Usage.MemoryBytes), ptrString(in.Usage.Pids))
	}
	tn.readLogs()
	fmt.Fprintf(&b, "stdout:\n%s", tail(tn.stdout, 4096))
	fmt.Fprintf(&b, "stderr:\n%s", tail(tn.stderr, 4096))
	return b.String()
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}

// hostPID is the host's pid of the tenant's process that calls itself
// pid (the pid its result lines report): in a PID namespace of its own
// they differ, and only the host's may be signalled from here.
func (tn *tenant) hostPID(pid int) int {
	tn.ty.t.Helper()
	main := strconv.Itoa(*tn.inst.PID)
	ns, err := os.Readlink("/proc/" + main + "/ns/pid")
	if err != nil {
		tn.ty.t.Fatalf("%s: %v", tn.name, err)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/pid"); err != nil || l != ns {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
				f := strings.Fields(v)
				if len(f) > 0 && f[len(f)-1] == strconv.Itoa(pid) {
					return p
				}
			}
		}
	}
	tn.ty.t.Fatalf("%s: no process of the instance calls itself pid %d\n%s", tn.name, pid, tn.diag())
	return 0
}
