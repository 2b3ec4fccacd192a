package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParse checks that Parse never panics, and that whatever it accepts is
// valid and survives a marshal/parse round trip unchanged.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "~", "ports: {min: 62000}", "report: {interval: 2}", "bogus: 1",
		"acl: {deny: [/x, y]}", "nats: {servers: []}", "a: &a [*a]", "---\n---\n",
		"report: {weights: {host: .nan}}", "stop: {timeout: -1s}",
	} {
		f.Add([]byte(s))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted an invalid config: %v", err)
		}
		b, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)): %v\n%s", err, b)
		}
		// `deny: ~` decodes to nil and marshals as []: the same empty list.
		if len(c.ACL.Deny) == 0 && len(again.ACL.Deny) == 0 {
			c.ACL.Deny, again.ACL.Deny = nil, nil
		}
		if len(c.Isolation.Hide) == 0 && len(again.Isolation.Hide) == 0 {
			c.Isolation.Hide, again.Isolation.Hide = nil, nil
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", c, again)
		}
	})
}
