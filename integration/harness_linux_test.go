package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/testagent"
	"github.com/hostward/ward/localapi"
	"github.com/hostward/ward/nsinit"
)

// Pool range of this package's tests (other packages use other ranges).
const (
	uidMin = 27000
	uidMax = uidMin + 999 // testagent.Config leases [uidMin, uidMin+999]
)

var (
	wardBin   string
	tenantBin string // the load program instances run in the containment tests
)

// binaryEnv names a prebuilt ward binary to test instead of building one:
// the cgroup v2 stage's VM has no Go toolchain.
const binaryEnv = "WARD_TEST_BINARY"

// tenantEnv names a prebuilt tenant program beside it (the containment
// tests skip without one).
const tenantEnv = "WARD_TEST_TENANT"

func TestMain(m *testing.M) {
	nsinit.ServeSelf()
	if bin := os.Getenv(binaryEnv); bin != "" {
		wardBin, tenantBin = bin, os.Getenv(tenantEnv)
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "ward-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Instances run the tenant as pool users: its directory must be
	// theirs to search, and the binary theirs to execute.
	// Not under /tmp, which a namespaced instance has a private one of.
	tenantDir, err := os.MkdirTemp("/var/lib", "ward-tenant-")
	if err == nil {
		err = os.Chmod(tenantDir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	wardBin = filepath.Join(dir, "ward")
	tenantBin = filepath.Join(tenantDir, "tenant")
	code := 1
	// The agent finds ward-init beside its binary.
	if build(wardBin, "github.com/hostward/ward/cmd/ward") && build(filepath.Join(dir, nsinit.Name), "github.com/hostward/ward/cmd/ward-init") && build(tenantBin, "github.com/hostward/ward/integration/tenant") {
		if err := os.Chmod(tenantBin, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
		} else {
			code = m.Run()
		}
	}
	os.RemoveAll(dir)
	os.RemoveAll(tenantDir)
	os.Exit(code)
}

// build builds pkg into out. Never with -race, even when the tests are: the
// tenant runs under pids and memory limits that the race runtime's extra
// threads and shadow memory would distort.
func build(out, pkg string) bool {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "building %s: %v\n", pkg, err)
		return false
	}
	return true
}

// host is one test's slice of the machine: a state dir, a cgroup parent, a
// socket, a uid and port range, and the agent process running over them.
type host struct {
	t       *testing.T
	cfg     *config.Config
	cfgPath string
	agent   *exec.Cmd
	exited  chan struct{}
	log     *bytes.Buffer
	client  *localapi.Client
	// wrap, when set, runs the agent through this command line (for
	// example prlimit and its flags, ending in "--").
	wrap []string
}

func newHost(t *testing.T) *host {
	t.Helper()
	cfg := testagent.Config(t, uidMin)
	// No bus unless a test starts one: the agent must run without it.
	cfg.NATS.Servers = []string{"nats://127.0.0.1:1"}
	h := &host{t: t, cfg: cfg, cfgPath: filepath.Join(filepath.Dir(cfg.StateDir), "ward.yaml"), client: localapi.NewClient(cfg.Socket)}
	if err := os.WriteFile(h.cfgPath, []byte(yamlOf(cfg)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Runs before testagent's cleanup (which removes the cgroup parent and
	// the state): the agent goes first.
	t.Cleanup(h.kill)
	return h
}

func yamlOf(c *config.Config) string {
	return fmt.Sprintf(`host_id: %s
state_dir: %s
socket: %s
cgroup: {parent: %s}
users: {uid_min: %d, uid_max: %d, group: ward, gid: %d}
ports: {min: %d, max: %d}
stop: {timeout: %s}
reconcile: {interval: %s}
nats: {servers: [%s]}
isolation: {mode: %s, nofile: %d, tmp_bytes: %d}
`, c.HostID, c.StateDir, c.Socket, c.Cgroup.Parent, c.Users.UIDMin, c.Users.UIDMax, c.Users.GID,
		c.Ports.Min, c.Ports.Max, c.Stop.Timeout, c.Reconcile.Interval, strings.Join(c.NATS.Servers, ", "),
		c.Isolation.Mode, c.Isolation.NOFILE, c.Isolation.TmpBytes)
}

// command is the agent armed with crashpoint ("" for none), its output
// going to a fresh h.log; ctx kills it.
func (h *host) command(ctx context.Context, crashpoint string) *exec.Cmd {
	h.log = new(bytes.Buffer)
	args := append(append([]string(nil), h.wrap...), wardBin, "agent", "--config", h.cfgPath)
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = h.log, h.log // written by exec's copier, read after exit
	cmd.Env = append(os.Environ(), "WARD_CRASHPOINT="+crashpoint)
	return cmd
}

// start runs the agent with the given crash point ("" for none) and waits
// until it answers.
func (h *host) start(crashpoint string) {
	h.t.Helper()
	cmd := h.command(context.Background(), crashpoint)
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.agent = cmd
	exited := make(chan struct{})
	h.exited = exited
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(cgtest.Timeout(20 * time.Second))
	for {
		ctx, cancel := context.WithTimeout(context.Background(), cgtest.Timeout(time.Second))
		_, err := h.client.List(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-exited:
			h.t.Fatalf("agent exited during startup: %s", h.log)
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("agent not answering: %v\n%s", err, h.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kill SIGKILLs the agent, as an OOM kill or a crash would.
func (h *host) kill() {
	if h.agent == nil || h.agent.Process == nil {
		return
	}
	h.agent.Process.Signal(syscall.SIGKILL)
	<-h.exited
	h.agent = nil
}

// waitDead waits for an agent that is expected to kill itself.
func (h *host) waitDead() {
	h.t.Helper()
	select {
	case <-h.exited:
	case <-time.After(cgtest.Timeout(10 * time.Second)):
		h.t.Fatal("agent did not crash at its crash point")
	}
	h.agent = nil
}

func (h *host) list() []api.Instance {
	h.t.Helper()
	l, err := h.client.List(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return l.Instances
}

func (h *host) run(args ...string) (string, string, int) {
	cmd := exec.Command(wardBin, args...)
	cmd.Env = append(os.Environ(), "WARD_SOCKET="+h.cfg.Socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatal(err)
	}
	return out.String(), errb.String(), code
}
