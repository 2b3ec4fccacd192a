package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// maxID bounds uids and gids (exclusive): from 2^31−1 up, ids break tools
// and filesystems that store them as signed 32-bit integers.
const maxID = 1<<31 - 1

var (
	// host_id becomes a NATS subject token, so it may not hold spaces, "*",
	// ">" or anything a shell or a log would mangle.
	hostIDRe = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$`)
	// The portable subset useradd/groupadd accept.
	groupRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// Validate checks every key and returns all violations joined with
// errors.Join, each naming its YAML key path, so an operator sees every
// problem at once. It returns nil for a valid configuration.
func (c *Config) Validate() error {
	var v violations

	switch {
	case !hostIDRe.MatchString(c.HostID):
		v.add("host_id", "must be 1-64 characters of [A-Za-z0-9_.-], not starting with \".\", got %q", c.HostID)
	case strings.HasSuffix(c.HostID, ".") || strings.Contains(c.HostID, ".."):
		// The dots split it into several subject tokens; an empty one makes
		// every ward.<host_id>.* subject invalid.
		v.add("host_id", "must not end with \".\" or contain \"..\", got %q", c.HostID)
	}
	v.absPath("state_dir", c.StateDir)
	v.absPath("socket", c.Socket)

	switch p := c.Cgroup.Parent; {
	case !path.IsAbs(p):
		v.add("cgroup.parent", "must be an absolute path, got %q", p)
	case p == "/":
		// Instances directly under the root would mix with the system's
		// cgroups and make reconcile's "unowned" scan dangerous.
		v.add("cgroup.parent", "must not be the root cgroup \"/\"")
	case hasDotDot(p):
		v.add("cgroup.parent", "must not contain \"..\", got %q", p)
	case path.Clean(p) != p:
		v.add("cgroup.parent", "must be a clean path (%q), got %q", path.Clean(p), p)
	}

	u := c.Users
	if u.UIDMin < 1000 {
		// Below 1000 are system users on Debian and most distributions.
		v.add("users.uid_min", "must be >= 1000, got %d", u.UIDMin)
	}
	if u.UIDMax < u.UIDMin {
		v.add("users.uid_max", "must be >= users.uid_min (%d), got %d", u.UIDMin, u.UIDMax)
	}
	if u.UIDMax >= maxID {
		v.add("users.uid_max", "must be < %d, got %d", maxID, u.UIDMax)
	}
	if u.GID < 1 || u.GID >= maxID {
		// gid 0 is root's group: pooled users must never get it.
		v.add("users.gid", "must be in [1, %d), got %d", maxID, u.GID)
	}
	if !groupRe.MatchString(u.Group) {
		v.add("users.group", "must be a unix group name ([a-z_][a-z0-9_-]*, at most 32 characters), got %q", u.Group)
	}

	if c.Ports.Min < 1024 || c.Ports.Min > 65535 {
		// Below 1024 are privileged ports, bindable only by root.
		v.add("ports.min", "must be in [1024, 65535], got %d", c.Ports.Min)
	}
	if c.Ports.Max < c.Ports.Min {
		v.add("ports.max", "must be >= ports.min (%d), got %d", c.Ports.Min, c.Ports.Max)
	}
	if c.Ports.Max > 65535 {
		v.add("ports.max", "must be <= 65535, got %d", c.Ports.Max)
	}

	d := c.Defaults
	if d.MemoryBytes < 4*mib {
		// Less cannot run even a shell; cgroups refuse tiny limits anyway.
		v.add("defaults.memory_bytes", "must be >= %d (4 MiB), got %d", 4*mib, d.MemoryBytes)
	}
	v.nonNegative("defaults.swap_bytes", d.SwapBytes)
	if d.CPUShares < 2 || d.CPUShares > 262144 {
		// The range cgroup v1 cpu.shares accepts.
		v.add("defaults.cpu_shares", "must be in [2, 262144], got %d", d.CPUShares)
	}
	v.nonNegative("defaults.cpu_millicores", d.CPUMillicores)
	if d.Pids < 1 {
		v.add("defaults.pids", "must be >= 1, got %d", d.Pids)
	}
	v.nonNegative("defaults.disk_bytes", d.DiskBytes)

	if !c.Quota.Backend.Valid() {
		v.add("quota.backend", "must be one of %s, got %q", oneOf(QuotaBackends), c.Quota.Backend)
	}
	if c.Quota.Path != "" {
		v.absPath("quota.path", c.Quota.Path)
	}

	for i, p := range c.ACL.Deny {
		v.absPath(fmt.Sprintf("acl.deny[%d]", i), p)
	}

	c.NATS.validate(&v)

	r := c.Report
	if r.Interval.D() < 100*time.Millisecond {
		v.add("report.interval", "must be >= 100ms, got %s", r.Interval)
	}
	for _, w := range []struct {
		key string
		val float64
	}{
		{"report.weights.host", r.Weights.Host},
		{"report.weights.instance", r.Weights.Instance},
		{"report.weights.cpu", r.Weights.CPU},
		{"report.weights.memory", r.Weights.Memory},
	} {
		if !(w.val >= 0 && w.val <= 1) { // also catches NaN
			v.add(w.key, "must be in [0, 1], got %v", w.val)
		}
	}
	// Weights that sum to 1 keep every load in [0, 1] (a percentage).
	if s := r.Weights.Host + r.Weights.Instance; !(math.Abs(s-1) <= 1e-9) {
		v.add("report.weights", "host + instance must sum to 1, got %v", s)
	}
	if s := r.Weights.CPU + r.Weights.Memory; !(math.Abs(s-1) <= 1e-9) {
		v.add("report.weights", "cpu + memory must sum to 1, got %v", s)
	}

	if !c.OOM.Policy.Valid() {
		v.add("oom.policy", "must be one of %s, got %q", oneOf(OOMPolicies), c.OOM.Policy)
	}

	if l := c.Metrics.Listen; l != "" {
		if err := checkListen(l); err != nil {
			v.add("metrics.listen", "must be empty or host:port: %v", err)
		}
	}

	if c.Stop.Timeout < 0 {
		v.add("stop.timeout", "must be >= 0, got %s", c.Stop.Timeout)
	}

	if c.Logs.MaxBytes < 4*kib {
		v.add("logs.max_bytes", "must be >= 4096, got %d", c.Logs.MaxBytes)
	}
	if c.Logs.Keep < 0 || c.Logs.Keep > 10 {
		v.add("logs.keep", "must be in [0, 10], got %d", c.Logs.Keep)
	}

	if c.Reconcile.Interval.D() < time.Second {
		v.add("reconcile.interval", "must be >= 1s, got %s", c.Reconcile.Interval)
	}

	c.Isolation.validate(&v)

	return errors.Join(v...)
}

func (is *Isolation) validate(v *violations) {
	if !is.Mode.Valid() {
		v.add("isolation.mode", "must be one of %s, got %q", oneOf(IsolationModes), is.Mode)
	}
	// A tmpfs needs at least a page; below 1 MiB no program's temporary
	// files fit, which is a typo rather than a choice.
	if is.TmpBytes < mib {
		v.add("isolation.tmp_bytes", "must be >= 1048576 (1 MiB), got %d", is.TmpBytes)
	}
	// Below 64 a dynamic linker, a runtime and stdio leave a program no fd
	// of its own; above fs.nr_open's default the kernel refuses it.
	if is.NOFILE < 64 || is.NOFILE > 1<<20 {
		v.add("isolation.nofile", "must be in [64, 1048576], got %d", is.NOFILE)
	}
	for i, h := range is.Hide {
		key := fmt.Sprintf("isolation.hide[%d]", i)
		v.absPath(key, h)
		if path.Clean(h) == "/" {
			v.add(key, "cannot hide the root directory")
		}
		if hasDotDot(h) {
			v.add(key, "must not contain '..', got %q", h)
		}
	}
}

func (n *NATS) validate(v *violations) {
	if len(n.Servers) == 0 {
		v.add("nats.servers", "must list at least one server")
	}
	for i, s := range n.Servers {
		if err := checkServer(s); err != nil {
			v.add(fmt.Sprintf("nats.servers[%d]", i), "%v", err)
		}
	}

	if n.User != "" && n.Password == "" {
		v.add("nats.password", "must be set when nats.user is set")
	}
	if n.Password != "" && n.User == "" {
		v.add("nats.user", "must be set when nats.password is set")
	}
	// nats.go would apply several methods at once and the server would pick
	// one; refuse the ambiguity instead.
	var methods []string
	if n.Token != "" {
		methods = append(methods, "token")
	}
	if n.User != "" || n.Password != "" {
		methods = append(methods, "user/password")
	}
	if n.NkeySeedFile != "" {
		methods = append(methods, "nkey_seed_file")
	}
	if n.CredsFile != "" {
		methods = append(methods, "creds_file")
	}
	if len(methods) > 1 {
		v.add("nats", "only one of token, user/password, nkey_seed_file, creds_file may be set, got %s", strings.Join(methods, " and "))
	}

	if n.TLS.CertFile != "" && n.TLS.KeyFile == "" {
		v.add("nats.tls.key_file", "must be set when nats.tls.cert_file is set")
	}
	if n.TLS.KeyFile != "" && n.TLS.CertFile == "" {
		v.add("nats.tls.cert_file", "must be set when nats.tls.key_file is set")
	}
}

// checkServer accepts what nats.go accepts: a URL with scheme nats, tls, ws
// or wss, or a bare host[:port], to which nats.go adds "nats://".
func checkServer(s string) error {
	raw := s
	if !strings.Contains(s, "://") {
		raw = "nats://" + s
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid server URL %q", s)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("scheme must be nats, tls, ws or wss, got %q", s)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("server URL has no host, got %q", s)
	}
	if p := u.Port(); p != "" {
		if _, err := parsePort(p); err != nil {
			return fmt.Errorf("server URL %q: %v", s, err)
		}
	}
	return nil
}

func checkListen(l string) error {
	_, port, err := net.SplitHostPort(l)
	if err != nil {
		return err
	}
	_, err = parsePort(port)
	return err
}

// parsePort accepts a numeric port in [1, 65535]: a service name or port 0
// (a random port) makes no sense for an address others must find.
func parsePort(p string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port must be a number in [1, 65535], got %q", p)
	}
	return n, nil
}

func hasDotDot(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return true
		}
	}
	return false
}

// violations collects validation errors, each prefixed with its key path.
type violations []error

func (v *violations) add(key, format string, args ...any) {
	*v = append(*v, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

// absPath uses package path, not filepath: these are Linux paths whatever
// the OS the check runs on (tests, a config linter on a laptop).
func (v *violations) absPath(key, p string) {
	if !path.IsAbs(p) {
		v.add(key, "must be an absolute path, got %q", p)
	}
}

func (v *violations) nonNegative(key string, n int64) {
	if n < 0 {
		v.add(key, "must be >= 0, got %d", n)
	}
}
