package acl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// PrepareDir creates an instance directory and its logs/ subdirectory,
// owned by uid:gid, mode 0700, so no other instance (all share gid) can
// read it. An existing directory is an error: a leftover could hold files
// owned by an earlier holder of another uid.
func PrepareDir(dir string, uid, gid int) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("acl: instance dir: %w", err)
	}
	logs := filepath.Join(dir, "logs")
	err := os.Mkdir(logs, 0o700)
	if err == nil {
		err = os.Chown(logs, uid, gid)
	}
	if err == nil {
		err = os.Chown(dir, uid, gid)
	}
	if err == nil {
		// Mkdir's mode is filtered by the umask; the contract is 0700.
		err = os.Chmod(dir, 0o700)
	}
	if err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("acl: instance dir: %w", err)
	}
	return nil
}

// OpenLog opens (appending) a log file inside an instance's logs/ directory,
// owned by the instance so the instance's own process holds it, not the agent.
func OpenLog(path string, uid, gid int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("acl: log: %w", err)
	}
	if err := f.Chown(uid, gid); err != nil {
		f.Close()
		return nil, fmt.Errorf("acl: log: %w", err)
	}
	return f, nil
}

// RemoveDir removes an instance directory; an absent one is not an error.
func RemoveDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("acl: remove %s: %w", dir, err)
	}
	return nil
}
