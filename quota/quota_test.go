package quota

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hostward/ward/config"
)

func TestNewRejectsBadArguments(t *testing.T) {
	for _, c := range []struct {
		kind        config.QuotaBackend
		path, field string
	}{
		{"zfs", "/srv", "kind"},
		{"", "/srv", "kind"},
		{"btrfs", "", "path"},
		{"project", "relative/dir", "path"},
		{"user", "", "path"},
		{"none", "rel", "path"},
	} {
		_, err := New(c.kind, c.path)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("New(%q, %q): err = %v, want one naming %q", c.kind, c.path, err, c.field)
		}
	}
	if b, err := New(config.QuotaNone, ""); err != nil || b.Name() != config.QuotaNone {
		t.Errorf("New(none, \"\") = %v, %v", b, err)
	}
}

func TestCheckTarget(t *testing.T) {
	for _, c := range []struct {
		t       Target
		root    string
		needUID bool
		field   string // "" = valid
	}{
		{Target{Dir: "/srv/i/a", UID: 5}, "/srv", true, ""},
		{Target{Dir: "/srv/a"}, "", false, ""},
		{Target{Dir: ""}, "", false, "target.dir"},
		{Target{Dir: "rel/a"}, "", false, "target.dir"},
		{Target{Dir: "/srv/./a"}, "", false, "target.dir"},
		{Target{Dir: "/srv/a/"}, "", false, "target.dir"},
		{Target{Dir: "/"}, "", false, "target.dir"},
		{Target{Dir: "/srv"}, "/srv", false, "target.dir"},
		{Target{Dir: "/srvx/a"}, "/srv", false, "target.dir"},
		{Target{Dir: "/other/a"}, "/srv", false, "target.dir"},
		{Target{Dir: "/srv/a", UID: 0}, "/srv", true, "target.uid"},
	} {
		err := checkTarget(c.t, c.root, c.needUID)
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%+v under %q: %v", c.t, c.root, err)
		case c.field != "" && (err == nil || !strings.Contains(err.Error(), c.field)):
			t.Errorf("%+v under %q: err = %v, want one naming %q", c.t, c.root, err, c.field)
		}
	}
}

func TestNoneBackend(t *testing.T) {
	root := t.TempDir()
	b, err := New(config.QuotaNone, root)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(); err != nil {
		t.Errorf("Verify: %v", err)
	}
	tg := Target{Dir: filepath.Join(root, "inst"), UID: 1234}
	if err := b.Create(tg, 1<<20); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(tg.Dir)
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("created %v, %v; want a 0700 directory", fi, err)
	}
	if err := os.WriteFile(filepath.Join(tg.Dir, "f"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := b.Create(tg, 0); !errors.Is(err, os.ErrExist) {
		t.Errorf("second Create: err = %v, want os.ErrExist", err)
	}
	if _, err := os.Stat(filepath.Join(tg.Dir, "f")); err != nil {
		t.Errorf("failed Create touched the existing directory: %v", err)
	}
	if err := b.SetLimit(tg, 5<<20); err != nil {
		t.Errorf("SetLimit: %v", err)
	}
	if _, err := b.Usage(tg); !errors.Is(err, ErrNoUsage) || !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Usage: err = %v, want ErrNoUsage", err)
	}
	if err := b.Remove(tg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tg.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove: %v", err)
	}
	if err := b.Remove(tg); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := b.Create(Target{Dir: "/elsewhere/inst"}, 0); err == nil || !strings.Contains(err.Error(), "target.dir") {
		t.Errorf("Create outside the path: err = %v", err)
	}
}

func TestNoneRemoveLeftover(t *testing.T) {
	root := t.TempDir()
	b, err := New(config.QuotaNone, root)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "left")
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveLeftover(dir, func(uint32) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after RemoveLeftover: %v", err)
	}
	if err := b.RemoveLeftover(dir, nil); err != nil {
		t.Errorf("second RemoveLeftover: %v", err)
	}
	if err := b.RemoveLeftover("/elsewhere/left", nil); err == nil || !strings.Contains(err.Error(), "target.dir") {
		t.Errorf("RemoveLeftover outside the path: err = %v", err)
	}
}
