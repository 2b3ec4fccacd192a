package quota

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hostward/ward/config"
)

// Target names what a quota applies to: the instance directory and the uid
// the instance runs as.
type Target struct {
	Dir string // absolute; created by Create, removed by Remove
	UID uint32 // the instance's uid: the quota id of the project and user backends
}

// Backend creates instance directories with a disk limit in force, changes
// and reads that limit, and removes directories with their quota. All
// methods are safe for concurrent use on different targets.
type Backend interface {
	// Name is the backend's kind as given to New.
	Name() config.QuotaBackend
	// Create makes t.Dir, which must not exist (an error wrapping
	// os.ErrExist otherwise), owned by the caller (root), mode 0700, with
	// a limit of limitBytes (<= 0: no limit) in force before it returns. A
	// failed Create leaves nothing behind.
	Create(t Target, limitBytes int64) error
	// SetLimit changes the limit of a directory made by Create, live.
	SetLimit(t Target, limitBytes int64) error
	// Usage is the number of bytes charged to the target, as the
	// filesystem last accounted it (btrfs: at its last commit, every 30 s
	// by default). Backends that do not measure it return ErrNoUsage.
	Usage(t Target) (int64, error)
	// Remove deletes t.Dir with everything in it and drops its quota. A
	// missing directory is not an error, so Remove can simply be called
	// again after a crash.
	Remove(t Target) error
	// RemoveLeftover deletes dir, an instance directory no instance owns
	// (a crash left it between its creation and its record, or between
	// the instance's end and its removal), with whatever quota of it is
	// the backend's to drop. Only dir is known, not the uid it was made
	// for: a backend that keys quotas by uid takes the directory's owner,
	// and leaves the quota alone when that is root (the start failed
	// before handing the directory over) or a uid leased reports as held
	// by a live instance, whose limit it now is. A missing directory is
	// not an error.
	RemoveLeftover(dir string, leased func(uid uint32) bool) error
	// Verify proves that the backend really enforces limits on its path,
	// or returns an error wrapping ErrNotEnforced that says what is
	// missing and how to fix it. It is meant for agent startup and
	// `ward doctor`: it may create and remove a probe directory.
	Verify() error
}

var (
	// ErrNotEnforced is returned (wrapped) by Verify when limits would not
	// be enforced on the backend's filesystem.
	ErrNotEnforced = errors.New("quota: disk limits are not enforced")
	// ErrNoUsage is returned by Usage of backends that do not measure
	// usage. It wraps errors.ErrUnsupported.
	ErrNoUsage = fmt.Errorf("quota: backend does not measure usage: %w", errors.ErrUnsupported)
)

// New returns the backend of the given kind for instance directories on
// the filesystem holding path. It only checks its arguments: whether the
// filesystem can enforce anything is Verify's question.
func New(kind config.QuotaBackend, path string) (Backend, error) {
	switch kind {
	case config.QuotaNone:
		if path != "" {
			if err := checkAbs("path", path); err != nil {
				return nil, err
			}
		}
		return noneBackend{path: path}, nil
	case config.QuotaBtrfs, config.QuotaProject, config.QuotaUser:
		if err := checkAbs("path", path); err != nil {
			return nil, err
		}
		return newPlatform(kind, filepath.Clean(path))
	}
	kinds := make([]string, len(config.QuotaBackends))
	for i, k := range config.QuotaBackends {
		kinds[i] = string(k)
	}
	return nil, fmt.Errorf("quota: kind %q: must be one of %s", kind, strings.Join(kinds, ", "))
}

func checkAbs(field, p string) error {
	if p == "" {
		return fmt.Errorf("quota: %s: must not be empty", field)
	}
	if !filepath.IsAbs(p) {
		return fmt.Errorf("quota: %s %q: must be absolute", field, p)
	}
	return nil
}

// checkTarget validates t for a backend whose instance directories live
// under root ("" for no constraint); needUID refuses uid 0, whose quota
// would be root's own (user) or the default project's (project).
func checkTarget(t Target, root string, needUID bool) error {
	if err := checkAbs("target.dir", t.Dir); err != nil {
		return err
	}
	if filepath.Clean(t.Dir) != t.Dir {
		return fmt.Errorf("quota: target.dir %q: must be clean (%q)", t.Dir, filepath.Clean(t.Dir))
	}
	if t.Dir == "/" {
		return fmt.Errorf("quota: target.dir %q: must not be the root directory", t.Dir)
	}
	if root != "" {
		rel, err := filepath.Rel(root, t.Dir)
		if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("quota: target.dir %q: must be inside the quota path %q", t.Dir, root)
		}
	}
	if needUID && t.UID == 0 {
		return fmt.Errorf("quota: target.uid: must not be 0 (it is root's quota id)")
	}
	return nil
}

// mkdirFresh makes dir with mode 0700 whatever the umask, failing with an
// error wrapping os.ErrExist if anything is already there.
func mkdirFresh(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("quota: create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		os.Remove(dir)
		return fmt.Errorf("quota: create %s: %w", dir, err)
	}
	return nil
}

// noneBackend makes plain directories: no limit, no usage. It is the
// backend for hosts (and development machines) without quota support.
type noneBackend struct{ path string }

func (noneBackend) Name() config.QuotaBackend { return config.QuotaNone }

func (b noneBackend) Create(t Target, _ int64) error {
	if err := checkTarget(t, b.path, false); err != nil {
		return err
	}
	return mkdirFresh(t.Dir)
}

// SetLimit accepts any limit: the backend has nothing to enforce it with,
// and the configuration that chose it said so.
func (b noneBackend) SetLimit(t Target, _ int64) error {
	return checkTarget(t, b.path, false)
}

// Usage does not walk the directory: a walk costs as much as the tree is
// large and would run on every sample of the reporter. It returns
// ErrNoUsage, which the caller shows as "not measured".
func (b noneBackend) Usage(t Target) (int64, error) {
	if err := checkTarget(t, b.path, false); err != nil {
		return 0, err
	}
	return 0, ErrNoUsage
}

func (b noneBackend) Remove(t Target) error {
	if err := checkTarget(t, b.path, false); err != nil {
		return err
	}
	if err := os.RemoveAll(t.Dir); err != nil {
		return fmt.Errorf("quota: remove %s: %w", t.Dir, err)
	}
	return nil
}

// RemoveLeftover removes the directory: there is no quota to drop.
func (b noneBackend) RemoveLeftover(dir string, _ func(uint32) bool) error {
	return b.Remove(Target{Dir: dir})
}

// Verify succeeds: "none" promises no enforcement.
func (noneBackend) Verify() error { return nil }
