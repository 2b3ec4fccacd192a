package oom

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hostward/ward/cgroup"
)

func TestKeyed(t *testing.T) {
	oomControl := "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n"
	events := "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 1\n"
	for _, tc := range []struct {
		in, key string
		want    uint64
		ok      bool
	}{
		{oomControl, "oom_kill", 7, true},
		{oomControl, "oom_kill_disable", 0, true},
		{events, "oom", 3, true},
		{events, "oom_kill", 2, true},
		{events, "oom_group_kill", 1, true},
		{"oom_kill 5", "oom_kill", 5, true}, // no trailing newline
		{events, "missing", 0, false},
		{"oom_kill x\n", "oom_kill", 0, false},
		{"", "oom_kill", 0, false},
		{"populated 1\nfrozen 0\n", "populated", 1, true},
	} {
		got, ok := keyed([]byte(tc.in), tc.key)
		if got != tc.want || ok != tc.ok {
			t.Errorf("keyed(%q, %q) = %d, %v; want %d, %v", tc.in, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseTrigger(t *testing.T) {
	for _, tc := range []struct {
		in, kind string
		ok       bool
	}{
		{"some 150000 1000000", "some", true},
		{"full 500000 500000", "full", true},
		{"some 1 10000000", "some", true},
		{"some 150000", "", false},
		{"half 150000 1000000", "", false},
		{"some 150000 499999", "", false},
		{"some 150000 10000001", "", false},
		{"some 0 1000000", "", false},
		{"some 1000001 1000000", "", false},
		{"some -1 1000000", "", false},
		{"some 1.5 1000000", "", false},
	} {
		kind, err := parseTrigger(tc.in)
		if kind != tc.kind || (err == nil) != tc.ok {
			t.Errorf("parseTrigger(%q) = %q, %v; want %q, ok %v", tc.in, kind, err, tc.kind, tc.ok)
		}
	}
}

func TestPressureDefaults(t *testing.T) {
	p, err := PressureConfig{}.validate()
	if err != nil {
		t.Fatal(err)
	}
	if p.MinInterval != DefaultMinInterval || strings.Join(p.V1Levels, ",") != "medium,critical" || len(p.V2Triggers) != 1 {
		t.Errorf("defaults %+v", p)
	}
}

func TestLimiter(t *testing.T) {
	l := limiter{every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		level string
		at    time.Duration
		want  bool
	}{
		{"medium", 0, true},
		{"medium", time.Second, false},
		{"critical", time.Second, true}, // levels are limited separately
		{"medium", 9999 * time.Millisecond, false},
		{"medium", 10 * time.Second, true},
		{"critical", 10 * time.Second, false},
		{"medium", 15 * time.Second, false}, // counted from the last event sent
		{"critical", 11 * time.Second, true},
	}
	for i, s := range steps {
		if got := l.allow(s.level, t0.Add(s.at)); got != s.want {
			t.Errorf("step %d: allow(%s, +%v) = %v, want %v", i, s.level, s.at, got, s.want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{OOM: "oom", Pressure: "pressure", Empty: "empty", Removed: "removed", 0: "Kind(0)"} {
		if k.String() != want {
			t.Errorf("%d: %q, want %q", int(k), k.String(), want)
		}
	}
}

func TestOOMKillsFromFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "memory.oom_control"), []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "memory.events"), []byte("low 0\nhigh 0\nmax 0\noom 9\noom_kill 6\noom_group_kill 0\n"), 0o644)
	if n, err := OOMKills(cgroup.V1, dir); n != 4 || err != nil {
		t.Errorf("v1: %d, %v; want 4", n, err)
	}
	if n, err := OOMKills(cgroup.V2, dir); n != 6 || err != nil {
		t.Errorf("v2: %d, %v; want 6 (oom_kill, not oom)", n, err)
	}
	if _, err := OOMKills(cgroup.V2, filepath.Join(dir, "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing group: %v, want fs.ErrNotExist", err)
	}
	if _, err := OOMKills(0, dir); err == nil || !strings.Contains(err.Error(), "mode") {
		t.Errorf("mode 0: %v, want an error naming the mode", err)
	}
	os.WriteFile(filepath.Join(dir, "memory.events"), []byte("oom 1\n"), 0o644)
	if _, err := OOMKills(cgroup.V2, dir); err == nil || !strings.Contains(err.Error(), "oom_kill") {
		t.Errorf("memory.events without oom_kill: %v, want an error naming oom_kill", err)
	}
}
