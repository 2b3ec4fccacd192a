// Package journal keeps the record a `ward setup` step writes of what it
// changed on the host, so that a rerun converges and an undo puts back
// exactly that, even after a crash part way.
//
// A journal is one JSON file, replaced atomically and synced (file and
// directory) before the change it announces is made: a crash can leave a
// journal that covers more than was done, never less. Reading is strict —
// a field this version does not know is an error, not a guess — so a
// journal from a newer ward is refused rather than half-undone.
//
// What a journal holds is its step's business (package accounts: the
// passwd and group entries added; package acl: each file's ACL before the
// deny entry); this package only reads, writes and removes them.
package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hostward/ward/atomicfile"
)

// Read decodes the journal at path into v, strictly. A missing journal is
// (nil, nil); otherwise the raw bytes come back too, for comparing with
// what would be written. what names the journal in errors ("accounts").
func Read(path, what string, v any) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %s: %w", what, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, fmt.Errorf("journal: %s journal %s: %w", what, path, err)
	}
	return raw, nil
}

// Encode is a journal's file content. It cannot fail for the journals
// ward writes: they hold strings, numbers, bools and byte slices.
func Encode(v any) []byte {
	b, _ := json.MarshalIndent(v, "", "  ")
	return append(b, '\n')
}

// Write replaces the journal at path with b durably: the change it
// announces must not reach the disk before it does.
func Write(path string, b []byte) error {
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

// Remove deletes the journal at path, durably; a missing one is not an
// error.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("journal: %w", err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}
