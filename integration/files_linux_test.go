package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/agent"
	"github.com/hostward/ward/api"
	"github.com/hostward/ward/internal/cgtest"
)

// TestFileLimitRaised: an agent started under a hard limit of 4,096 open
// files — far short of its 1,000-uid pool at FilesPerInstance each — raises
// its limit at start (or, not allowed to, says how many instances fit), and
// each running, sampled instance costs it no more descriptors than
// FilesPerInstance.
func TestFileLimitRaised(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("prlimit (util-linux) not installed")
	}
	h := newHost(t)
	if err := os.WriteFile(h.cfgPath, []byte(yamlOf(h.cfg)+"report: {interval: 200ms}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.wrap = []string{prlimit, "--nofile=1024:4096", "--"}
	h.start("")
	pid := h.agent.Process.Pid
	soft, hard := openFilesLimit(t, pid)
	const n = 10
	before := countFDs(t, pid)
	for i := 0; i < n; i++ {
		if _, err := h.client.Start(context.Background(), api.Request{Name: "fds", Index: i, Command: []string{"sleep", "1000"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Let the sampler open its files: its first sample of an instance does,
	// at the 200 ms interval. The count is taken once it has held still
	// over several intervals.
	time.Sleep(time.Second)
	deadline := time.Now().Add(cgtest.Timeout(10 * time.Second))
	for last, still := -1, 0; still < 3; {
		c := countFDs(t, pid)
		if c == last {
			still++
		} else {
			last, still = c, 0
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's descriptor count never settled (%d)", c)
		}
		time.Sleep(300 * time.Millisecond)
	}
	per := float64(countFDs(t, pid)-before) / n
	// Below 5 (the pidfd and the sampler's four) would mean the count
	// missed what it is here to bound.
	if per > agent.FilesPerInstance || per < 5 {
		t.Fatalf("%.1f descriptors per running instance, FilesPerInstance is %d", per, agent.FilesPerInstance)
	}
	t.Logf("limit %d/%d; %.1f descriptors per instance", soft, hard, per)
	// The agent's output is only read once it has exited.
	h.kill()
	pool := uint64(h.cfg.Users.UIDMax - h.cfg.Users.UIDMin + 1)
	need := pool * agent.FilesPerInstance
	if hasCapSysResource(t) {
		if soft < need || hard < need {
			t.Fatalf("agent's open files limit %d/%d, want at least %d for a pool of %d\n%s", soft, hard, need, pool, h.log)
		}
	} else {
		// Only the soft limit can move: all the way, and the operator is
		// told how many instances fit.
		if soft != 4096 || hard != 4096 || !strings.Contains(h.log.String(), "instances_that_fit=") {
			t.Fatalf("without CAP_SYS_RESOURCE: limit %d/%d, want 4096/4096 and a warning\n%s", soft, hard, h.log)
		}
		t.Log("no CAP_SYS_RESOURCE here: the hard limit cannot be raised, only the warning is checked")
	}
}

// hasCapSysResource tells whether this process may raise hard limits (a
// root in a container may not).
func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// openFilesLimit reads the soft and hard RLIMIT_NOFILE of pid.
func openFilesLimit(t *testing.T, pid int) (soft, hard uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			soft, _ = strconv.ParseUint(f[0], 10, 64)
			hard, _ = strconv.ParseUint(f[1], 10, 64)
			return soft, hard
		}
	}
	t.Fatalf("no open files limit in /proc/%d/limits", pid)
	return 0, 0
}

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
