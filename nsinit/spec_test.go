package nsinit

import (
	"errors"
	"reflect"
	"syscall"
	"testing"
)

func TestSpecRoundTrip(t *testing.T) {
	for _, s := range []*Spec{
		{UID: 20001, GID: 20000, Dir: "/srv/i/x", NOFILE: 4096, Path: "/bin/sh", Argv: []string{"sh", "-c", "echo -- -uid 0"}, Env: []string{"A=-env", "B="}},
		{UID: 1, GID: 2, Dir: "/d", NOFILE: 64, Namespaces: true, Hostname: "web-0", Writable: "/var/lib/ward/instances/x",
			TmpBytes: 1 << 20, Hide: []string{"/etc/ward", "/var/lib/ward"}, Cgroup2: true, Filter: []byte{6, 0, 0, 0, 0, 0, 0xff, 0x7f}, Path: "/p", Argv: []string{"p", "--"}},
	} {
		got, err := Parse(s.Args())
		if err != nil {
			t.Fatalf("Parse(%q): %v", s.Args(), err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("round trip\n%+v\nwant\n%+v", got, s)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	ok := (&Spec{UID: 1, GID: 1, Dir: "/d", NOFILE: 64, Namespaces: true, Hostname: "h", Writable: "/w", TmpBytes: 1, Filter: []byte{1}, Path: "/p", Argv: []string{"p"}}).Args()
	for _, c := range []struct {
		what string
		args []string
	}{
		{"no program", []string{"-uid", "1", "-nofile", "64", "-dir", "/d", "--"}},
		{"no argv", []string{"-uid", "1", "-nofile", "64", "-dir", "/d", "--", "/p"}},
		{"unknown flag", append([]string{"-cap", "all"}, ok...)},
		{"flag without a value", []string{"-uid"}},
		{"bad uid", append([]string{"-uid", "root"}, ok...)},
		{"relative dir", replace(ok, "/d", "d")},
		{"relative program", replace(ok, "/p", "p")},
		{"relative hide", append([]string{"-hide", "etc"}, ok...)},
		{"zero nofile", replace(ok, "64", "0")},
		{"namespaces without a filter", replace(ok, "01", "")},
		{"filter not hex", replace(ok, "01", "0x")},
	} {
		if _, err := Parse(c.args); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: Parse(%q) = %v, want ErrUsage", c.what, c.args, err)
		}
	}
}

func replace(args []string, from, to string) []string {
	out := append([]string(nil), args...)
	for i, a := range out {
		if a == from {
			out[i] = to
		}
	}
	return out
}

func TestFailureEncoding(t *testing.T) {
	f := &Failure{Step: StepExec, Errno: syscall.ENOENT, Detail: "/bin/x\x00y"}
	got, err := DecodeFailure(f.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Step != f.Step || got.Errno != f.Errno || got.Detail != f.Detail {
		t.Errorf("decoded %+v, want %+v", got, f)
	}
	if !errors.Is(got, syscall.ENOENT) {
		t.Errorf("%v does not wrap ENOENT", got)
	}
	for _, b := range []string{"", "exec", "exec\x00x\x00d", "exec\x00-1\x00d"} {
		if _, err := DecodeFailure([]byte(b)); err == nil {
			t.Errorf("DecodeFailure(%q) accepted", b)
		}
	}
}
