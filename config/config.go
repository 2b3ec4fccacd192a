// Package config owns ward's configuration file: its schema, defaults and
// validation.
//
// The file is YAML (DefaultPath). Every key has a default, so a file only
// needs the keys an operator wants to change, and `ward agent --dev` needs no
// file at all (see Dev). Decoding is strict: an unknown key is an error rather
// than silently ignored, because a misspelt limit that falls back to its
// default is worse than a refusal to start. Keys that take one of a few words
// (quota.backend, oom.policy) are typed enums (QuotaBackend, OOMPolicy):
// the file holds the plain word, the code compares constants.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultPath is where `ward agent` looks for its configuration file.
const DefaultPath = "/etc/ward/ward.yaml"

// Config is the whole configuration file. The yaml tags are the contract
// documented in SPEC.md ("Configuration").
type Config struct {
	// HostID names this host on the bus (ward.<host_id>.*), so it must be a
	// valid NATS subject token. Default: the hostname.
	HostID string `yaml:"host_id"`
	// StateDir holds ward's state; instance dirs live under
	// <state_dir>/instances/<id>.
	StateDir string `yaml:"state_dir"`
	// Socket is the unix socket the CLI talks to.
	Socket    string    `yaml:"socket"`
	Cgroup    Cgroup    `yaml:"cgroup"`
	Users     Users     `yaml:"users"`
	Ports     Ports     `yaml:"ports"`
	Defaults  Limits    `yaml:"defaults"`
	Quota     Quota     `yaml:"quota"`
	ACL       ACL       `yaml:"acl"`
	NATS      NATS      `yaml:"nats"`
	Report    Report    `yaml:"report"`
	OOM       OOM       `yaml:"oom"`
	Metrics   Metrics   `yaml:"metrics"`
	Stop      Stop      `yaml:"stop"`
	Logs      Logs      `yaml:"logs"`
	Reconcile Reconcile `yaml:"reconcile"`
	Isolation Isolation `yaml:"isolation"`
}

// Isolation configures what walls an instance runs behind besides its
// cgroup and pool user (SPEC.md "Isolation modes").
type Isolation struct {
	Mode IsolationMode `yaml:"mode"`
	// TmpBytes bounds the private /tmp, /var/tmp and /dev/shm of a
	// namespaced instance, all three together. The tmpfs pages are charged
	// to the instance's memory cgroup, so they also count against its
	// memory limit.
	TmpBytes int64 `yaml:"tmp_bytes"`
	// NOFILE is every instance's RLIMIT_NOFILE (soft and hard), whatever
	// the agent's own.
	NOFILE uint64 `yaml:"nofile"`
	// Hide lists more absolute paths a namespaced instance must not see,
	// beside ward's own config, state and socket.
	Hide []string `yaml:"hide"`
}

// Cgroup configures where instance cgroups are created.
type Cgroup struct {
	// Parent is the cgroup every instance cgroup is created under: the same
	// path in every v1 hierarchy, or under the v2 mount.
	Parent string `yaml:"parent"`
}

// Users configures the pool of unix users instances run as.
type Users struct {
	UIDMin int    `yaml:"uid_min"`
	UIDMax int    `yaml:"uid_max"`
	Group  string `yaml:"group"` // primary group of every pooled user
	GID    int    `yaml:"gid"`
	// CreatePasswd makes `ward setup` write passwd entries ward-<n> for the
	// pool. Off by default: the kernel needs no passwd entry to run a uid,
	// and many hosts manage /etc/passwd with other tooling.
	CreatePasswd bool `yaml:"create_passwd"`
}

// Ports is the range ports are leased from when a request asks for "auto".
type Ports struct {
	Min int `yaml:"min"`
	Max int `yaml:"max"`
}

// Limits are the resource limits applied to a request that leaves them out.
type Limits struct {
	MemoryBytes   int64 `yaml:"memory_bytes"`
	SwapBytes     int64 `yaml:"swap_bytes"`
	CPUShares     int64 `yaml:"cpu_shares"`
	CPUMillicores int64 `yaml:"cpu_millicores"` // 0: no CPU cap, shares only
	Pids          int64 `yaml:"pids"`
	DiskBytes     int64 `yaml:"disk_bytes"`
}

// Quota selects how disk limits are enforced.
type Quota struct {
	Backend QuotaBackend `yaml:"backend"`
	// Path is the filesystem holding instance dirs, when not state_dir.
	Path string `yaml:"path"`
}

// ACL lists the commands `ward setup` denies to the ward group.
type ACL struct {
	Deny []string `yaml:"deny"`
}

// NATS configures the bus connection. At most one authentication method may
// be set.
type NATS struct {
	Servers      []string `yaml:"servers"`
	User         string   `yaml:"user"`
	Password     string   `yaml:"password"`
	Token        string   `yaml:"token"`
	NkeySeedFile string   `yaml:"nkey_seed_file"`
	CredsFile    string   `yaml:"creds_file"`
	TLS          TLS      `yaml:"tls"`
}

// TLS holds the files for a TLS connection to NATS.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Report configures load publishing.
type Report struct {
	Interval Duration `yaml:"interval"`
	Weights  Weights  `yaml:"weights"`
}

// Weights of the load score: instance_load = Host×host_load +
// Instance×own_load, where a load is CPU×cpu% + Memory×mem%.
type Weights struct {
	Host     float64 `yaml:"host"`
	Instance float64 `yaml:"instance"`
	CPU      float64 `yaml:"cpu"`
	Memory   float64 `yaml:"memory"`
}

// OOM configures what happens when an instance hits its memory limit.
type OOM struct {
	Policy OOMPolicy `yaml:"policy"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `yaml:"listen"` // host:port; empty = off
}

// Stop configures instance shutdown.
type Stop struct {
	// Timeout is the default grace between SIGTERM and SIGKILL.
	Timeout Duration `yaml:"timeout"`
}

// Logs configures the per-instance stdout/stderr files.
type Logs struct {
	MaxBytes int64 `yaml:"max_bytes"` // per stream file, before rotation
	Keep     int   `yaml:"keep"`      // rotated files kept (stdout.log.1, ...)
}

// Reconcile configures the scan for leaked cgroups and directories.
type Reconcile struct {
	// Interval between scans. Something seen unowned on two scans in a row is
	// removed; two, so that a start racing the scan is never mistaken for a
	// leak.
	Interval Duration `yaml:"interval"`
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// defaultDeny are the usual Debian paths of privilege and escape tools,
// package managers, compilers and network tools: what an application has no
// business running and an attacker inside one would reach for first.
var defaultDeny = []string{
	// privilege, identity and scheduling
	"/bin/su", "/usr/bin/su", "/usr/bin/sudo",
	"/bin/mount", "/usr/bin/mount", "/bin/umount", "/usr/bin/umount",
	"/usr/bin/passwd", "/usr/bin/chsh", "/usr/bin/chfn", "/usr/bin/newgrp",
	"/usr/bin/crontab", "/usr/bin/at",
	// namespace escape
	"/usr/bin/nsenter", "/usr/bin/unshare", "/usr/sbin/chroot",
	// package managers
	"/usr/bin/apt", "/usr/bin/apt-get", "/usr/bin/dpkg", "/usr/bin/pip", "/usr/bin/pip3",
	// compilers and toolchain
	"/usr/bin/gcc", "/usr/bin/cc", "/usr/bin/g++", "/usr/bin/c++", "/usr/bin/make",
	"/usr/bin/as", "/usr/bin/ld",
	// network tools
	"/usr/bin/curl", "/usr/bin/wget", "/bin/nc", "/usr/bin/nc", "/usr/bin/ncat",
	"/usr/bin/netcat", "/usr/bin/ssh", "/usr/bin/scp", "/usr/bin/sftp",
	"/usr/bin/ftp", "/usr/bin/telnet",
}

// InstancesDir is where instance directories live: <state_dir>/instances,
// or <quota.path>/instances when the quota filesystem is another one.
func (c *Config) InstancesDir() string {
	if c.Quota.Path != "" {
		return filepath.Join(c.Quota.Path, "instances")
	}
	return filepath.Join(c.StateDir, "instances")
}

// DefaultDeny returns the default acl.deny list. It is a fresh copy, so the
// caller may modify it.
func DefaultDeny() []string {
	return append([]string(nil), defaultDeny...)
}

// Default returns a configuration with every key set to its default. HostID
// is the hostname, or "localhost" if it cannot be read.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Config{
		HostID:   host,
		StateDir: "/var/lib/ward",
		Socket:   "/run/ward/ward.sock",
		Cgroup:   Cgroup{Parent: "/ward"},
		Users:    Users{UIDMin: 20000, UIDMax: 29999, Group: "ward", GID: 20000},
		Ports:    Ports{Min: 61000, Max: 64999},
		Defaults: Limits{
			MemoryBytes: 256 * mib,
			CPUShares:   1024,
			Pids:        512,
			DiskBytes:   1 * gib,
		},
		Quota:  Quota{Backend: QuotaNone},
		ACL:    ACL{Deny: DefaultDeny()},
		NATS:   NATS{Servers: []string{"nats://127.0.0.1:4222"}},
		Report: Report{Interval: Duration(2 * time.Second), Weights: Weights{Host: 0.3, Instance: 0.7, CPU: 0.3, Memory: 0.7}},
		OOM:    OOM{Policy: OOMKill},
		Stop:   Stop{Timeout: Duration(10 * time.Second)},
		Logs:   Logs{MaxBytes: 10 * mib, Keep: 1},
		Reconcile: Reconcile{
			Interval: Duration(30 * time.Second),
		},
		Isolation: Isolation{Mode: IsolationNamespaces, TmpBytes: 64 * mib, NOFILE: 65536, Hide: []string{}},
	}
}

// Dev returns the `ward agent --dev` profile: defaults, with state under
// tempDir and a cgroup parent of its own so a dev agent never touches a real
// one's cgroups. The socket stays the default so the CLI finds it without
// flags, and the default NATS server is where --dev starts its embedded one.
func Dev(tempDir string) *Config {
	c := Default()
	c.StateDir = tempDir
	c.Cgroup.Parent = "/ward-dev"
	return c
}

// Load reads the file at path and parses it with Parse. A missing file is an
// error wrapping fs.ErrNotExist; whether that is fatal is the caller's call.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes data on top of Default(), so missing keys keep their
// defaults, and validates the result. Unknown keys are an error naming the
// key. Empty input yields the defaults.
func Parse(data []byte) (*Config, error) {
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// A second document would be silently ignored; refuse it instead, since
	// the operator evidently meant something by it.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("yaml: line %d: more than one YAML document", extra.Line)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
