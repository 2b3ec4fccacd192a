package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/localapi"
)

// chaosBus is a NATS server with JetStream that can be killed and brought
// back on the same port, with the same store: the agent must reconnect to
// it, and the events stream survives it as a real deployment's would.
type chaosBus struct {
	port  int
	store string

	mu      sync.Mutex
	ns      *server.Server // nil while down
	restart *time.Timer    // pending return after a kill
	kills   int
}

func newChaosBus(t *testing.T) *chaosBus {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &chaosBus{port: l.Addr().(*net.TCPAddr).Port, store: t.TempDir()}
	l.Close()
	if err := b.up(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.down)
	return b
}

func (b *chaosBus) url() string { return "nats://127.0.0.1:" + strconv.Itoa(b.port) }

// up starts the server if it is down.
func (b *chaosBus) up() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.upLocked()
}

func (b *chaosBus) upLocked() error {
	if b.restart != nil {
		b.restart.Stop()
		b.restart = nil
	}
	if b.ns != nil {
		return nil
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: b.port, NoLog: true, NoSigs: true, JetStream: true, StoreDir: b.store})
	if err != nil {
		return err
	}
	go ns.Start()
	if !ns.ReadyForConnections(cgtest.Timeout(10 * time.Second)) {
		ns.Shutdown()
		return errors.New("NATS server not ready")
	}
	b.ns = ns
	return nil
}

// kill shuts the server down at once and brings it back after pause. A
// bus already down is brought back now instead.
func (b *chaosBus) kill(pause time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ns == nil {
		return b.upLocked()
	}
	b.kills++
	b.ns.Shutdown()
	b.ns = nil
	b.restart = time.AfterFunc(pause, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.restart = nil
		if b.ns == nil {
			// A failure here shows as an outbox that does not drain.
			b.upLocked()
		}
	})
	return nil
}

func (b *chaosBus) isUp() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ns != nil
}

func (b *chaosBus) down() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.restart != nil {
		b.restart.Stop()
		b.restart = nil
	}
	if b.ns != nil {
		b.ns.Shutdown()
		b.ns = nil
	}
}

// errDiedStarting: the agent exited before it answered — a crash point in
// the releases that reconcile finishes at startup.
var errDiedStarting = errors.New("agent died during startup")

// chaosAgent runs the real ward binary over one configuration, again and
// again: started (optionally with a crash point armed), SIGKILLed, started.
type chaosAgent struct {
	t       *testing.T
	cfg     *config.Config
	cfgPath string
	logDir  string
	client  *localapi.Client
	reaper  *reaper

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	gen     int
	armed   string // crash point of the running agent
	killed  bool   // the test SIGKILLed it (else an armed agent died by its crash point)
	logPath string
}

func newChaosAgent(t *testing.T, cfg *config.Config, extraYAML string, r *reaper) *chaosAgent {
	t.Helper()
	dir := t.TempDir()
	a := &chaosAgent{t: t, cfg: cfg, cfgPath: filepath.Join(dir, "ward.yaml"), logDir: dir, client: localapi.NewClient(cfg.Socket), reaper: r}
	if err := os.WriteFile(a.cfgPath, []byte(yamlOf(cfg)+extraYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.kill)
	return a
}

// start runs a new agent with crashpoint armed ("" for none) and waits
// until it answers on its socket, which it does only after reconciling.
func (a *chaosAgent) start(crashpoint string) error {
	a.mu.Lock()
	a.gen++
	a.logPath = filepath.Join(a.logDir, fmt.Sprintf("agent-%03d.log", a.gen))
	logf, err := os.Create(a.logPath)
	if err != nil {
		a.mu.Unlock()
		return err
	}
	cmd := exec.Command(wardBin, "agent", "--config", a.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "WARD_CRASHPOINT="+crashpoint)
	if err := a.reaper.start(cmd); err != nil {
		logf.Close()
		a.mu.Unlock()
		return err
	}
	logf.Close()
	exited := make(chan struct{})
	a.cmd, a.exited, a.armed, a.killed = cmd, exited, crashpoint, false
	a.mu.Unlock()
	go func() {
		cmd.Wait()
		a.reaper.forget(cmd.Process.Pid)
		close(exited)
	}()

	deadline := time.Now().Add(cgtest.Timeout(30 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(2*time.Second))
		_, err := a.client.List(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%w (crash point %q): %s", errDiedStarting, crashpoint, a.logTail(2000))
		default:
		}
		if time.Now().After(deadline) {
			a.kill()
			return fmt.Errorf("agent not answering: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill SIGKILLs the running agent, if any, and waits for it to be gone.
func (a *chaosAgent) kill() {
	a.mu.Lock()
	cmd, exited := a.cmd, a.exited
	if cmd != nil && a.running() {
		a.killed = true
	}
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
}

// killGen SIGKILLs the agent only if it is still generation gen: a timer
// set for one agent must not kill the next.
func (a *chaosAgent) killGen(gen int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gen != gen || a.cmd == nil || !a.running() {
		return
	}
	a.killed = true
	a.cmd.Process.Signal(syscall.SIGKILL)
}

func (a *chaosAgent) generation() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen
}

// alive reports whether an agent runs.
func (a *chaosAgent) alive() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.running()
}

// running: caller holds a.mu.
func (a *chaosAgent) running() bool {
	if a.exited == nil {
		return false
	}
	select {
	case <-a.exited:
		return false
	default:
		return true
	}
}

// done is closed when the current agent has exited.
func (a *chaosAgent) done() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exited
}

// armedPoint is the crash point armed in the current agent ("" for none).
func (a *chaosAgent) armedPoint() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.armed
}

// crashedAt returns the crash point the current agent died at: it was
// armed, it is dead, and the test did not kill it.
func (a *chaosAgent) crashedAt() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.exited == nil || a.running() || a.killed {
		return ""
	}
	return a.armed
}

// logTail returns the end of the current agent's log, for diagnostics.
func (a *chaosAgent) logTail(n int) string {
	a.mu.Lock()
	p := a.logPath
	a.mu.Unlock()
	b, _ := os.ReadFile(p)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(bytes.TrimSpace(b))
}

// reaper makes the test process the subreaper of everything it starts and
// reaps the orphans that come to it: instances outlive a SIGKILLed agent,
// and this host's PID 1 never reaps them. A production init reaps them; so
// does this, keeping the host free of zombies the test made. Processes the
// test waits for itself (the agents) are left alone.
type reaper struct {
	mu   sync.Mutex
	keep map[int]bool
	stop chan struct{}
	done chan struct{}
}

func startReaper(t *testing.T) *reaper {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	r := &reaper{keep: map[int]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-tick.C:
				r.reap()
			}
		}
	}()
	t.Cleanup(func() {
		close(r.stop)
		<-r.done
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		// Whatever the other cleanups killed last is ours to reap still.
		deadline := time.Now().Add(5 * time.Second)
		for {
			r.reap()
			if r.children() == 0 || time.Now().After(deadline) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return r
}

// start starts cmd, recording its pid before the reaper can see it exit.
func (r *reaper) start(cmd *exec.Cmd) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	r.keep[cmd.Process.Pid] = true
	return nil
}

func (r *reaper) forget(pid int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.keep, pid)
}

// reap waits for every zombie child not kept, returning how many.
func (r *reaper) reap() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range childrenOf(os.Getpid()) {
		if c.zombie && !r.keep[c.pid] {
			if wpid, err := unix.Wait4(c.pid, nil, unix.WNOHANG, nil); err == nil && wpid == c.pid {
				n++
			}
		}
	}
	return n
}

// children counts the live children not kept (the cleanup waits for
// killed ones to die).
func (r *reaper) children() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range childrenOf(os.Getpid()) {
		if !r.keep[c.pid] {
			n++
		}
	}
	return n
}

type child struct {
	pid    int
	zombie bool
}

// childrenOf lists the processes whose parent is ppid.
func childrenOf(ppid int) []child {
	var out []child
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readProcStat(pid)
		if err != nil || st.ppid != ppid {
			continue
		}
		out = append(out, child{pid: pid, zombie: st.state == "Z"})
	}
	return out
}

// procStat is what the tests read from /proc/<pid>/stat.
type procStat struct {
	state     string
	ppid      int
	startTime uint64
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name may hold spaces and parentheses: fields are counted
	// after the last ')'. Field 3 (state) follows it; ppid is 4, starttime 22.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return procStat{state: f[0], ppid: ppid, startTime: start}, nil
}
