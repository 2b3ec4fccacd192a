package agent

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hostward/ward/api"
)

// Bounds that separate a plausible request from a mistake. Those that depend
// on the host (memory, CPUs) come from hostInfo.
const (
	minMemoryBytes = 4 << 20
	maxSwapBytes   = 1 << 40
	minCPUShares   = 2
	maxCPUShares   = 262144 // the kernel's own bounds for cpu.shares
	minMillicores  = 10     // 1 % of a core; below that CFS cannot enforce a period
	maxPids        = 4194304
	minDiskBytes   = 1 << 20
	maxDiskBytes   = 1 << 50
	maxIndex       = 1_000_000
	maxArgBytes    = 128 << 10
	maxEnv         = 1000
	maxRoutes      = 100
	minHealthMS    = 100
	maxHealthMS    = 10 * 60 * 1000
)

// reservedEnv are set by the agent for every instance.
var reservedEnv = []string{"PORT", "INSTANCE_ID", "INSTANCE_INDEX", "HOME"}

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$`)
	envKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostnameRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
)

// hostInfo bounds what a request may ask of this host.
type hostInfo struct {
	memTotal int64
	cpus     int
	portMin  int
	portMax  int
}

// validateID checks an id or name against the contract: 1–64 characters of
// [A-Za-z0-9_.-], not starting with "." — so it can never be a path
// traversal or a hidden file, in a cgroup name or a directory.
func validateID(field, v string) *api.Error {
	if v == "" {
		return invalid(field, "required")
	}
	if len(v) > 64 {
		return invalid(field, "at most 64 characters, got %d", len(v))
	}
	if !nameRE.MatchString(v) {
		if strings.HasPrefix(v, ".") {
			return invalid(field, "must not start with %q", ".")
		}
		return invalid(field, "only letters, digits, '_', '.' and '-' are allowed, got %q", v)
	}
	return nil
}

// newID returns a random id for a request that gave none.
func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// normalize validates req, fills defaults into a copy and resolves the
// executable. It changes nothing on the host.
func normalize(req api.Request, defaults api.Limits, host hostInfo) (api.Request, string, error) {
	r := req
	if r.ID == "" {
		r.ID = newID()
	} else if err := validateID("id", r.ID); err != nil {
		return r, "", err
	}
	if err := validateID("name", r.Name); err != nil {
		return r, "", err
	}
	if r.Index < 0 || r.Index > maxIndex {
		return r, "", invalid("index", "must be in [0, %d], got %d", maxIndex, r.Index)
	}
	exe, err := validateCommand(r.Command, r.Env)
	if err != nil {
		return r, "", err
	}
	r.Command = append([]string(nil), r.Command...)
	if err := validateEnv(r.Env); err != nil {
		return r, "", err
	}
	if len(r.Env) == 0 {
		r.Env = nil
	}
	r.Limits = mergeLimits(defaults, r.Limits)
	if err := validateLimits(r.Limits, host); err != nil {
		return r, "", err
	}
	if r.Port != nil {
		p := *r.Port
		if p != 0 && (p < host.portMin || p > host.portMax) {
			return r, "", invalid("port", "%d is outside the configured range %d-%d; use 0 to allocate one", p, host.portMin, host.portMax)
		}
	}
	if len(r.Routes) == 0 {
		r.Routes = nil
	}
	if len(r.Routes) > maxRoutes {
		return r, "", invalid("routes", "at most %d, got %d", maxRoutes, len(r.Routes))
	}
	for i, rt := range r.Routes {
		if err := validateRoute(rt); err != nil {
			return r, "", invalid(fmt.Sprintf("routes[%d]", i), "%v", err)
		}
	}
	if r.Routes != nil && r.Port == nil {
		return r, "", invalid("routes", "need a port to route to; set port (0 allocates one)")
	}
	if hc := r.HealthCheck; hc != nil {
		c := *hc
		if err := validateHealth(&c, r.Port != nil); err != nil {
			return r, "", err
		}
		r.HealthCheck = &c
	}
	return r, exe, nil
}

func validateCommand(cmd []string, env map[string]string) (string, error) {
	if len(cmd) == 0 {
		return "", invalid("command", "required: the program and its arguments")
	}
	if cmd[0] == "" {
		return "", invalid("command[0]", "empty program name")
	}
	total := 0
	for i, a := range cmd {
		if strings.IndexByte(a, 0) >= 0 {
			return "", invalid(fmt.Sprintf("command[%d]", i), "contains a NUL byte")
		}
		total += len(a) + 1
	}
	if total > maxArgBytes {
		return "", invalid("command", "arguments total %d bytes, at most %d", total, maxArgBytes)
	}
	exe, err := lookPath(cmd[0], env["PATH"])
	if err != nil {
		return "", invalid("command[0]", "%v", err)
	}
	return exe, nil
}

// defaultPath is the PATH an instance gets when its request sets none.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// lookPath resolves prog the way a shell would for the instance: a name
// with a slash must be absolute, a bare name is searched in the instance's
// PATH. Only existence and an execute bit are checked here; whether the
// pool may run it (ACLs) shows when it starts.
func lookPath(prog, path string) (string, error) {
	if strings.Contains(prog, "/") {
		if !filepath.IsAbs(prog) {
			return "", fmt.Errorf("%q: a path must be absolute (the working directory is the instance's own)", prog)
		}
		return prog, checkExecutable(prog)
	}
	if path == "" {
		path = defaultPath
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, prog)
		if checkExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q not found in PATH %s", prog, path)
}

func checkExecutable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("%q: %w", p, err)
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%q is not an executable file", p)
	}
	return nil
}

func validateEnv(env map[string]string) error {
	if len(env) > maxEnv {
		return invalid("env", "at most %d variables, got %d", maxEnv, len(env))
	}
	for k, v := range env {
		if !envKeyRE.MatchString(k) {
			return invalid("env", "invalid variable name %q", k)
		}
		for _, r := range reservedEnv {
			if k == r {
				return invalid("env."+k, "set by ward for every instance, cannot be overridden")
			}
		}
		if strings.IndexByte(v, 0) >= 0 {
			return invalid("env."+k, "contains a NUL byte")
		}
	}
	return nil
}

// mergeLimits returns base with every field set in over replaced.
func mergeLimits(base, over api.Limits) api.Limits {
	pick := func(b, o *int64) *int64 {
		if o != nil {
			return i64(*o)
		}
		if b != nil {
			return i64(*b)
		}
		return nil
	}
	return api.Limits{
		MemoryBytes:   pick(base.MemoryBytes, over.MemoryBytes),
		SwapBytes:     pick(base.SwapBytes, over.SwapBytes),
		CPUShares:     pick(base.CPUShares, over.CPUShares),
		CPUMillicores: pick(base.CPUMillicores, over.CPUMillicores),
		Pids:          pick(base.Pids, over.Pids),
		DiskBytes:     pick(base.DiskBytes, over.DiskBytes),
	}
}

// validateLimits checks a complete set of limits.
func validateLimits(l api.Limits, host hostInfo) error {
	type check struct {
		field    string
		v        *int64
		min, max int64
		zeroOK   bool
		unit     string
	}
	maxMilli := int64(host.cpus) * 1000
	checks := []check{
		{"limits.memory_bytes", l.MemoryBytes, minMemoryBytes, host.memTotal, false, "bytes"},
		{"limits.swap_bytes", l.SwapBytes, 0, maxSwapBytes, true, "bytes"},
		{"limits.cpu_shares", l.CPUShares, minCPUShares, maxCPUShares, false, ""},
		{"limits.cpu_millicores", l.CPUMillicores, minMillicores, maxMilli, true, "millicores"},
		// On v1 the thread that forks an instance is briefly counted in its
		// pids group, so 1 could never start anything.
		{"limits.pids", l.Pids, 2, maxPids, false, ""},
		{"limits.disk_bytes", l.DiskBytes, minDiskBytes, maxDiskBytes, true, "bytes"},
	}
	for _, c := range checks {
		if c.v == nil {
			return invalid(c.field, "required (no default configured)")
		}
		v := *c.v
		if v == 0 && c.zeroOK {
			continue
		}
		if v < c.min || v > c.max {
			zero := ""
			if c.zeroOK {
				zero = " (or 0 for none)"
			}
			return invalid(c.field, "must be in [%d, %d]%s %s, got %d", c.min, c.max, zero, c.unit, v)
		}
	}
	return nil
}

func validateRoute(rt string) error {
	host, path, _ := strings.Cut(rt, "/")
	if len(host) == 0 || len(host) > 253 || !hostnameRE.MatchString(host) {
		return fmt.Errorf("%q is not a hostname", rt)
	}
	if strings.ContainsAny(path, " \t\n?#") {
		return fmt.Errorf("%q: invalid path", rt)
	}
	return nil
}

func validateHealth(hc *api.HealthCheck, hasPort bool) error {
	switch hc.Type {
	case "tcp":
		if hc.Path != "" {
			return invalid("health_check.path", "only for type http")
		}
	case "http":
		if !strings.HasPrefix(hc.Path, "/") {
			return invalid("health_check.path", "must start with '/', got %q", hc.Path)
		}
	default:
		return invalid("health_check.type", "must be tcp or http, got %q", hc.Type)
	}
	if !hasPort {
		return invalid("health_check", "needs a port to probe; set port (0 allocates one)")
	}
	if hc.IntervalMS == 0 {
		hc.IntervalMS = 2000
	}
	if hc.TimeoutMS == 0 {
		hc.TimeoutMS = min(1000, hc.IntervalMS)
	}
	if hc.IntervalMS < minHealthMS || hc.IntervalMS > maxHealthMS {
		return invalid("health_check.interval_ms", "must be in [%d, %d], got %d", minHealthMS, maxHealthMS, hc.IntervalMS)
	}
	if hc.TimeoutMS < 1 || hc.TimeoutMS > hc.IntervalMS {
		return invalid("health_check.timeout_ms", "must be in [1, interval_ms=%d], got %d", hc.IntervalMS, hc.TimeoutMS)
	}
	return nil
}
