package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestBadInputNamesFieldAndCreatesNothing(t *testing.T) {
	a := newTestAgent(t, nil)
	ok := func() Request {
		return Request{Name: "web", Command: sh("sleep 1000")}
	}
	port := func(p int) *int { return &p }
	long := strings.Repeat("a", 65)
	cases := []struct {
		field  string
		mutate func(*Request)
	}{
		{"id", func(r *Request) { r.ID = "a/b" }},
		{"id", func(r *Request) { r.ID = ".." }},
		{"id", func(r *Request) { r.ID = ".hidden" }},
		{"id", func(r *Request) { r.ID = long }},
		{"id", func(r *Request) { r.ID = "a b" }},
		{"id", func(r *Request) { r.ID = "é" }},
		{"name", func(r *Request) { r.Name = "" }},
		{"name", func(r *Request) { r.Name = "../etc" }},
		{"name", func(r *Request) { r.Name = long }},
		{"name", func(r *Request) { r.Name = "web/1" }},
		{"index", func(r *Request) { r.Index = -1 }},
		{"index", func(r *Request) { r.Index = 1 << 40 }},
		{"command", func(r *Request) { r.Command = nil }},
		{"command[0]", func(r *Request) { r.Command = []string{""} }},
		{"command[0]", func(r *Request) { r.Command = []string{"bin/sh"} }},
		{"command[0]", func(r *Request) { r.Command = []string{"no-such-program-ward"} }},
		{"command[0]", func(r *Request) { r.Command = []string{"/etc/passwd"} }},
		{"command[1]", func(r *Request) { r.Command = []string{"/bin/echo", "a\x00b"} }},
		{"command", func(r *Request) { r.Command = []string{"/bin/echo", strings.Repeat("x", 200<<10)} }},
		{"env.PORT", func(r *Request) { r.Env = map[string]string{"PORT": "1"} }},
		{"env.HOME", func(r *Request) { r.Env = map[string]string{"HOME": "/"} }},
		{"env", func(r *Request) { r.Env = map[string]string{"1A": "x"} }},
		{"env", func(r *Request) { r.Env = map[string]string{"A=B": "x"} }},
		{"env.A", func(r *Request) { r.Env = map[string]string{"A": "x\x00"} }},
		{"limits.memory_bytes", func(r *Request) { r.Limits.MemoryBytes = i64(-1) }},
		{"limits.memory_bytes", func(r *Request) { r.Limits.MemoryBytes = i64(0) }},
		{"limits.memory_bytes", func(r *Request) { r.Limits.MemoryBytes = i64(4096) }},
		{"limits.memory_bytes", func(r *Request) { r.Limits.MemoryBytes = i64(1 << 62) }},
		{"limits.swap_bytes", func(r *Request) { r.Limits.SwapBytes = i64(-1) }},
		{"limits.swap_bytes", func(r *Request) { r.Limits.SwapBytes = i64(1 << 50) }},
		{"limits.cpu_shares", func(r *Request) { r.Limits.CPUShares = i64(0) }},
		{"limits.cpu_shares", func(r *Request) { r.Limits.CPUShares = i64(1) }},
		{"limits.cpu_shares", func(r *Request) { r.Limits.CPUShares = i64(1 << 20) }},
		{"limits.cpu_millicores", func(r *Request) { r.Limits.CPUMillicores = i64(-1) }},
		{"limits.cpu_millicores", func(r *Request) { r.Limits.CPUMillicores = i64(5) }},
		{"limits.cpu_millicores", func(r *Request) { r.Limits.CPUMillicores = i64(1_000_000) }},
		{"limits.pids", func(r *Request) { r.Limits.Pids = i64(0) }},
		{"limits.pids", func(r *Request) { r.Limits.Pids = i64(-5) }},
		{"limits.pids", func(r *Request) { r.Limits.Pids = i64(1 << 40) }},
		{"limits.disk_bytes", func(r *Request) { r.Limits.DiskBytes = i64(-1) }},
		{"limits.disk_bytes", func(r *Request) { r.Limits.DiskBytes = i64(100) }},
		{"limits.disk_bytes", func(r *Request) { r.Limits.DiskBytes = i64(1 << 60) }},
		{"port", func(r *Request) { r.Port = port(80) }},
		{"port", func(r *Request) { r.Port = port(-1) }},
		{"port", func(r *Request) { r.Port = port(70000) }},
		{"routes", func(r *Request) { r.Routes = []string{"shop.example.com"} }},
		{"routes[0]", func(r *Request) { r.Port = port(0); r.Routes = []string{"bad host"} }},
		{"routes[1]", func(r *Request) { r.Port = port(0); r.Routes = []string{"ok.com", "-x.com"} }},
		{"health_check.type", func(r *Request) { r.Port = port(0); r.HealthCheck = &HealthCheck{Type: "udp"} }},
		{"health_check.path", func(r *Request) { r.Port = port(0); r.HealthCheck = &HealthCheck{Type: "http"} }},
		{"health_check", func(r *Request) { r.HealthCheck = &HealthCheck{Type: "tcp"} }},
		{"health_check.interval_ms", func(r *Request) {
			r.Port = port(0)
			r.HealthCheck = &HealthCheck{Type: "tcp", IntervalMS: 1}
		}},
		{"health_check.timeout_ms", func(r *Request) {
			r.Port = port(0)
			r.HealthCheck = &HealthCheck{Type: "tcp", IntervalMS: 1000, TimeoutMS: 5000}
		}},
	}
	for _, c := range cases {
		req := ok()
		c.mutate(&req)
		_, err := a.Start(context.Background(), req)
		if !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %+v: got %v, want invalid_argument", c.field, req, err)
			continue
		}
		if f := AsError(err).Field; f != c.field {
			t.Errorf("%s: error names field %q: %v", c.field, f, err)
		}
	}
	if l, _ := a.List(context.Background()); len(l.Instances) != 0 {
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
	inst := mustStart(t, a, Request{Name: "lim", Command: sh("sleep 1000")})
	for _, c := range []struct {
		field string
		l     Limits
	}{
		{"limits", Limits{}},
		{"limits.memory_bytes", Limits{MemoryBytes: i64(-1)}},
		{"limits.pids", Limits{Pids: i64(0)}},
		{"limits.cpu_millicores", Limits{CPUMillicores: i64(3)}},
	} {
		_, err := a.Limit(context.Background(), LimitRequest{ID: inst.ID, Limits: c.l})
		if !errors.Is(err, ErrInvalidArgument) || AsError(err).Field != c.field {
			t.Errorf("%s: %v", c.field, err)
		}
	}
	if _, err := a.Limit(context.Background(), LimitRequest{ID: "nope", Limits: Limits{Pids: i64(9)}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	got, _ := a.Info(context.Background(), InfoRequest{ID: inst.ID})
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
		var r Request
		err := Decode([]byte(c.body), &r)
		if !errors.Is(err, ErrInvalidArgument) || AsError(err).Field != c.field {
			t.Errorf("%s: %v (field %q), want field %q", c.body, err, AsError(err).Field, c.field)
		}
	}
	big := `{"name":"` + strings.Repeat("a", MaxRequestBytes) + `"}`
	if err := Decode([]byte(big), &Request{}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("oversized request: %v", err)
	}
}
