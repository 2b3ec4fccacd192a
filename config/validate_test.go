package config

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestValidateRejects(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Config)
		key    string // the error must start with "<key>: "
	}{
		{"host_id empty", func(c *Config) { c.HostID = "" }, "host_id"},
		{"host_id too long", func(c *Config) { c.HostID = strings.Repeat("a", 65) }, "host_id"},
		{"host_id leading dot", func(c *Config) { c.HostID = ".dea" }, "host_id"},
		{"host_id trailing dot", func(c *Config) { c.HostID = "dea." }, "host_id"},
		{"host_id empty token", func(c *Config) { c.HostID = "dea..01" }, "host_id"},
		{"host_id wildcard", func(c *Config) { c.HostID = "dea*" }, "host_id"},
		{"host_id space", func(c *Config) { c.HostID = "dea 01" }, "host_id"},
		{"state_dir relative", func(c *Config) { c.StateDir = "var/lib/ward" }, "state_dir"},
		{"state_dir empty", func(c *Config) { c.StateDir = "" }, "state_dir"},
		{"socket relative", func(c *Config) { c.Socket = "ward.sock" }, "socket"},
		{"cgroup.parent relative", func(c *Config) { c.Cgroup.Parent = "ward" }, "cgroup.parent"},
		{"cgroup.parent empty", func(c *Config) { c.Cgroup.Parent = "" }, "cgroup.parent"},
		{"cgroup.parent root", func(c *Config) { c.Cgroup.Parent = "/" }, "cgroup.parent"},
		{"cgroup.parent dotdot", func(c *Config) { c.Cgroup.Parent = "/ward/../x" }, "cgroup.parent"},
		{"cgroup.parent trailing slash", func(c *Config) { c.Cgroup.Parent = "/ward/" }, "cgroup.parent"},
		{"cgroup.parent double slash", func(c *Config) { c.Cgroup.Parent = "//ward" }, "cgroup.parent"},
		{"users.uid_min system", func(c *Config) { c.Users.UIDMin = 999 }, "users.uid_min"},
		{"users.uid_max below min", func(c *Config) { c.Users.UIDMax = 19999 }, "users.uid_max"},
		{"users.uid_max too big", func(c *Config) { c.Users.UIDMax = math.MaxInt32 }, "users.uid_max"},
		{"users.gid zero", func(c *Config) { c.Users.GID = 0 }, "users.gid"},
		{"users.group empty", func(c *Config) { c.Users.Group = "" }, "users.group"},
		{"users.group upper", func(c *Config) { c.Users.Group = "Ward" }, "users.group"},
		{"users.group digit first", func(c *Config) { c.Users.Group = "1ward" }, "users.group"},
		{"users.group too long", func(c *Config) { c.Users.Group = strings.Repeat("w", 33) }, "users.group"},
		{"ports.min privileged", func(c *Config) { c.Ports.Min = 1023 }, "ports.min"},
		{"ports.max below min", func(c *Config) { c.Ports.Max = 60999 }, "ports.max"},
		{"ports.max too big", func(c *Config) { c.Ports.Max = 65536 }, "ports.max"},
		{"defaults.memory_bytes tiny", func(c *Config) { c.Defaults.MemoryBytes = 4<<20 - 1 }, "defaults.memory_bytes"},
		{"defaults.swap_bytes negative", func(c *Config) { c.Defaults.SwapBytes = -1 }, "defaults.swap_bytes"},
		{"defaults.cpu_shares low", func(c *Config) { c.Defaults.CPUShares = 1 }, "defaults.cpu_shares"},
		{"defaults.cpu_shares high", func(c *Config) { c.Defaults.CPUShares = 262145 }, "defaults.cpu_shares"},
		{"defaults.cpu_millicores negative", func(c *Config) { c.Defaults.CPUMillicores = -1 }, "defaults.cpu_millicores"},
		{"defaults.pids zero", func(c *Config) { c.Defaults.Pids = 0 }, "defaults.pids"},
		{"defaults.disk_bytes negative", func(c *Config) { c.Defaults.DiskBytes = -1 }, "defaults.disk_bytes"},
		{"quota.backend unknown", func(c *Config) { c.Quota.Backend = "xfs" }, "quota.backend"},
		{"quota.backend empty", func(c *Config) { c.Quota.Backend = "" }, "quota.backend"},
		{"quota.path relative", func(c *Config) { c.Quota.Path = "srv" }, "quota.path"},
		{"acl.deny relative", func(c *Config) { c.ACL.Deny = []string{"/bin/su", "sudo"} }, "acl.deny[1]"},
		{"nats.servers empty", func(c *Config) { c.NATS.Servers = nil }, "nats.servers"},
		{"nats.servers scheme", func(c *Config) { c.NATS.Servers = []string{"http://a:4222"} }, "nats.servers[0]"},
		{"nats.servers no host", func(c *Config) { c.NATS.Servers = []string{"nats://a", "nats://"} }, "nats.servers[1]"},
		{"nats.servers bad port", func(c *Config) { c.NATS.Servers = []string{"a:http"} }, "nats.servers[0]"},
		{"nats.servers unparsable", func(c *Config) { c.NATS.Servers = []string{"nats://a b:%zz"} }, "nats.servers[0]"},
		{"nats.user without password", func(c *Config) { c.NATS.User = "ward" }, "nats.password"},
		{"nats.password without user", func(c *Config) { c.NATS.Password = "pw" }, "nats.user"},
		{"nats token and user", func(c *Config) { c.NATS.Token, c.NATS.User, c.NATS.Password = "t", "u", "p" }, "nats"},
		{"nats nkey and creds", func(c *Config) { c.NATS.NkeySeedFile, c.NATS.CredsFile = "/a", "/b" }, "nats"},
		{"nats.tls cert without key", func(c *Config) { c.NATS.TLS.CertFile = "/c.pem" }, "nats.tls.key_file"},
		{"nats.tls key without cert", func(c *Config) { c.NATS.TLS.KeyFile = "/k.pem" }, "nats.tls.cert_file"},
		{"report.interval short", func(c *Config) { c.Report.Interval = Duration(99 * time.Millisecond) }, "report.interval"},
		{"report.weights.host negative", func(c *Config) { c.Report.Weights.Host, c.Report.Weights.Instance = -0.5, 1.5 }, "report.weights.host"},
		{"report.weights.instance big", func(c *Config) { c.Report.Weights.Host, c.Report.Weights.Instance = -0.5, 1.5 }, "report.weights.instance"},
		{"report.weights.cpu NaN", func(c *Config) { c.Report.Weights.CPU = math.NaN() }, "report.weights.cpu"},
		{"report.weights.memory big", func(c *Config) { c.Report.Weights.Memory = 1.1 }, "report.weights.memory"},
		{"report.weights host+instance", func(c *Config) { c.Report.Weights.Host = 0.4 }, "report.weights"},
		{"report.weights cpu+memory", func(c *Config) { c.Report.Weights.Memory = 0.6 }, "report.weights"},
		{"oom.policy unknown", func(c *Config) { c.OOM.Policy = "restart" }, "oom.policy"},
		{"metrics.listen no port", func(c *Config) { c.Metrics.Listen = "127.0.0.1" }, "metrics.listen"},
		{"metrics.listen bad port", func(c *Config) { c.Metrics.Listen = ":99999" }, "metrics.listen"},
		{"stop.timeout negative", func(c *Config) { c.Stop.Timeout = Duration(-time.Second) }, "stop.timeout"},
		{"logs.max_bytes small", func(c *Config) { c.Logs.MaxBytes = 4095 }, "logs.max_bytes"},
		{"logs.keep negative", func(c *Config) { c.Logs.Keep = -1 }, "logs.keep"},
		{"logs.keep many", func(c *Config) { c.Logs.Keep = 11 }, "logs.keep"},
		{"reconcile.interval short", func(c *Config) { c.Reconcile.Interval = Duration(999 * time.Millisecond) }, "reconcile.interval"},
		{"isolation.mode unknown", func(c *Config) { c.Isolation.Mode = "jail" }, "isolation.mode"},
		{"isolation.tmp_bytes small", func(c *Config) { c.Isolation.TmpBytes = 4096 }, "isolation.tmp_bytes"},
		{"isolation.nofile small", func(c *Config) { c.Isolation.NOFILE = 10 }, "isolation.nofile"},
		{"isolation.nofile big", func(c *Config) { c.Isolation.NOFILE = 1<<20 + 1 }, "isolation.nofile"},
		{"isolation.hide relative", func(c *Config) { c.Isolation.Hide = []string{"srv/x"} }, "isolation.hide[0]"},
		{"isolation.hide root", func(c *Config) { c.Isolation.Hide = []string{"/tmp", "/"} }, "isolation.hide[1]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.modify(c)
			err := c.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want an error for %s", tc.key)
			}
			found := false
			for _, line := range strings.Split(err.Error(), "\n") {
				found = found || strings.HasPrefix(line, tc.key+": ")
			}
			if !found {
				t.Errorf("Validate() = %q, want a line starting with %q", err, tc.key+": ")
			}
		})
	}
}

// Edge values that are allowed, so the rules above are no stricter than
// documented.
func TestValidateAccepts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Config)
	}{
		{"host_id fqdn", func(c *Config) { c.HostID = "dea-01.dc1.example" }},
		{"host_id 64 chars", func(c *Config) { c.HostID = strings.Repeat("a", 64) }},
		{"host_id underscore", func(c *Config) { c.HostID = "_dea_01" }},
		{"cgroup.parent nested", func(c *Config) { c.Cgroup.Parent = "/system.slice/ward" }},
		{"users single uid", func(c *Config) { c.Users.UIDMin, c.Users.UIDMax = 1000, 1000 }},
		{"users.uid_max largest", func(c *Config) { c.Users.UIDMax = math.MaxInt32 - 1 }},
		{"users.group", func(c *Config) { c.Users.Group = "_ward-apps1" }},
		{"ports full range", func(c *Config) { c.Ports.Min, c.Ports.Max = 1024, 65535 }},
		{"ports single", func(c *Config) { c.Ports.Min, c.Ports.Max = 62000, 62000 }},
		{"defaults minimal", func(c *Config) { c.Defaults = Limits{MemoryBytes: 4 << 20, CPUShares: 2, Pids: 1} }},
		{"defaults.cpu_shares max", func(c *Config) { c.Defaults.CPUShares = 262144 }},
		{"quota backends", func(c *Config) { c.Quota = Quota{Backend: "btrfs", Path: "/srv"} }},
		{"acl.deny empty", func(c *Config) { c.ACL.Deny = nil }},
		{"nats servers", func(c *Config) {
			c.NATS.Servers = []string{"nats://a:4222", "tls://b", "ws://c:80", "wss://d:443", "e:4222", "f", "nats://u:p@[::1]:4222"}
		}},
		{"nats user/password", func(c *Config) { c.NATS.User, c.NATS.Password = "u", "p" }},
		{"nats token", func(c *Config) { c.NATS.Token = "t" }},
		{"nats nkey", func(c *Config) { c.NATS.NkeySeedFile = "/etc/ward/seed.nk" }},
		{"nats tls ca only", func(c *Config) { c.NATS.TLS.CAFile = "/ca.pem" }},
		{"report extremes", func(c *Config) {
			c.Report.Interval = Duration(100 * time.Millisecond)
			c.Report.Weights = Weights{Host: 0, Instance: 1, CPU: 1, Memory: 0}
		}},
		{"report.weights float sum", func(c *Config) { c.Report.Weights.Host, c.Report.Weights.Instance = 0.1, 0.9 }},
		{"oom.policy notify", func(c *Config) { c.OOM.Policy = "notify" }},
		{"metrics.listen any host", func(c *Config) { c.Metrics.Listen = ":9102" }},
		{"metrics.listen ipv6", func(c *Config) { c.Metrics.Listen = "[::1]:9102" }},
		{"stop.timeout zero", func(c *Config) { c.Stop.Timeout = 0 }},
		{"logs minimal", func(c *Config) { c.Logs = Logs{MaxBytes: 4096, Keep: 0} }},
		{"logs.keep max", func(c *Config) { c.Logs.Keep = 10 }},
		{"reconcile.interval 1s", func(c *Config) { c.Reconcile.Interval = Duration(time.Second) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.modify(c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate() = %v", err)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := Default()
	c.Cgroup.Parent = "ward"
	c.Ports.Min = 80
	c.OOM.Policy = "ignore"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate() = %T, want an errors.Join result", err)
	}
	if n := len(joined.Unwrap()); n != 3 {
		t.Errorf("Validate() reported %d violations, want 3:\n%v", n, err)
	}
	msg := err.Error()
	for _, want := range []string{
		`cgroup.parent: must be an absolute path, got "ward"`,
		"ports.min: ",
		"oom.policy: ",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Validate() = %q, want it to contain %q", msg, want)
		}
	}
}
