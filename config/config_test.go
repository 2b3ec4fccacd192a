package config

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// leaves flattens a Config into YAML key path → value, so tests can check
// every key without listing the struct by hand twice.
func leaves(c *Config) map[string]any {
	out := map[string]any{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			key := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			if prefix != "" {
				key = prefix + "." + key
			}
			f := v.Field(i)
			if f.Kind() == reflect.Struct {
				walk(f, key)
				continue
			}
			out[key] = f.Interface()
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

func TestDefaults(t *testing.T) {
	want := map[string]any{
		"host_id":                 hostname(),
		"state_dir":               "/var/lib/ward",
		"socket":                  "/run/ward/ward.sock",
		"cgroup.parent":           "/ward",
		"users.uid_min":           20000,
		"users.uid_max":           29999,
		"users.group":             "ward",
		"users.gid":               20000,
		"users.create_passwd":     false,
		"ports.min":               61000,
		"ports.max":               64999,
		"defaults.memory_bytes":   int64(268435456),
		"defaults.swap_bytes":     int64(0),
		"defaults.cpu_shares":     int64(1024),
		"defaults.cpu_millicores": int64(0),
		"defaults.pids":           int64(512),
		"defaults.disk_bytes":     int64(1073741824),
		"quota.backend":           QuotaNone,
		"quota.path":              "",
		"acl.deny":                DefaultDeny(),
		"nats.servers":            []string{"nats://127.0.0.1:4222"},
		"nats.user":               "",
		"nats.password":           "",
		"nats.token":              "",
		"nats.nkey_seed_file":     "",
		"nats.creds_file":         "",
		"nats.tls.ca_file":        "",
		"nats.tls.cert_file":      "",
		"nats.tls.key_file":       "",
		"report.interval":         Duration(2 * time.Second),
		"report.weights.host":     0.3,
		"report.weights.instance": 0.7,
		"report.weights.cpu":      0.3,
		"report.weights.memory":   0.7,
		"oom.policy":              OOMKill,
		"metrics.listen":          "",
		"stop.timeout":            Duration(10 * time.Second),
		"logs.max_bytes":          int64(10 << 20),
		"logs.keep":               1,
		"reconcile.interval":      Duration(30 * time.Second),
		"isolation.mode":          IsolationNamespaces,
		"isolation.tmp_bytes":     int64(64 << 20),
		"isolation.nofile":        uint64(65536),
		"isolation.hide":          []string{},
	}
	got := leaves(Default())
	for key, w := range want {
		if g, ok := got[key]; !ok {
			t.Errorf("%s: no such key in Config", key)
		} else if !reflect.DeepEqual(g, w) {
			t.Errorf("%s = %#v, want %#v", key, g, w)
		}
	}
	for key := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("%s: key has no expected default in this test", key)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
}

func TestDefaultDeny(t *testing.T) {
	d := DefaultDeny()
	for _, p := range []string{"/usr/bin/sudo", "/bin/su", "/usr/bin/curl", "/usr/bin/gcc", "/usr/sbin/chroot", "/usr/bin/telnet"} {
		if !slices.Contains(d, p) {
			t.Errorf("DefaultDeny() lacks %s", p)
		}
	}
	if len(d) != 39 {
		t.Errorf("len(DefaultDeny()) = %d, want 39", len(d))
	}
	d[0] = "/changed"
	if DefaultDeny()[0] == "/changed" || Default().ACL.Deny[0] == "/changed" {
		t.Error("DefaultDeny() shares its backing array")
	}
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFull(t *testing.T) {
	got, err := Parse(mustRead(t, "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		HostID:   "dea-42.example",
		StateDir: "/srv/ward/state",
		Socket:   "/srv/ward/ward.sock",
		Cgroup:   Cgroup{Parent: "/paas/ward"},
		Users:    Users{UIDMin: 40000, UIDMax: 40999, Group: "wardapps", GID: 40000, CreatePasswd: true},
		Ports:    Ports{Min: 50000, Max: 50999},
		Defaults: Limits{MemoryBytes: 512 << 20, SwapBytes: 128 << 20, CPUShares: 512, CPUMillicores: 1500, Pids: 256, DiskBytes: 2 << 30},
		Quota:    Quota{Backend: "project", Path: "/srv/ward"},
		ACL:      ACL{Deny: []string{"/usr/bin/sudo", "/usr/local/bin/custom-tool"}},
		NATS: NATS{
			Servers:   []string{"tls://nats-1.example:4222", "nats-2.example:4222", "wss://nats-3.example:443"},
			CredsFile: "/etc/ward/ward.creds",
			TLS:       TLS{CAFile: "/etc/ward/ca.pem", CertFile: "/etc/ward/cert.pem", KeyFile: "/etc/ward/key.pem"},
		},
		Report:    Report{Interval: Duration(500 * time.Millisecond), Weights: Weights{Host: 0.5, Instance: 0.5, CPU: 0.6, Memory: 0.4}},
		OOM:       OOM{Policy: "notify"},
		Metrics:   Metrics{Listen: "127.0.0.1:9102"},
		Stop:      Stop{Timeout: Duration(90 * time.Second)},
		Logs:      Logs{MaxBytes: 1 << 20, Keep: 3},
		Reconcile: Reconcile{Interval: Duration(time.Minute)},
		Isolation: Isolation{Mode: IsolationUID, TmpBytes: 32 << 20, NOFILE: 4096, Hide: []string{"/srv/secrets"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Parse(full.yaml) =\n%+v\nwant\n%+v", got, want)
	}

	// full.yaml must set every key to a non-default value, or the test above
	// could not tell a parsed value from a kept default. The auth keys are
	// exempt: only one method may be set, and creds_file stands for them.
	exempt := map[string]bool{"nats.user": true, "nats.password": true, "nats.token": true, "nats.nkey_seed_file": true}
	def := leaves(Default())
	for key, v := range leaves(got) {
		if !exempt[key] && reflect.DeepEqual(v, def[key]) {
			t.Errorf("full.yaml: %s keeps its default %#v", key, v)
		}
	}
}

func TestParseExample(t *testing.T) {
	c, err := Parse(mustRead(t, "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.HostID = "dea-01"
	want.ACL.Deny = []string{"/usr/bin/sudo", "/bin/su", "/usr/bin/curl"}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(example.yaml) =\n%+v\nwant\n%+v", c, want)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "\n", "# only a comment\n", "---\n", "~\n"} {
		c, err := Parse([]byte(in))
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		if !reflect.DeepEqual(c, Default()) {
			t.Errorf("Parse(%q) = %+v, want defaults", in, c)
		}
	}
}

func TestParsePartialKeepsDefaults(t *testing.T) {
	for _, tc := range []struct {
		in     string
		modify func(*Config)
	}{
		{"ports: {min: 62000}", func(c *Config) { c.Ports.Min = 62000 }},
		{"defaults:\n  pids: 64\n", func(c *Config) { c.Defaults.Pids = 64 }},
		{"report: {weights: {cpu: 0.5, memory: 0.5}}", func(c *Config) { c.Report.Weights.CPU, c.Report.Weights.Memory = 0.5, 0.5 }},
		{"nats: {tls: {ca_file: /ca.pem}}", func(c *Config) { c.NATS.TLS.CAFile = "/ca.pem" }},
		// A list replaces the default list; it is not appended to.
		{"acl: {deny: [/x]}", func(c *Config) { c.ACL.Deny = []string{"/x"} }},
		{"acl: {deny: []}", func(c *Config) { c.ACL.Deny = []string{} }},
		// An empty section is null in YAML and keeps the defaults.
		{"cgroup:\nusers:\n", func(c *Config) {}},
	} {
		got, err := Parse([]byte(tc.in))
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		want := Default()
		tc.modify(want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Parse(%q) =\n%+v\nwant\n%+v", tc.in, got, want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"bogus: 1", "bogus"},
		{"ports: {min: 62000, mx: 1}", "mx"},
		{"nats: {tls: {ca: /x}}", "ca"},
		{"report: {interval: 2}", "invalid duration"},
		{"report: {interval: [1]}", "duration"},
		{"ports: {min: lots}", "lots"},
		{"host_id: a\n---\nhost_id: b\n", "more than one YAML document"},
		{"ports: [", "yaml"},
		// Decoding succeeds but validation does not.
		{"ports: {min: 80}", "ports.min"},
	} {
		_, err := Parse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestDurationRoundTrip(t *testing.T) {
	for _, d := range []time.Duration{0, 500 * time.Millisecond, 2 * time.Second, 90 * time.Second, 26 * time.Hour} {
		in := struct {
			D Duration `yaml:"d" json:"d"`
		}{Duration(d)}
		out := in
		out.D = -1

		b, err := yaml.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if want := "d: " + d.String() + "\n"; string(b) != want {
			t.Errorf("yaml.Marshal(%v) = %q, want %q", d, b, want)
		}
		if err := yaml.Unmarshal(b, &out); err != nil || out.D.D() != d {
			t.Errorf("yaml round trip of %v = %v, %v", d, out.D, err)
		}

		out.D = -1
		j, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(j, &out); err != nil || out.D.D() != d {
			t.Errorf("json round trip of %v via %s = %v, %v", d, j, out.D, err)
		}
	}
}

// Marshalling a Config and parsing it back must give the same Config: every
// field has a tag and every value survives YAML.
func TestMarshalRoundTrip(t *testing.T) {
	for _, name := range []string{"", "full.yaml"} {
		c := Default()
		if name != "" {
			var err error
			if c, err = Parse(mustRead(t, name)); err != nil {
				t.Fatal(err)
			}
		}
		b, err := yaml.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(%q)): %v\n%s", name, err, b)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip of %q =\n%+v\nwant\n%+v", name, got, c)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	c, err := Load(filepath.Join("testdata", "full.yaml"))
	if err != nil || c.HostID != "dea-42.example" {
		t.Errorf("Load(full.yaml) = %+v, %v", c, err)
	}

	missing := filepath.Join(dir, "nope.yaml")
	if _, err := Load(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want fs.ErrNotExist", err)
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("cgroup: {parent: ward}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "cgroup.parent") {
		t.Errorf("Load(bad) = %v, want an error naming the file and cgroup.parent", err)
	}
}

func TestDev(t *testing.T) {
	// Dev touches no files; a fixed path keeps the test portable.
	const dir = "/tmp/ward-dev-1234"
	c := Dev(dir)
	want := Default()
	want.StateDir = dir
	want.Cgroup.Parent = "/ward-dev"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Dev(%q) =\n%+v\nwant\n%+v", dir, c, want)
	}
	if c.Socket != "/run/ward/ward.sock" {
		t.Errorf("Dev socket = %q, want the default so the CLI finds it", c.Socket)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Dev(%q).Validate() = %v", dir, err)
	}
}
