package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
)

// escapeResult is what `tenant escape` reports.
type escapeResult struct {
	UID       int               `json:"uid"`
	PID       int               `json:"pid"`
	Attempts  map[string]string `json:"attempts"`
	Hostname  string            `json:"hostname"`
	Processes int               `json:"processes"`
	SuidEUID  *int              `json:"suid_euid"`
	OOMScore  string            `json:"oom_score_adj"`
	NOFILE    uint64            `json:"nofile"`
	Caps      string            `json:"cap_eff"`
}

// suidID is a set-uid-root copy of id(1) the instances can run, as any
// set-uid program on a host is: a way to root unless the instance's mounts
// are nosuid or no_new_privs is set. honoured says whether the host's own
// mount of it honours set-uid (the VM stage's /var/lib is nosuid).
func suidID(t *testing.T) (path string, honoured bool) {
	t.Helper()
	dir, err := os.MkdirTemp("/var/lib", "ward-suid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	src, err := os.Open("/usr/bin/id")
	if err != nil {
		t.Skip("no /usr/bin/id")
	}
	defer src.Close()
	p := filepath.Join(dir, "id")
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	if err := os.Chmod(p, 0o755|os.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return p, st.Flags&unix.ST_NOSUID == 0
}

// TestContainEscapes tries the ways out of an instance from inside one, in
// both isolation modes, next to a neighbour. In namespaces mode every one
// is refused; uid mode refuses what the kernel's permission checks refuse
// any unprivileged user and lets the rest through — the list README gives
// of what uid mode does not protect against — which is checked here too,
// so that a change in either is noticed.
func TestContainEscapes(t *testing.T) {
	for _, mode := range config.IsolationModes {
		t.Run(string(mode), func(t *testing.T) { testContainEscapes(t, mode) })
	}
}

func testContainEscapes(t *testing.T, mode config.IsolationMode) {
	ty := newTenancyWith(t, func(c *config.Config) {
		c.Isolation.Mode = mode
		c.Isolation.NOFILE = 2048
	})
	suid, suidHonoured := suidID(t)
	neighbour := ty.start("neighbour", api.Limits{}, "hog", "-mb", "4")
	neighbour.result("touched", nil)
	records := filepath.Join(ty.cfg.StateDir, "records")
	attacker := ty.start("attacker", api.Limits{}, "escape", "-pid", strconv.Itoa(*neighbour.inst.PID), "-suid", suid,
		"-path", records, "-path", ty.cfg.Socket, "-path", neighbour.inst.Dir, "-stay")
	var r escapeResult
	attacker.result(phaseDone, &r)
	t.Logf("%s mode: %+v", mode, r)

	want := map[string]string{
		// refused to any unprivileged user, in both modes
		"mount_tmpfs": "EPERM", "umount_proc": "EPERM", "chroot": "EPERM", "sethostname": "EPERM",
		"mknod": "EPERM",
	}
	ns := mode == config.IsolationNamespaces
	if ns {
		for k, v := range map[string]string{
			"clone_user": "EPERM", "keyctl": "EPERM", "perf_event_open": "EPERM", "io_uring_setup": "EPERM", "bpf": "EPERM",
			"write_etc": "EROFS", "write_usr": "EROFS",
			"neighbour_kill0": "ESRCH", "neighbour_proc": "ENOENT", "neighbour_ptrace": "ESRCH",
			"open " + records: "ENOENT", "open " + ty.cfg.Socket: "ENOENT", "open " + neighbour.inst.Dir: "ENOENT",
			"suid_exec": "",
		} {
			want[k] = v
		}
	} else {
		for k, v := range map[string]string{
			"write_etc": "EACCES", "write_usr": "EACCES",
			"neighbour_kill0": "EPERM", "neighbour_proc": "", "neighbour_ptrace": "EPERM",
			"open " + records: "EACCES", "open " + neighbour.inst.Dir: "EACCES",
			// What uid mode lets through (README): a user namespace of
			// its own, the host's keyrings, perf and io_uring as far as
			// the host's sysctls allow, and every set-uid program.
			"clone_user": "", "keyctl": "", "suid_exec": "",
		} {
			want[k] = v
		}
	}
	for k, v := range want {
		got, ok := r.Attempts[k]
		if !ok {
			t.Errorf("%s: not attempted", k)
		} else if got != v {
			t.Errorf("%s: got %q, want %q", k, got, v)
		}
	}
	if r.SuidEUID == nil {
		t.Fatalf("the set-uid program reported no euid")
	}
	if ns {
		if *r.SuidEUID != r.UID {
			t.Errorf("set-uid program ran as euid %d, want the instance's %d", *r.SuidEUID, r.UID)
		}
		if r.PID != 1 || r.Processes > 3 {
			t.Errorf("pid %d, %d processes seen: want pid 1 and only its own", r.PID, r.Processes)
		}
		if r.Hostname != "attacker-0" {
			t.Errorf("hostname %q, want attacker-0", r.Hostname)
		}
		if r.Caps != "0000000000000000" {
			t.Errorf("CapEff %s", r.Caps)
		}
	} else if suidHonoured && *r.SuidEUID != 0 {
		t.Errorf("uid mode: the set-uid program ran as euid %d: the README says it runs as root", *r.SuidEUID)
	}
	if r.OOMScore != "0" || r.NOFILE != 2048 {
		t.Errorf("oom_score_adj %q, RLIMIT_NOFILE %d: want 0 and 2048", r.OOMScore, r.NOFILE)
	}
	neighbour.mustRun()
	attacker.mustRun()
	ty.answers()
}

// TestContainSharedTmpAndIPC: one instance leaves a world-writable file in
// /tmp and /dev/shm and a world-readable SysV segment; in uid mode a
// neighbour finds and writes them (the shared /tmp a neighbour's secrets
// can be planted in), in namespaces mode it finds nothing, and nothing of
// them is left on the host once the planter is gone.
func TestContainSharedTmpAndIPC(t *testing.T) {
	for _, mode := range config.IsolationModes {
		t.Run(string(mode), func(t *testing.T) { testContainSharedTmpAndIPC(t, mode) })
	}
}

func testContainSharedTmpAndIPC(t *testing.T, mode config.IsolationMode) {
	ty := newTenancyWith(t, func(c *config.Config) { c.Isolation.Mode = mode })
	tag := fmt.Sprintf("ward-plant-%d", os.Getpid())
	before := shmOf(t)
	// What the planter leaves on the host (uid mode) is removed with the
	// test, whatever the agent did.
	t.Cleanup(func() {
		for id := range shmOf(t) {
			if !before[id] {
				exec.Command("ipcrm", "-m", id).Run()
			}
		}
	})
	planter := ty.start("planter", api.Limits{}, "exec", "-stay", "--", "/bin/sh", "-c",
		"umask 0; echo planted > /tmp/"+tag+" && echo planted > /dev/shm/"+tag+" && ipcmk -M 4096 -p 0666 >/dev/null")
	planter.result(phaseDone, nil)
	finder := ty.start("finder", api.Limits{}, "exec", "-stay", "--", "/bin/sh", "-c",
		"echo mine >> /tmp/"+tag+" && echo mine >> /dev/shm/"+tag+" && ipcs -m -c | grep -q "+strconv.Itoa(*planter.inst.UID))
	var fr struct {
		Code *int `json:"exit_code"`
	}
	finder.result(phaseDone, &fr)
	found := fr.Code != nil && *fr.Code == 0
	if mode == config.IsolationNamespaces && found {
		t.Errorf("namespaces: the finder found and wrote the planter's /tmp, /dev/shm files and SysV segment")
	}
	if mode == config.IsolationUID && !found {
		t.Errorf("uid mode: the finder did not find the planter's files (exit %v): the attack this test shows is gone", fr.Code)
	}
	zero := int64(0)
	if _, err := ty.a.Stop(context.Background(), api.StopRequest{ID: planter.inst.ID, TimeoutMS: &zero}); err != nil {
		t.Fatal(err)
	}
	if mode == config.IsolationNamespaces {
		for _, p := range []string{"/tmp/" + tag, "/dev/shm/" + tag} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s exists on the host", p)
			}
		}
		for id := range shmOf(t) {
			if !before[id] {
				t.Errorf("SysV segment %s appeared on the host", id)
			}
		}
	}
	os.Remove("/tmp/" + tag)
	os.Remove("/dev/shm/" + tag)
}

// TestContainTmpFill: a namespaced instance's /tmp, /var/tmp and /dev/shm
// share one tmpfs of isolation.tmp_bytes, charged to its memory cgroup:
// filling /tmp stops at the bound with ENOSPC, the others are full with
// it, and the host's disk sees none of it.
func TestContainTmpFill(t *testing.T) {
	const bound = 16 << 20
	ty := newTenancyWith(t, func(c *config.Config) { c.Isolation.TmpBytes = bound })
	filler := ty.start("filler", api.Limits{MemoryBytes: i64(128 << 20)}, "exec", "-stay", "--", "/bin/sh", "-c",
		tenantBin+" fill -dir /tmp -max 67108864; "+tenantBin+" fill -dir /dev/shm -max 1048576; "+tenantBin+" fill -dir /var/tmp -max 1048576")
	var ex struct {
		Stdout string `json:"stdout"`
	}
	filler.result(phaseDone, &ex)
	var fills [3]fillResult
	lines := strings.Split(strings.TrimSpace(ex.Stdout), "\n")
	if len(lines) != len(fills) {
		t.Fatalf("want three fill results, got:\n%s", ex.Stdout)
	}
	for i, l := range lines {
		if err := json.Unmarshal([]byte(l), &fills[i]); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
	}
	tmp, shm, vtmp := fills[0], fills[1], fills[2]
	if tmp.Errno != "ENOSPC" || tmp.Bytes < bound*9/10 || tmp.Bytes > bound {
		t.Errorf("/tmp: %+v, want ENOSPC at about %d bytes", tmp, bound)
	}
	if shm.Errno != "ENOSPC" || vtmp.Errno != "ENOSPC" || shm.Bytes+vtmp.Bytes > 1<<20 {
		t.Errorf("/dev/shm %+v, /var/tmp %+v: want both full with /tmp", shm, vtmp)
	}
	// tmpfs pages are charged to the writer's memory cgroup.
	var used uint64
	if cgtest.Mode() == cgroup.V2 {
		b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", filler.inst.Cgroup, "memory.current"))
		if err != nil {
			t.Fatal(err)
		}
		used, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	} else {
		used = filler.cgroupUint("memory", "memory.usage_in_bytes", "")
	}
	if used < bound*9/10 {
		t.Errorf("memory usage %d with %d bytes in its tmpfs: not charged to the instance", used, tmp.Bytes)
	}
	if _, err := os.Stat(filepath.Join("/tmp", "fill.dat")); err == nil {
		t.Errorf("the fill reached the host's /tmp")
	}
}

// shmOf lists the host's SysV shared memory segments by id.
func shmOf(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command("ipcs", "-m").Output()
	if err != nil {
		t.Fatalf("ipcs: %v", err)
	}
	ids := map[string]bool{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[0], "0x") {
			ids[f[1]] = true
		}
	}
	return ids
}

// TestInstanceLimitsReset: an agent that runs with a positive
// oom_score_adj and a high open-file limit (a systemd unit gives it -900
// and a huge LimitNOFILE; root here may not go below 0, see HOST-FACTS)
// starts instances with oom_score_adj 0 and RLIMIT_NOFILE
// isolation.nofile, in both modes: what it has is not theirs to inherit.
func TestInstanceLimitsReset(t *testing.T) {
	choom, err1 := exec.LookPath("choom")
	prlimit, err2 := exec.LookPath("prlimit")
	if err1 != nil || err2 != nil {
		t.Skip("choom or prlimit (util-linux) not installed")
	}
	var hard unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &hard); err != nil {
		t.Fatal(err)
	}
	for _, mode := range config.IsolationModes {
		t.Run(string(mode), func(t *testing.T) {
			h := newHost(t)
			h.cfg.Isolation.Mode, h.cfg.Isolation.NOFILE = mode, 1500
			if err := os.WriteFile(h.cfgPath, []byte(yamlOf(h.cfg)), 0o600); err != nil {
				t.Fatal(err)
			}
			h.wrap = []string{prlimit, fmt.Sprintf("--nofile=%d:%d", hard.Max, hard.Max), choom, "-n", "500", "--"}
			h.start("")
			agentAdj, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", h.agent.Process.Pid))
			if err != nil || strings.TrimSpace(string(agentAdj)) != "500" {
				t.Fatalf("the agent's oom_score_adj is %q (%v), want 500", agentAdj, err)
			}
			out, errOut, code := h.run("run", "--name", "limits", "--", "/bin/sh", "-c",
				"cat /proc/self/oom_score_adj; ulimit -n; ulimit -Hn; exec sleep 1000")
			if code != 0 {
				t.Fatalf("ward run: %d %s", code, errOut)
			}
			inst, err := h.client.Info(context.Background(), api.InfoRequest{ID: strings.TrimSpace(out)})
			if err != nil {
				t.Fatal(err)
			}
			logf := filepath.Join(inst.Dir, "logs", "stdout.log")
			waitFor(t, "the instance's output", func() bool {
				b, _ := os.ReadFile(logf)
				return strings.Count(string(b), "\n") >= 3
			})
			if got := readTrim(t, logf); got != "0\n1500\n1500" {
				t.Errorf("instance saw oom_score_adj, soft and hard RLIMIT_NOFILE\n%s\nwant 0, 1500, 1500 (the agent: 500, %d)", got, hard.Max)
			}
			// What it runs inherits the same.
			adj, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", *inst.PID))
			if strings.TrimSpace(string(adj)) != "0" {
				t.Errorf("the instance's main process has oom_score_adj %q", adj)
			}
		})
	}
}
