package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/accounts"
	"github.com/hostward/ward/acl"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/quota"
)

// setupEnv is what every setup step works from.
type setupEnv struct {
	cfg    *config.Config
	dir    string // <state_dir>/setup: one journal per step
	etcDir string // where passwd, group and the shadow files live
	out    io.Writer
}

func (e *setupEnv) journal(name string) string { return filepath.Join(e.dir, name+".json") }

// setupStep is one host preparation. apply is idempotent and all or
// nothing: it records what it changes in its own journal first and rolls
// itself back on failure; undo reverts exactly what the journal records.
// Each returns a one-line summary.
type setupStep struct {
	name  string
	apply func(*setupEnv) (string, error)
	undo  func(*setupEnv) (string, error)
}

// setupSteps run in this order, and in reverse for --undo. A failed step
// stops `ward setup`; the steps before it stay done (each is complete on
// its own, and a rerun finds them done), which is what the message says.
var setupSteps = []setupStep{
	{"accounts", applyAccounts, undoAccounts},
	{"acl", applyACL, undoACL},
	{"quota", applyQuota, undoQuota},
}

func runSetup(args []string, stdout, stderr io.Writer) error {
	fset := newFlags("setup", "[--config FILE] [--state-dir DIR] [--etc-dir DIR] [--undo]", stderr)
	cfgPath := fset.String("config", "", "configuration file (default "+config.DefaultPath+" if it exists)")
	stateDir := fset.String("state-dir", "", "override state_dir (the journals live in <state_dir>/setup)")
	etcDir := fset.String("etc-dir", "/etc", "directory holding passwd, group, shadow and gshadow (--undo uses the one setup used)")
	undo := fset.Bool("undo", false, "revert what earlier runs did, as their journals record it")
	if err := parse(fset, args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return usagef("unexpected argument %q", fset.Arg(0))
	}
	if !filepath.IsAbs(*etcDir) {
		return usagef("--etc-dir must be an absolute path, got %q", *etcDir)
	}
	cfg, err := loadConfig(*cfgPath, false)
	if err != nil {
		return err
	}
	if *stateDir != "" {
		cfg.StateDir = *stateDir
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: it edits the account files and the ACLs of system commands")
	}
	env := &setupEnv{cfg: cfg, dir: filepath.Join(cfg.StateDir, "setup"), etcDir: filepath.Clean(*etcDir), out: stdout}
	unlock, err := lockSetup(env.dir)
	if err != nil {
		return err
	}
	defer unlock()

	if *undo {
		var errs []error
		for i := len(setupSteps) - 1; i >= 0; i-- {
			s := setupSteps[i]
			msg, err := s.undo(env)
			if err != nil {
				// The other steps' journals are independent: undo them too.
				errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
				fmt.Fprintf(stdout, "%-9s FAILED\n", s.name)
				continue
			}
			fmt.Fprintf(stdout, "%-9s %s\n", s.name, msg)
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w (what failed is still in %s; rerun to finish)", errors.Join(errs...), env.dir)
		}
		return nil
	}
	for _, s := range setupSteps {
		msg, err := s.apply(env)
		if err != nil {
			fmt.Fprintf(stdout, "%-9s FAILED\n", s.name)
			return fmt.Errorf("%s: %w (earlier steps are done; fix this and rerun, or undo all with --undo)", s.name, err)
		}
		fmt.Fprintf(stdout, "%-9s %s\n", s.name, msg)
	}
	return nil
}

// lockSetup keeps two `ward setup` runs from interleaving their journals.
// It creates the state dir like the agent does (traversable by the pool,
// which reaches its instance dirs through it) when it is missing.
func lockSetup(dir string) (func(), error) {
	state := filepath.Dir(dir)
	if _, err := os.Stat(state); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(state, 0o711); err != nil {
			return nil, err
		}
		if err := os.Chmod(state, 0o711); err != nil {
			return nil, err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another ward setup is running (%s is locked)", f.Name())
		}
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

func (e *setupEnv) accounts() accounts.Entries {
	u := e.cfg.Users
	return accounts.Entries{EtcDir: e.etcDir, Group: u.Group, GID: uint32(u.GID), UIDMin: u.UIDMin, UIDMax: u.UIDMax, Users: u.CreatePasswd}
}

func applyAccounts(e *setupEnv) (string, error) {
	a := e.accounts()
	rep, err := accounts.Ensure(a, e.journal("accounts"))
	if err != nil {
		return "", err
	}
	group := "existed"
	if rep.GroupCreated {
		group = "created"
	}
	msg := fmt.Sprintf("group %s (gid %d) %s", a.Group, a.GID, group)
	if a.Users {
		msg += fmt.Sprintf("; %d users created, %d existed", rep.UsersCreated, rep.UsersExisting)
	}
	if rep.UsersRemoved > 0 {
		msg += fmt.Sprintf("; %d users no longer wanted removed", rep.UsersRemoved)
	}
	return msg, nil
}

func undoAccounts(e *setupEnv) (string, error) {
	rep, err := accounts.Undo(e.journal("accounts"))
	if err != nil {
		return "", err
	}
	group := "kept (not created by ward setup)"
	if rep.GroupRemoved {
		group = "removed"
	}
	return fmt.Sprintf("group %s; %d users removed", group, rep.UsersRemoved), nil
}

func applyACL(e *setupEnv) (string, error) {
	rep, err := acl.ApplyDeny(e.cfg.ACL.Deny, uint32(e.cfg.Users.GID), e.journal("acl"))
	if err != nil {
		return "", err
	}
	msg := fmt.Sprintf("%d paths denied, %d absent, %d already denied", len(rep.Denied), len(rep.Absent), len(rep.Already))
	if len(rep.Restored) > 0 {
		msg += fmt.Sprintf(", %d no longer listed restored", len(rep.Restored))
	}
	return msg, nil
}

func undoACL(e *setupEnv) (string, error) {
	rep, err := acl.UndoDeny(e.journal("acl"))
	if err != nil {
		return "", err
	}
	msg := fmt.Sprintf("%d ACLs restored", len(rep.Restored))
	if len(rep.Skipped) > 0 {
		msg += fmt.Sprintf(", %d skipped: %s", len(rep.Skipped), strings.Join(first(rep.Skipped, 5), ", "))
	}
	return msg, nil
}

// applyQuota makes the configured quota backend enforce on the instances'
// filesystem where ward can do so itself (btrfs: simple quotas are turned
// on), then proves it with the backend's own check. XFS and ext4 quotas
// are mount options and quotaon's business: for them this only checks.
func applyQuota(e *setupEnv) (string, error) {
	kind, dir := e.cfg.Quota.Backend, e.cfg.InstancesDir()
	if kind == config.QuotaNone {
		return "backend none: disk limits are recorded, not enforced", nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	if kind == config.QuotaBtrfs {
		if err := quota.EnableBtrfsQuota(dir); err != nil {
			return "", err
		}
	}
	b, err := quota.New(kind, dir)
	if err != nil {
		return "", err
	}
	if err := b.Verify(); err != nil {
		return "", err
	}
	return fmt.Sprintf("backend %s enforces on %s", kind, dir), nil
}

// undoQuota leaves quotas on: turning them off would lift the limits of
// every instance on the filesystem, and ward records nothing it would
// have to put back.
func undoQuota(e *setupEnv) (string, error) {
	return "left as is (quotas stay enabled)", nil
}
