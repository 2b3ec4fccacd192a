package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hostward/ward/accounts"
	"github.com/hostward/ward/acl"
	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/localapi"
	"github.com/hostward/ward/quota"
)

type checkResult struct {
	level string // OK, WARN, FAIL
	name  string
	msg   string
	fix   string
}

func runDoctor(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("doctor", "[--config FILE]", stderr)
	cfgPath := fs.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists)")
	socket := socketFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath, false)
	if err != nil {
		return err
	}
	var results []checkResult
	results = append(results, checkCgroups(cfg)...)
	results = append(results, checkUIDPool(cfg)...)
	results = append(results, checkQuota(cfg))
	results = append(results, checkACLs(cfg))
	results = append(results, checkNATS(cfg))
	results = append(results, checkAgent(*socket))

	failed := 0
	for _, r := range results {
		fmt.Fprintf(stdout, "%-4s  %-10s %s\n", r.level, r.name, r.msg)
		if r.level != "OK" && r.fix != "" {
			fmt.Fprintf(stdout, "      %-10s fix: %s\n", "", r.fix)
		}
		if r.level == "FAIL" {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed", failed)
	}
	return nil
}

var doctorV1Controllers = cgroup.V1Controllers()

func checkCgroups(cfg *config.Config) []checkResult {
	const root = "/sys/fs/cgroup"
	switch cgroup.HostMode() {
	case cgroup.V2:
		b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
		if err != nil {
			return []checkResult{{"FAIL", "cgroup", "v2: " + err.Error(), "mount cgroup2 at " + root}}
		}
		have := strings.Fields(string(b))
		var missing []string
		for _, c := range []string{"memory", "cpu", "pids", "io"} {
			if !contains(have, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return []checkResult{{"FAIL", "cgroup", "v2 lacks controllers " + strings.Join(missing, " "), "enable them in the kernel (cgroup_enable=...) and in the root's cgroup.subtree_control"}}
		}
		res := []checkResult{{"OK", "cgroup", "v2 with memory cpu pids io", ""}}
		return append(res, checkDelegationV2(root, cfg.Cgroup.Parent))
	case cgroup.V1:
		var missing []string
		for _, c := range doctorV1Controllers {
			if _, err := os.Stat(filepath.Join(root, c, "cgroup.procs")); err != nil {
				missing = append(missing, c)
			}
		}
		if len(missing) > 0 {
			return []checkResult{{"FAIL", "cgroup", "v1 hierarchies missing: " + strings.Join(missing, " "), "mount each controller at " + root + "/<controller>"}}
		}
		res := []checkResult{{"OK", "cgroup", "v1 with " + strings.Join(doctorV1Controllers, " "), ""}}
		if _, err := os.Stat(filepath.Join(root, "memory", "memory.memsw.limit_in_bytes")); err != nil {
			res = append(res, checkResult{"WARN", "swap", "no swap accounting (memory.memsw.*): swap limits cannot be enforced", "boot with swapaccount=1"})
		}
		res = append(res, checkRCUExpedited())
		return append(res, checkDelegationV1(root, cfg.Cgroup.Parent))
	}
	return []checkResult{{"FAIL", "cgroup", "no cgroup hierarchy found", "mount cgroup v1 hierarchies or cgroup2 at " + root}}
}

// checkRCUExpedited: every v1 cgroup attach (each instance start) takes a
// percpu rwsem for writing, which waits for an RCU grace period — 0.4 ms on
// a quiet host, 7-15 ms on a busy one. Expedited grace periods cut the p99
// start latency from ~15 ms to ~4 ms (BENCHMARKS.md) at the cost of an IPI
// to every CPU per grace period.
func checkRCUExpedited() checkResult {
	b, err := os.ReadFile("/sys/kernel/rcu_expedited")
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		return checkResult{"OK", "rcu", "expedited grace periods (fast v1 cgroup attach)", ""}
	}
	return checkResult{"WARN", "rcu", "normal RCU grace periods: on cgroup v1 a busy host adds up to ~15 ms to some starts",
		"echo 1 > /sys/kernel/rcu_expedited (or boot with rcupdate.rcu_expedited=1)"}
}

func checkDelegationV1(root, parent string) checkResult {
	for _, c := range doctorV1Controllers {
		dir := filepath.Join(root, c, parent)
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			dir = filepath.Join(root, c)
		}
		if err := writable(dir); err != nil {
			return checkResult{"FAIL", "delegation", fmt.Sprintf("cannot create groups under %s: %v", dir, err), "run the agent as root with the unit's Delegate=yes"}
		}
	}
	return checkResult{"OK", "delegation", "parent " + parent + " writable in every hierarchy", ""}
}

func checkDelegationV2(root, parent string) checkResult {
	dir := filepath.Join(root, parent)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		dir = root
	}
	if err := writable(dir); err != nil {
		return checkResult{"FAIL", "delegation", fmt.Sprintf("cannot create groups under %s: %v", dir, err), "run the agent as root with the unit's Delegate=yes"}
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err == nil && dir != root {
		have := strings.Fields(string(b))
		for _, c := range []string{"memory", "cpu", "pids"} {
			if !contains(have, c) {
				return checkResult{"WARN", "delegation", fmt.Sprintf("%s does not delegate %s yet (the agent enables it on first start)", dir, c), ""}
			}
		}
	}
	return checkResult{"OK", "delegation", "parent " + parent + " can hold instance groups", ""}
}

func writable(dir string) error {
	return unixAccess(dir)
}

func checkUIDPool(cfg *config.Config) []checkResult {
	u := cfg.Users
	pool := accounts.NewUIDPool(u.UIDMin, u.UIDMax, u.Group, uint32(u.GID))
	var res []checkResult
	if err := pool.CheckPasswd("/etc/passwd"); err != nil {
		res = append(res, checkResult{"FAIL", "uid pool", err.Error(), "change users.uid_min/uid_max in the config"})
	} else {
		res = append(res, checkResult{"OK", "uid pool", fmt.Sprintf("%d..%d free of passwd users", u.UIDMin, u.UIDMax), ""})
	}
	gid, found := lookupGroup(u.Group)
	switch {
	case !found:
		res = append(res, checkResult{"WARN", "group", fmt.Sprintf("group %q does not exist (instances still run with gid %d)", u.Group, u.GID), "ward setup"})
	case gid != u.GID:
		res = append(res, checkResult{"FAIL", "group", fmt.Sprintf("group %q has gid %d, config says %d", u.Group, gid, u.GID), "align users.gid with /etc/group"})
	default:
		res = append(res, checkResult{"OK", "group", fmt.Sprintf("%s (gid %d)", u.Group, gid), ""})
	}
	return res
}

func lookupGroup(name string) (int, bool) {
	f, err := os.Open("/etc/group")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ":")
		if len(p) >= 3 && p[0] == name {
			gid, err := strconv.Atoi(p[2])
			return gid, err == nil
		}
	}
	return 0, false
}

func checkQuota(cfg *config.Config) checkResult {
	if cfg.Quota.Backend == config.QuotaNone {
		return checkResult{"WARN", "quota", "backend none: disk limits are recorded but not enforced", "set quota.backend (btrfs, project or user)"}
	}
	dir := cfg.InstancesDir()
	b, err := quota.New(cfg.Quota.Backend, dir)
	if err != nil {
		return checkResult{"FAIL", "quota", err.Error(), "fix quota.backend / quota.path"}
	}
	if os.Geteuid() != 0 {
		return checkResult{"WARN", "quota", "backend " + string(cfg.Quota.Backend) + ": enforcement not checked (needs root)", "run ward doctor as root"}
	}
	// Verify writes a probe into the instances dir, which must exist.
	if _, err := os.Stat(dir); err != nil {
		return checkResult{"FAIL", "quota", fmt.Sprintf("backend %s: %v", cfg.Quota.Backend, err), "ward setup"}
	}
	if err := b.Verify(); err != nil {
		return checkResult{"FAIL", "quota", err.Error(), "ward setup (btrfs), or mount with quotas on and run quotaon (xfs, ext4)"}
	}
	return checkResult{"OK", "quota", fmt.Sprintf("backend %s enforces limits on %s", cfg.Quota.Backend, dir), ""}
}

// checkACLs looks at the deny list's targets — symlinks followed, each
// inode once — since an entry on a symlink's name would mean nothing.
func checkACLs(cfg *config.Config) checkResult {
	st, err := acl.CheckDeny(cfg.ACL.Deny, uint32(cfg.Users.GID))
	if err != nil {
		return checkResult{"FAIL", "acl", err.Error(), "fix or remove the path in acl.deny"}
	}
	present := len(st.Denied) + len(st.Drift)
	if len(st.Drift) > 0 {
		return checkResult{"FAIL", "acl", fmt.Sprintf("%d of %d deny-list targets lack the group:%s:--- entry: %s", len(st.Drift), present, cfg.Users.Group, strings.Join(first(st.Drift, 5), " ")), "ward setup"}
	}
	return checkResult{"OK", "acl", fmt.Sprintf("%d deny-list targets denied to %s (%d paths not installed)", present, cfg.Users.Group, len(st.Absent)), ""}
}

func checkNATS(cfg *config.Config) checkResult {
	var reached, failed []string
	for _, s := range cfg.NATS.Servers {
		addr := s
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			addr = u.Host
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			addr = net.JoinHostPort(addr, "4222")
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			failed = append(failed, s)
			continue
		}
		c.Close()
		reached = append(reached, s)
	}
	if len(reached) == 0 {
		return checkResult{"FAIL", "nats", "no server reachable: " + strings.Join(failed, " "), "check nats.servers and the network; instances keep running meanwhile"}
	}
	if len(failed) > 0 {
		return checkResult{"WARN", "nats", fmt.Sprintf("reachable %s; unreachable %s", strings.Join(reached, " "), strings.Join(failed, " ")), ""}
	}
	return checkResult{"OK", "nats", "reachable: " + strings.Join(reached, " "), ""}
}

func checkAgent(socket string) checkResult {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	l, err := localapi.NewClient(socket).List(ctx)
	if err != nil {
		return checkResult{"WARN", "agent", "not answering on " + socket, "systemctl start ward"}
	}
	return checkResult{"OK", "agent", fmt.Sprintf("answering on %s, %d instances", socket, len(l.Instances)), ""}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func first(l []string, n int) []string {
	if len(l) > n {
		return append(l[:n:n], "...")
	}
	return l
}
