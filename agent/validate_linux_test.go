package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hostward/ward/api"
)

func TestBadInputNamesFieldAndCreatesNothing(t *testing.T) {
	a := newTestAgent(t, nil)
	ok := func() api.Request {
		return api.Request{Name: "web", Command: sh("sleep 1000")}
	}
	port := func(p int) *int { return &p }
	long := strings.Repeat("a", 65)
	cases := []struct {
		field  string
		mutate func(*api.Request)
	}{
		{"id", func(r *api.Request) { r.ID = "a/b" }},
		{"id", func(r *api.Request) { r.ID = ".." }},
		{"id", func(r *api.Request) { r.ID = ".hidden" }},
		{"id", func(r *api.Request) { r.ID = long }},
		{"id", func(r *api.Request) { r.ID = "a b" }},
		{"id", func(r *api.Request) { r.ID = "é" }},
		{"name", func(r *api.Request) { r.Name = "" }},
		{"name", func(r *api.Request) { r.Name = "../etc" }},
		{"name", func(r *api.Request) { r.Name = long }},
		{"name", func(r *api.Request) { r.Name = "web/1" }},
		{"index", func(r *api.Request) { r.Index = -1 }},
		{"index", func(r *api.Request) { r.Index = 1 << 40 }},
		{"command", func(r *api.Request) { r.Command = nil }},
		{"command[0]", func(r *api.Request) { r.Command = []string{""} }},
		{"command[0]", func(r *api.Request) { r.Command = []string{"bin/sh"} }},
		{"command[0]", func(r *api.Request) { r.Command = []string{"no-such-program-ward"} }},
		{"command[0]", func(r *api.Request) { r.Command = []string{"/etc/passwd"} }},
		{"command[1]", func(r *api.Request) { r.Command = []string{"/bin/echo", "a\x00b"} }},
		{"command", func(r *api.Request) { r.Command = []string{"/bin/echo", strings.Repeat("x", 200<<10)} }},
		{"env.PORT", func(r *api.Request) { r.Env = map[string]string{"PORT": "1"} }},
		{"env.HOME", func(r *api.Request) { r.Env = map[string]string{"HOME": "/"} }},
		{"env", func(r *api.Request) { r.Env = map[string]string{"1A": "x"} }},
		{"env", func(r *api.Request) { r.Env = map[string]string{"A=B": "x"} }},
		{"env.A", func(r *api.Request) { r.Env = map[string]string{"A": "x\x00"} }},
		{"limits.memory_bytes", func(r *api.Request) { r.Limits.MemoryBytes = i64(-1) }},
		{"limits.memory_bytes", func(r *api.Request) { r.Limits.MemoryBytes = i64(0) }},
		{"limits.memory_bytes", func(r *api.Request) { r.Limits.MemoryBytes = i64(4096) }},
		{"limits.memory_bytes", func(r *api.Request) { r.Limits.MemoryBytes = i64(1 << 62) }},
		{"limits.swap_bytes", func(r *api.Request) { r.Limits.SwapBytes = i64(-1) }},
		{"limits.swap_bytes", func(r *api.Request) { r.Limits.SwapBytes = i64(1 << 50) }},
		{"limits.cpu_shares", func(r *api.Request) { r.Limits.CPUShares = i64(0) }},
		{"limits.cpu_shares", func(r *api.Request) { r.Limits.CPUShares = i64(1) }},
		{"limits.cpu_shares", func(r *api.Request) { r.Limits.CPUShares = i64(1 << 20) }},
		{"limits.cpu_millicores", func(r *api.Request) { r.Limits.CPUMillicores = i64(-1) }},
		{"limits.cpu_millicores", func(r *api.Request) { r.Limits.CPUMillicores = i64(5) }},
		{"limits.cpu_millicores", func(r *api.Request) { r.Limits.CPUMillicores = i64(1_000_000) }},
		{"limits.pids", func(r *api.Request) { r.Limits.Pids = i64(0) }},
		{"limits.pids", func(r *api.Request) { r.Limits.Pids = i64(-5) }},
		{"limits.pids", func(r *api.Request) { r.Limits.Pids = i64(1 << 40) }},
		{"limits.disk_bytes", func(r *api.Request) { r.Limits.DiskBytes = i64(-1) }},
		{"limits.disk_bytes", func(r *api.Request) { r.Limits.DiskBytes = i64(100) }},
		{"limits.disk_bytes", func(r *api.Request) { r.Limits.DiskBytes = i64(1 << 60) }},
		{"port", func(r *api.Request) { r.Port = port(80) }},
		{"port", func(r *api.Request) { r.Port = port(-1) }},
		{"port", func(r *api.Request) { r.Port = port(70000) }},
		{"routes", func(r *api.Request) { r.Routes = []string{"shop.example.com"} }},
		{"routes[0]", func(r *api.Request) { r.Port = port(0); r.Routes = []string{"bad host"} }},
		{"routes[1]", func(r *api.Request) { r.Port = port(0); r.Routes = []string{"ok.com", "-x.com"} }},
		{"health_check.type", func(r *api.Request) { r.Port = port(0); r.HealthCheck = &api.HealthCheck{Type: "udp"} }},
		{"health_check.path", func(r *api.Request) { r.Port = port(0); r.HealthCheck = &api.HealthCheck{Type: "http"} }},
		{"health_check", func(r *api.Request) { r.HealthCheck = &api.HealthCheck{Type: "tcp"} }},
		{"health_check.interval_ms", func(r *api.Request) {
			r.Port = port(0)
			r.HealthCheck = &api.HealthCheck{Type: "tcp", IntervalMS: 1}
		}},
		{"health_check.timeout_ms", func(r *api.Request) {
			r.Port = port(0)
			r.HealthCheck = &api.HealthCheck{Type: "tcp", IntervalMS: 1000, TimeoutMS: 5000}
		}},
	}
	for _, c := range cases {
		req := ok()
		c.mutate(&req)
		_, err := a.Start(context.Background(), req)
		if !errors.Is(err, api.ErrInvalidArgument) {
			t.Errorf("%s: %+v: got %v, want invalid_argument", c.field, req, err)
			continue
		}
		if f := api.AsError(err).Field; f != c.field {
			t.Errorf("%s: error names field %q: %v", c.field, f, err)
		}
	}
	if l, _ := a.List(context.Background(), api.ListRequest{}); len(l.Instances) != 0 {
		t.Fatalf("refused requests left %d instances", len(l.Instances))
	}
	checkNoLeaks(t, a.cfg)
	if n := len(a.ports.Leased()) + len(a.uids.Leased()); n != 0 {
		t.Fatalf("refused requests left %d leases", n)
	}
	// The same request, valid, starts: the table tested only what it meant to.
	mustStart(t, a, ok())
}

func TestLimitValidation(t *testing.T) {
	a := newTestAgent(t, nil)
	inst := mustStart(t, a, api.Request{Name: "lim", Command: sh("sleep 1000")})
	for _, c := range []struct {
		field string
		l     api.Limits
	}{
		{"limits", api.Limits{}},
		{"limits.memory_bytes", api.Limits{MemoryBytes: i64(-1)}},
		{"limits.pids", api.Limits{Pids: i64(0)}},
		{"limits.cpu_millicores", api.Limits{CPUMillicores: i64(3)}},
	} {
		_, err := a.Limit(context.Background(), api.LimitRequest{ID: inst.ID, Limits: c.l})
		if !errors.Is(err, api.ErrInvalidArgument) || api.AsError(err).Field != c.field {
			t.Errorf("%s: %v", c.field, err)
		}
	}
	if _, err := a.Limit(context.Background(), api.LimitRequest{ID: "nope", Limits: api.Limits{Pids: i64(9)}}); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	got, _ := a.Info(context.Background(), api.InfoRequest{ID: inst.ID})
	if *got.Limits.Pids != 512 || *got.Limits.MemoryBytes != 256<<20 {
		t.Fatalf("refused limit changes altered the instance: %+v", got.Limits)
	}
}

func TestDecodeRefusesAndNamesField(t *testing.T) {
	for _, c := range []struct {
		body, field string
	}{
		{`{"name":"a","command":["/bin/true"],"bogus":1}`, "bogus"},
		{`{"name":"a","command":"/bin/true"}`, "command"},
		{`{"name":"a","limits":{"memory_bytes":"1G"}}`, "limits.memory_bytes"},
		{`{"name":"a","index":1.5}`, "index"},
		{`{"name":"a"} {"name":"b"}`, ""},
		{`{"name":`, ""},
		{``, ""},
		{`[]`, "request"},
	} {
		var r api.Request
		err := api.Decode([]byte(c.body), &r)
		if !errors.Is(err, api.ErrInvalidArgument) || api.AsError(err).Field != c.field {
			t.Errorf("%s: %v (field %q), want field %q", c.body, err, api.AsError(err).Field, c.field)
		}
	}
	big := `{"name":"` + strings.Repeat("a", api.MaxRequestBytes) + `"}`
	if err := api.Decode([]byte(big), &api.Request{}); !errors.Is(err, api.ErrInvalidArgument) {
		t.Errorf("oversized request: %v", err)
	}
}
