package reporter

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/testroot"
)

// roleEnv makes the test binary a helper process: it says "waiting" once
// its runtime is up, waits for a line on stdin (sent once it is in its
// cgroup, so that what it does from then on, and only that, is charged
// there), does its job, says "ready" and then stays until stdin closes or
// it is killed.
const roleEnv = "REPORTER_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(helper(role))
	}
	// No goroutine may outlive the package's tests (see leak_other_test.go
	// for the other systems).
	goleak.VerifyTestMain(m)
}

func helper(role string) int {
	if strings.HasPrefix(role, "agent-") {
		return agentProcess(role)
	}
	fmt.Println("waiting")
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 2
	}
	switch role {
	case "burn":
		runtime.GOMAXPROCS(1)
		fmt.Println("ready")
		for {
		}
	case "hold":
		n, _ := strconv.Atoi(os.Getenv("REPORTER_TEST_BYTES"))
		// MAP_POPULATE: the kernel faults every page in, writable, so
		// they are charged now; touching them from Go instead would, in a
		// -race binary, also charge the race detector's shadow pages.
		if _, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_POPULATE); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "write":
		if err := writeDirect(os.Getenv("REPORTER_TEST_FILE"), 20<<20); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	case "sleep":
	default:
		return 2
	}
	fmt.Println("ready")
	io.Copy(io.Discard, in)
	return 0
}

// writeDirect writes n bytes to a new file with O_DIRECT when the
// filesystem takes it (else through the page cache), then fsyncs, so that
// every byte reaches the block layer from this process.
func writeDirect(path string, n int) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if err == unix.EINVAL {
		fd, err = unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// O_DIRECT needs an aligned buffer: mmap gives a page-aligned one.
	buf, err := unix.Mmap(-1, 0, 1<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return err
	}
	defer unix.Munmap(buf)
	for i := range buf {
		buf[i] = byte(i)
	}
	for off := 0; off < n; off += len(buf) {
		if _, err := unix.Write(fd, buf); err != nil {
			return err
		}
	}
	return unix.Fsync(fd)
}

// testGroups makes groups with package cgroup, under a random parent of
// their own, on whichever cgroup version the host runs, and removes them
// and the parent when the test ends.
type testGroups struct {
	t testing.TB
	m *cgroup.Manager
}

func newTestGroups(t testing.TB) *testGroups {
	t.Helper()
	testroot.Require(t)
	parent := fmt.Sprintf("/ward-reporter-test-%08x", rand.Uint32())
	m, err := cgroup.NewManager(cgroup.Config{Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		names, _ := m.List()
		for _, n := range names {
			if g, err := m.Load(n); err == nil {
				g.KillAll()
				if err := g.Delete(); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
		for _, d := range parentDirs(m) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				t.Errorf("cleanup: %v", err)
			}
		}
	})
	return &testGroups{t: t, m: m}
}

// maxCPUWeight gives the test parent the largest CPU weight, so that on a
// machine shared with other work a process in it gets a whole core when it
// wants one. Only the parent needs it: that is where the tree competes
// with the host's other groups and tasks.
func (tg *testGroups) maxCPUWeight() {
	tg.t.Helper()
	file, v := filepath.Join("/sys/fs/cgroup/cpu", tg.m.Parent(), "cpu.shares"), "262144"
	if tg.m.Mode() == cgroup.V2 {
		file, v = filepath.Join("/sys/fs/cgroup", tg.m.Parent(), "cpu.weight"), "10000"
	}
	if err := os.WriteFile(file, []byte(v), 0); err != nil {
		tg.t.Fatal(err)
	}
}

func parentDirs(m *cgroup.Manager) []string {
	if m.Mode() == cgroup.V2 {
		return []string{filepath.Join("/sys/fs/cgroup", m.Parent())}
	}
	var dirs []string
	for _, c := range cgroup.V1Controllers() {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", c, m.Parent()))
	}
	return dirs
}

func (tg *testGroups) create(name string, memLimit int64) *cgroup.Group {
	tg.t.Helper()
	res := &specs.LinuxResources{}
	if memLimit > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &memLimit}
	}
	return tg.createRes(name, res)
}

func (tg *testGroups) createRes(name string, res *specs.LinuxResources) *cgroup.Group {
	tg.t.Helper()
	g, err := tg.m.Create(name, res)
	if err != nil {
		tg.t.Fatal(err)
	}
	return g
}

func (tg *testGroups) sampler() *Sampler {
	tg.t.Helper()
	s, err := NewSampler(SamplerOptions{Mode: tg.m.Mode(), Weights: defaultWeights})
	if err != nil {
		tg.t.Fatal(err)
	}
	tg.t.Cleanup(func() { s.Close() })
	return s
}

// helperProc is a running helper process.
type helperProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

// start runs the test binary as a helper in role inside g and waits until
// it has done its job. It is killed and reaped when the test ends.
func start(t *testing.T, g *cgroup.Group, role string, env ...string) *helperProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, roleEnv+"="+role)...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	p := &helperProc{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
	// Move it only once its runtime has started: memory that start-up
	// allocates after the move would be charged to the group, by an amount
	// that depends on timing (several MiB in a -race binary).
	if line, err := p.out.ReadString('\n'); err != nil || line != "waiting\n" {
		t.Fatalf("helper %d: %q, %v", cmd.Process.Pid, line, err)
	}
	if err := g.AddProc(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	return p
}

// release lets the helper go and waits for its "ready".
func (p *helperProc) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	line, err := p.out.ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper %d: %q, %v", p.cmd.Process.Pid, line, err)
	}
}

// procCPU is a process's CPU time (all threads) from /proc, in seconds.
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the parenthesised command; utime and stime are the
	// 14th and 15th fields of the whole line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ is 100 on Linux
}

func inst(id string, g *cgroup.Group, memLimit int64) Instance {
	return Instance{ID: id, Name: id, Dirs: g.Dirs(), MemoryLimit: memLimit, CPUShares: 1024}
}

func only(t *testing.T, s *Sample, id string) *InstanceSample {
	t.Helper()
	is, ok := s.Instance(id)
	if !ok || len(s.Instances) != 1 {
		t.Fatalf("sample has %d instances, want just %s", len(s.Instances), id)
	}
	return is
}
