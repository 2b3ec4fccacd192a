package main

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hostward/ward/api"
)

func f64(v float64) *float64 { return &v }
func u64(v uint64) *uint64   { return &v }
func strp(s string) *string  { return &s }

// fixture is an instance with the usage figures given; nil stays unknown.
func fixture(id, name string, index int, state api.State, cpu *float64, mem *uint64) api.Instance {
	return api.Instance{
		ID: id, Name: name, Index: index, State: state,
		Limits: api.Limits{MemoryBytes: i64(256 << 20), DiskBytes: i64(1 << 30)},
		Usage:  api.Usage{CPUPct: cpu, MemoryBytes: mem},
	}
}

func i64(v int64) *int64 { return &v }

func ids(ins []api.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.ID)
	}
	return out
}

func TestSortInstances(t *testing.T) {
	in := []api.Instance{
		fixture("e", "web", 1, api.StateRunning, f64(5), u64(10<<20)),
		fixture("a", "web", 0, api.StateRunning, f64(50), u64(1<<20)),
		fixture("d", "api", 0, api.StateExited, nil, nil),
		fixture("c", "web", 1, api.StateRunning, f64(5), u64(10<<20)),
		fixture("b", "db", 0, api.StateStarting, nil, u64(300<<20)),
	}
	orig := slices.Clone(ids(in))
	for _, tc := range []struct {
		key  sortKey
		want []string
	}{
		// Highest first, unknown last, ties (c and e; b and d for cpu) by id.
		{sortCPU, []string{"a", "c", "e", "b", "d"}},
		{sortMem, []string{"b", "c", "e", "a", "d"}},
		// Name, then index, then id.
		{sortName, []string{"d", "b", "a", "c", "e"}},
	} {
		got := ids(sortInstances(in, tc.key))
		if !slices.Equal(got, tc.want) {
			t.Errorf("sort %s: %v, want %v", tc.key, got, tc.want)
		}
		// Whatever order the agent lists them in.
		rev := slices.Clone(in)
		slices.Reverse(rev)
		if got := ids(sortInstances(rev, tc.key)); !slices.Equal(got, tc.want) {
			t.Errorf("sort %s of the reversed list: %v, want %v", tc.key, got, tc.want)
		}
	}
	if !slices.Equal(ids(in), orig) {
		t.Errorf("input reordered: %v", ids(in))
	}
}

func TestRenderSnapshot(t *testing.T) {
	healthy := fixture("4f1c2a9b7d3e", "shop-web", 0, api.StateRunning, f64(12.34), u64(40<<20))
	healthy.Usage.Pids, healthy.Usage.DiskBytes = u64(7), u64(3<<20)
	healthy.Health = strp("healthy")
	unlimited := fixture("0a", "batch", 12, api.StateRunning, f64(100), nil)
	unlimited.Limits = api.Limits{} // no memory limit, no quota
	ended := fixture("77", "old", 1, api.StateOOMKilled, nil, nil)
	f := topFrame{Agent: "/run/ward/ward.sock", Instances: []api.Instance{healthy, ended, unlimited}}

	got := renderTop(f, sortCPU, 0, 0)
	want := []string{
		"agent /run/ward/ward.sock  2 running of 3  cpu 112.3%  mem 40M  sort cpu",
		"ID            NAME        STATE        CPU%  MEM/LIMIT  DISK/LIMIT  PIDS  HEALTH",
		"0a            batch/12    running     100.0     -/none      -/none     -  -",
		"4f1c2a9b7d3e  shop-web/0  running      12.3   40M/256M       3M/1G     7  healthy",
		"77            old/1       oom_killed      -     -/256M        -/1G     -  -",
	}
	if !slices.Equal(got, want) {
		t.Errorf("snapshot:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestRenderHeaderTotals(t *testing.T) {
	f := topFrame{Agent: "s", Instances: []api.Instance{
		fixture("a", "x", 0, api.StateStopped, nil, nil),
	}}
	if got, want := renderTop(f, sortMem, 0, 0)[0], "agent s  0 running of 1  cpu -  mem -  sort mem"; got != want {
		t.Errorf("header with nothing known: %q, want %q", got, want)
	}
	f.Instances = append(f.Instances,
		fixture("b", "x", 1, api.StateRunning, f64(0.25), u64(1<<30)),
		fixture("c", "x", 2, api.StateRunning, f64(0.5), u64(512<<20)))
	f.Interval = time.Second
	if got, want := renderTop(f, sortName, 0, 0)[0], "agent s  2 running of 3  cpu 0.8%  mem 1.5G  sort name  keys: c m n q"; got != want {
		t.Errorf("header: %q, want %q", got, want)
	}
}

func TestRenderErrorLineKeepsLastTable(t *testing.T) {
	at := time.Date(2026, 1, 2, 15, 4, 5, 0, time.Local)
	f := topFrame{
		Agent:     "/s",
		Instances: []api.Instance{fixture("a", "web", 0, api.StateRunning, f64(1), u64(1))},
		Err:       errors.New("cannot reach the agent at /s: connection refused"),
		LastOK:    at,
		Interval:  2 * time.Second,
	}
	got := renderTop(f, sortCPU, 0, 0)
	if len(got) != 4 {
		t.Fatalf("want header, error, table header, one row; got\n%s", strings.Join(got, "\n"))
	}
	want := "error: cannot reach the agent at /s: connection refused; retrying every 2s; table from 15:04:05"
	if got[1] != want {
		t.Errorf("error line %q, want %q", got[1], want)
	}
	if !strings.HasPrefix(got[3], "a ") {
		t.Errorf("last table not kept: %q", got[3])
	}

	// Never reached: no table time.
	f.Instances, f.LastOK = nil, time.Time{}
	if got := renderTop(f, sortCPU, 0, 0)[1]; strings.Contains(got, "table from") {
		t.Errorf("error line claims a table: %q", got)
	}
}

func manyInstances(n int) []api.Instance {
	var out []api.Instance
	for i := range n {
		out = append(out, fixture(fmt.Sprintf("id%02d", i), "app", i, api.StateRunning, f64(float64(i)), u64(uint64(i)<<20)))
	}
	return out
}

func TestRenderFitsHeight(t *testing.T) {
	f := topFrame{Agent: "/s", Instances: manyInstances(10)}
	got := renderTop(f, sortCPU, 0, 5)
	if len(got) != 5 {
		t.Fatalf("%d lines for 5 rows:\n%s", len(got), strings.Join(got, "\n"))
	}
	// Header, table header, the two busiest, and a note for the 8 others.
	if !strings.HasPrefix(got[1], "ID ") || !strings.HasPrefix(got[2], "id09 ") || !strings.HasPrefix(got[3], "id08 ") {
		t.Errorf("wrong rows kept:\n%s", strings.Join(got, "\n"))
	}
	if got[4] != "... 8 more" {
		t.Errorf("last line %q, want %q", got[4], "... 8 more")
	}

	// Exactly enough room: no note.
	if got := renderTop(f, sortCPU, 0, 12); len(got) != 12 || strings.HasPrefix(got[11], "...") {
		t.Errorf("12 rows for 12 lines:\n%s", strings.Join(got, "\n"))
	}
	// A one-row table area is the note alone.
	if got := renderTop(f, sortCPU, 0, 2); len(got) != 2 || got[1] != "... 10 more" {
		t.Errorf("2 rows: %q", got)
	}
	// An error line takes a row of the table's.
	f.Err = errors.New("boom")
	if got := renderTop(f, sortCPU, 0, 5); len(got) != 5 || got[1] != "error: boom" || got[4] != "... 9 more" {
		t.Errorf("5 rows with an error:\n%s", strings.Join(got, "\n"))
	}
	// Smaller than the header.
	if got := renderTop(f, sortCPU, 0, 1); len(got) != 1 || !strings.HasPrefix(got[0], "agent /s") {
		t.Errorf("1 row: %q", got)
	}
}

func TestRenderFitsWidth(t *testing.T) {
	long := fixture("4f1c2a9b7d3e", "a-very-long-application-name", 3, api.StateRunning, f64(1), u64(1<<20))
	f := topFrame{Agent: "/run/ward/ward.sock", Instances: []api.Instance{long}}
	full := renderTop(f, sortCPU, 0, 0)
	fullW := utf8.RuneCountInString(full[1]) // the title row: no cell is blank-trimmed

	// Narrower by 10: only NAME gives way, marked, and the columns stay
	// aligned with their titles.
	got := renderTop(f, sortCPU, fullW-10, 0)
	for _, l := range got {
		if n := utf8.RuneCountInString(l); n > fullW-10 {
			t.Errorf("line of %d runes in %d columns: %q", n, fullW-10, l)
		}
	}
	if !strings.HasPrefix(got[2], "4f1c2a9b7d3e  a-very-long-applica~  running") {
		t.Errorf("name not shortened in place: %q", got[2])
	}
	if strings.Index(got[1], "STATE") != strings.Index(got[2], "running") {
		t.Errorf("columns misaligned:\n%s\n%s", got[1], got[2])
	}

	// Narrower than every column at its minimum: NAME and then ID shrink
	// to theirs, and the rest is cut at the edge.
	got = renderTop(f, sortCPU, 40, 0)
	for _, l := range got {
		if utf8.RuneCountInString(l) > 40 {
			t.Errorf("line wider than 40: %q", l)
		}
	}
	if !strings.HasPrefix(got[2], "4f1c2~  a-ver~  running") {
		t.Errorf("row at minimum widths: %q", got[2])
	}
}

func TestRenderSanitizes(t *testing.T) {
	in := fixture("a", "web", 0, api.StateRunning, nil, nil)
	in.Health = strp("bad\x1b[2J\nnews")
	got := renderTop(topFrame{Agent: "/s", Instances: []api.Instance{in}}, sortCPU, 0, 0)
	for _, l := range got {
		if strings.ContainsAny(l, "\x1b\n") {
			t.Errorf("control character reaches the terminal: %q", l)
		}
	}
	if !strings.HasSuffix(got[2], "bad?[2J?news") {
		t.Errorf("health cell %q", got[2])
	}
}

func TestTopUsage(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"top", "--sort", "size"}, exitUsage, `--sort: want cpu, mem or name, not "size"`},
		{[]string{"top", "--interval", "10ms"}, exitUsage, "--interval: want at least 100ms"},
		{[]string{"top", "--interval", "soon"}, exitUsage, "--interval"},
		{[]string{"top", "extra"}, exitUsage, `unexpected argument "extra"`},
		// stdout is not a terminal here: one snapshot, which fails.
		{[]string{"top", "--socket", sock}, exitRefused, "cannot reach the agent at " + sock},
		{[]string{"top", "--once", "--socket", sock}, exitRefused, "cannot reach the agent at " + sock},
	} {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed %q", tc.args, out.String())
		}
	}
}

func TestKeysIn(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"m", "m"},
		{"cmq", "cmq"},
		{"\x1b[C", ""},           // right arrow: its C is not "sort by cpu"
		{"\x1b[Cm\x1bOAn", "mn"}, // keys around CSI and SS3 sequences
		{"\x1b[1;5Dq", "q"},      // Ctrl+left, with parameters
		{"\x1bc", ""},            // Alt+c
		{"\x1b", ""},             // Esc alone
		{"\x03", "\x03"},         // Ctrl-C stays a key
	} {
		if got := string(keysIn([]byte(tc.in))); got != tc.want {
			t.Errorf("keysIn(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
