// Package atomicfile replaces files so that a reader, or the same program
// after a crash, sees either the old content or the new one, never a mix.
//
// The content goes to a temporary file in the same directory, which is
// synced and then renamed over the target: after a crash of the program or
// of the machine the target holds the old content or the new, whole. Which
// of the two after a power loss depends on whether the rename reached the
// disk; a caller that must know calls SyncDir.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces path with data, synced: after a power loss
// the file is whole, old or new.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// WriteFileNoSync atomically replaces path with data without waiting for
// the disk. A crash of the program leaves the file whole; after a power
// loss it may be old, new, or — for a file that did not exist before —
// empty or torn, which the caller must be ready to recognise.
func WriteFileNoSync(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm os.FileMode, sync bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", tmp, err)
	}
	// Without this a power loss could leave the new name on an empty
	// file: the rename may reach the disk before the data.
	if sync {
		if err = f.Sync(); err != nil {
			return fmt.Errorf("atomicfile: sync %s: %w", tmp, err)
		}
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	return nil
}

// SyncDir makes the entries of dir (renames, creations, removals) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicfile: sync dir %s: %w", dir, err)
	}
	return nil
}
