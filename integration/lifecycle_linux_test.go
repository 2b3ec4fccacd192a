package integration

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/internal/cgtest"
	"github.com/hostward/ward/internal/leakcheck"
)

func readTrim(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(cgtest.Timeout(10 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestInstanceLifecycleThroughCLI(t *testing.T) {
	h := newHost(t)
	h.start("")

	out, errOut, code := h.run("run", "--name", "shop", "--index", "2", "--port", "auto",
		"--memory", "64M", "--swap", "16M", "--cpu-shares", "512", "--cpus", "0.5", "--pids", "64",
		"--", "sh", "-c", "cat /proc/self/cgroup; id -u; echo port=$PORT; sleep 1000")
	if code != 0 {
		t.Fatalf("ward run: %d %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	inst, err := h.client.Info(context.Background(), api.InfoRequest{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != api.StateRunning || inst.UID == nil || inst.Port == nil || inst.PID == nil {
		t.Fatalf("instance %+v", inst)
	}
	group := h.cfg.Cgroup.Parent + "/shop-2-" + id
	if inst.Cgroup != group {
		t.Fatalf("cgroup %q, want %q", inst.Cgroup, group)
	}

	// What the instance saw from its first instruction on.
	logf := filepath.Join(inst.Dir, "logs", "stdout.log")
	waitFor(t, "instance output", func() bool {
		b, _ := os.ReadFile(logf)
		return strings.Contains(string(b), "port=")
	})
	seen := readTrim(t, logf)
	// Its own cgroup namespace is rooted at its group: it saw itself at
	// the root of every hierarchy it was placed in, and the host sees the
	// group.
	host, err := os.ReadFile("/proc/" + strconv.Itoa(*inst.PID) + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	v2 := cgtest.Mode() == cgroup.V2
	if v2 {
		if !strings.HasPrefix(seen, "0::/\n") || !strings.HasPrefix(string(host), "0::"+group+"\n") {
			t.Errorf("instance not in its v2 group: it saw\n%s\nthe host sees\n%s", seen, host)
		}
	} else {
		for _, c := range leakcheck.V1Controllers {
			if !strings.Contains(seen, ":"+c+":/\n") || !strings.Contains(string(host), ":"+c+":"+group+"\n") {
				t.Errorf("instance not in its %s group: it saw\n%s\nthe host sees\n%s", c, seen, host)
			}
		}
	}
	uidLine := strconv.Itoa(*inst.UID)
	if !strings.Contains(seen, "\n"+uidLine+"\n") || *inst.UID < uidMin || *inst.UID > uidMax {
		t.Errorf("instance uid: want pool uid %d in output:\n%s", *inst.UID, seen)
	}
	if !strings.Contains(seen, "port="+strconv.Itoa(*inst.Port)) {
		t.Errorf("PORT not given: %s", seen)
	}
	st, err := os.Stat(inst.Dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("instance dir mode: %v %v", st.Mode(), err)
	}

	// The kernel holds the limits: keys are {v1 controller, v1 file, v2 file}.
	cg := func(ctrl, file string) string {
		if v2 {
			return readTrim(t, filepath.Join(cgtest.Root, group, file))
		}
		return readTrim(t, filepath.Join(cgtest.Root, ctrl, group, file))
	}
	check := func(stage string, want map[[3]string]string) {
		t.Helper()
		for k, v := range want {
			file := k[1]
			if v2 {
				file = k[2]
			}
			if file == "" {
				continue
			}
			if got := cg(k[0], file); got != v {
				t.Errorf("%s: %s = %s, want %s", stage, file, got, v)
			}
		}
	}
	// One value where both versions agree, else the v1 value under the
	// v1 key and the v2 value (with "" for the v1 file) under its own.
	check("run", map[[3]string]string{
		{"memory", "memory.limit_in_bytes", "memory.max"}: strconv.Itoa(64 << 20),
		{"memory", "memory.memsw.limit_in_bytes", ""}:     strconv.Itoa(80 << 20),
		{"memory", "", "memory.swap.max"}:                 strconv.Itoa(16 << 20),
		{"cpu", "cpu.shares", ""}:                         "512",
		{"cpu", "", "cpu.weight"}:                         "59", // SharesToWeight(512), spelled out
		{"cpu", "cpu.cfs_quota_us", ""}:                   "50000",
		{"cpu", "cpu.cfs_period_us", ""}:                  "100000",
		{"cpu", "", "cpu.max"}:                            "50000 100000",
		{"pids", "pids.max", "pids.max"}:                  "64",
	})

	// Live change, down and up across memsw.
	if _, e, code := h.run("limit", id, "--memory", "200M", "--swap", "0", "--cpus", "1.5", "--pids", "100"); code != 0 {
		t.Fatalf("ward limit: %d %s", code, e)
	}
	check("limit", map[[3]string]string{
		{"memory", "memory.limit_in_bytes", "memory.max"}: strconv.Itoa(200 << 20),
		{"memory", "memory.memsw.limit_in_bytes", ""}:     strconv.Itoa(200 << 20),
		{"memory", "", "memory.swap.max"}:                 "0",
		{"cpu", "cpu.cfs_quota_us", ""}:                   "150000",
		{"cpu", "", "cpu.max"}:                            "150000 100000",
		{"cpu", "", "cpu.weight"}:                         "59",
		{"pids", "pids.max", "pids.max"}:                  "100",
	})
	if _, e, code := h.run("limit", id, "--memory", "32M"); code != 0 {
		t.Fatalf("ward limit down: %d %s", code, e)
	}
	check("limit down", map[[3]string]string{
		{"memory", "memory.limit_in_bytes", "memory.max"}: strconv.Itoa(32 << 20),
	})

	// ps shows it.
	if out, _, code := h.run("ps"); code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "running") {
		t.Fatalf("ward ps: %d\n%s", code, out)
	}

	// Stop: nothing may remain.
	if out, e, code := h.run("stop", id, "--timeout", "2s"); code != 0 || !strings.Contains(out, "stopped") {
		t.Fatalf("ward stop: %d %s %s", code, out, e)
	}
	for _, dir := range cgtest.Dirs(group) {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("group %s survives stop", dir)
		}
	}
	if _, err := os.Stat(inst.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Error("instance dir survives stop")
	}
	if err := syscallKill0(*inst.PID); err == nil {
		t.Errorf("pid %d alive after stop", *inst.PID)
	}
	final, _ := h.client.Info(context.Background(), api.InfoRequest{ID: id})
	if final.State != api.StateStopped || final.PID != nil || final.UID != nil || final.Port != nil {
		t.Fatalf("stopped instance still holds something: %+v", final)
	}
	leakcheck.Check(t, h.cfg, nil)
	// The port is free again: an explicit claim of it succeeds.
	out, e, code := h.run("run", "--name", "again", "--port", strconv.Itoa(*inst.Port), "--", "sleep", "1000")
	if code != 0 {
		t.Fatalf("port %d not released: %s", *inst.Port, e)
	}
	if _, _, code := h.run("stop", strings.TrimSpace(out)); code != 0 {
		t.Fatal("stop")
	}
	leakcheck.Check(t, h.cfg, nil)
}

func TestCLIExitCodes(t *testing.T) {
	h := newHost(t)
	h.start("")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"ps"}, 0},
		{[]string{"version"}, 0},
		{[]string{"bogus"}, 2},
		{[]string{}, 2},
		{[]string{"run", "--name", "x"}, 2},
		{[]string{"run"}, 2},
		{[]string{"run", "--memory", "lots", "--name", "x", "--", "true"}, 2},
		{[]string{"stop"}, 2},
		{[]string{"stop", "no-such-id"}, 1},
		{[]string{"info", "no-such-id"}, 1},
		{[]string{"run", "--name", "a/b", "--", "true"}, 1},
		{[]string{"run", "--name", "x", "--", "/nonexistent/prog"}, 1},
		{[]string{"limit", "no-such-id", "--pids", "5"}, 1},
	} {
		_, e, code := h.run(c.args...)
		if code != c.code {
			t.Errorf("ward %v: exit %d, want %d (%s)", c.args, code, c.code, e)
		}
		if c.code == 1 && !strings.Contains(e, "(") {
			t.Errorf("ward %v: refusal without the agent's message: %q", c.args, e)
		}
	}
	h.kill()
	if _, e, code := h.run("ps"); code != 1 || !strings.Contains(e, "cannot reach the agent") {
		t.Errorf("ps with no agent: %d %q", code, e)
	}
}
