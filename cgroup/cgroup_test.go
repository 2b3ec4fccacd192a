package cgroup

import (
	"strings"
	"testing"
)

func TestSharesToWeight(t *testing.T) {
	for _, tc := range []struct{ shares, weight uint64 }{
		{0, 0}, // unset stays unset
		{1, 1},
		{2, 1},
		{1024, 100},
		{262144, 10000},
		{1 << 20, 10000},
	} {
		if got := SharesToWeight(tc.shares); got != tc.weight {
			t.Errorf("SharesToWeight(%d) = %d, want %d", tc.shares, got, tc.weight)
		}
	}
	prev := SharesToWeight(2)
	for s := uint64(3); s <= 262144; s++ {
		w := SharesToWeight(s)
		if w < prev || w < 1 || w > 10000 {
			t.Fatalf("SharesToWeight(%d) = %d after %d: not monotonic within [1, 10000]", s, w, prev)
		}
		prev = w
	}
}

func TestWeightToSharesRoundTrip(t *testing.T) {
	for _, tc := range []struct{ weight, shares uint64 }{
		{0, 0}, {1, 2}, {100, 1024}, {10000, 262144},
	} {
		if got := weightToShares(tc.weight); got != tc.shares {
			t.Errorf("weightToShares(%d) = %d, want %d", tc.weight, got, tc.shares)
		}
	}
	for w := uint64(1); w <= 10000; w++ {
		s := weightToShares(w)
		if got := SharesToWeight(s); got != w {
			t.Fatalf("SharesToWeight(weightToShares(%d) = %d) = %d", w, s, got)
		}
		if s < 262144 && SharesToWeight(s+1) == w {
			t.Fatalf("weightToShares(%d) = %d is not the largest share count with that weight", w, s)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // error substring; "" for valid
	}{
		{Config{Parent: "/ward"}, ""},
		{Config{Parent: "/ward/apps", Root: "/tmp/x/"}, ""},
		{Config{}, "parent is required"},
		{Config{Parent: "ward"}, "not absolute"},
		{Config{Parent: "/ward/"}, "not clean"},
		{Config{Parent: "/a/../ward"}, "not clean"},
		{Config{Parent: "/"}, `must not be "/"`},
		{Config{Parent: "/ward", Root: "sys/fs/cgroup"}, "not absolute"},
		{Config{Parent: "/ward", Mode: 3}, "invalid mode"},
	} {
		got, err := tc.cfg.validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("validate(%+v): %v", tc.cfg, err)
		case tc.want == "" && (got.Root == "" || strings.HasSuffix(got.Root, "/")):
			t.Errorf("validate(%+v): root %q not defaulted and cleaned", tc.cfg, got.Root)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("validate(%+v) = %v, want error containing %q", tc.cfg, err, tc.want)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, name := range []string{"shop-web-0-7f3c9a", "a", "x.y", "..."} {
		if err := validName(name); err != nil {
			t.Errorf("validName(%q): %v", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "/a", "a/", "a\x00b"} {
		if err := validName(name); err == nil {
			t.Errorf("validName(%q) accepted", name)
		}
	}
}

func TestModeString(t *testing.T) {
	if V1.String() != "v1" || V2.String() != "v2" || Mode(0).String() != "Mode(0)" {
		t.Errorf("got %s %s %s", V1, V2, Mode(0))
	}
}
