package journal

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

type rec struct {
	GID  uint32 `json:"gid"`
	Path string `json:"path,omitempty"`
}

func TestWriteReadRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "step.json")
	var got rec
	if raw, err := Read(path, "step", &got); raw != nil || err != nil {
		t.Fatalf("missing journal: %q %v, want nil, nil", raw, err)
	}
	b := Encode(rec{GID: 7, Path: "/bin/su"})
	if err := Write(path, b); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("journal file: %v %v, want mode 0600", st, err)
	}
	raw, err := Read(path, "step", &got)
	if err != nil || !bytes.Equal(raw, b) || got != (rec{GID: 7, Path: "/bin/su"}) {
		t.Fatalf("read back %+v %q %v", got, raw, err)
	}
	if err := Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Remove: %v", err)
	}
	if err := Remove(path); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

// A journal with a field this version does not know is refused: undoing
// it by the fields understood could leave the rest changed.
func TestReadIsStrict(t *testing.T) {
	path := filepath.Join(t.TempDir(), "step.json")
	if err := os.WriteFile(path, []byte(`{"gid": 7, "added_later": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var got rec
	if raw, err := Read(path, "step", &got); err == nil || raw != nil {
		t.Fatalf("unknown field accepted: %q %v", raw, err)
	}
}
