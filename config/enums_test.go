package config

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The typed keys read and write the plain words of the file format, and a
// word outside the list is refused at Parse naming the key and the list.
func TestEnumKeys(t *testing.T) {
	c, err := Parse([]byte("quota: {backend: btrfs, path: /srv}\noom: {policy: notify}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Quota.Backend != QuotaBtrfs || c.OOM.Policy != OOMNotify {
		t.Fatalf("parsed %q %q", c.Quota.Backend, c.OOM.Policy)
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"backend: btrfs\n", "policy: notify\n"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("marshalled config lacks %q:\n%s", want, b)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"quota: {backend: xfs}", `quota.backend: must be one of none, btrfs, project, user, got "xfs"`},
		{"quota: {backend: BTRFS}", `quota.backend: must be one of none, btrfs, project, user, got "BTRFS"`},
		{"quota: {backend: ''}", `quota.backend: must be one of none, btrfs, project, user, got ""`},
		{"oom: {policy: restart}", `oom.policy: must be one of kill, notify, got "restart"`},
		{"isolation: {mode: chroot}", `isolation.mode: must be one of namespaces, uid, got "chroot"`},
	} {
		if _, err := Parse([]byte(tc.in)); err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
	if _, err := Parse([]byte("quota: {backend: [btrfs]}")); err == nil {
		t.Error("a list for quota.backend accepted")
	}
	for _, b := range QuotaBackends {
		if !b.Valid() {
			t.Errorf("%q not Valid", b)
		}
	}
	for _, m := range IsolationModes {
		if !m.Valid() {
			t.Errorf("%q not Valid", m)
		}
	}
	for _, p := range OOMPolicies {
		if !p.Valid() {
			t.Errorf("%q not Valid", p)
		}
	}
}
