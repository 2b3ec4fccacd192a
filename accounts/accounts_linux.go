package accounts

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/journal"
)

// Ensure makes the files under a.EtcDir hold the pool's group and, with
// a.Users, its users, recording what it added in the journal file. It is
// idempotent. It refuses — changing nothing — when an entry that is not
// the pool's holds the group's name or gid or, with a.Users, a pool uid or
// user name (ErrClash), and when the journal was written for another
// group, gid or etc directory (ErrJournalConfig). Users the journal
// recorded and the configuration no longer wants are removed.
func Ensure(a Entries, journalPath string) (Report, error) {
	if err := a.validate(); err != nil {
		return Report{}, err
	}
	unlock, err := lockPasswd(a.EtcDir, a.LockTimeout)
	if err != nil {
		return Report{}, err
	}
	defer unlock()
	oldRaw, old, err := readAccountsJournal(journalPath)
	if err != nil {
		return Report{}, err
	}
	if oldRaw != nil && (old.EtcDir != a.EtcDir || old.Group != a.Group || old.GID != a.GID) {
		return Report{}, fmt.Errorf("accounts: %w: %s is for group %s gid %d in %s; run `ward setup --undo` with the old configuration first",
			ErrJournalConfig, journalPath, old.Group, old.GID, old.EtcDir)
	}
	files, err := readEtc(a.EtcDir)
	if err != nil {
		return Report{}, err
	}
	p, err := planEnsure(&a, old, files[0], files[1], files[2], files[3])
	if err != nil {
		return Report{}, err
	}
	if err := p.execute(journalPath, oldRaw, files); err != nil {
		return Report{}, err
	}
	return p.rep, nil
}

// Undo removes what the journal records Ensure added — those entries only,
// wherever they are in the files now — and then the journal. No journal
// means nothing to undo.
func Undo(journalPath string) (Report, error) {
	raw, j, err := readAccountsJournal(journalPath)
	if err != nil || raw == nil {
		return Report{}, err
	}
	unlock, err := lockPasswd(j.EtcDir, DefaultLockTimeout)
	if err != nil {
		return Report{}, err
	}
	defer unlock()
	files, err := readEtc(j.EtcDir)
	if err != nil {
		return Report{}, err
	}
	p := planUndo(j, files[0], files[1], files[2], files[3])
	if err := p.execute(journalPath, raw, files); err != nil {
		return Report{}, err
	}
	return p.rep, nil
}

// execute records p.during, rewrites the changed files, then records
// p.next (an empty record removes the journal). A failed file write puts
// back the files already replaced and the journal as it was.
func (p *accountsPlan) execute(journalPath string, oldRaw []byte, files []*etcFile) error {
	changed := files[:0:0]
	for _, f := range files {
		if f.changed {
			changed = append(changed, f)
		}
	}
	if len(changed) == 0 {
		if (oldRaw == nil && p.next.empty()) || bytes.Equal(journal.Encode(p.next), oldRaw) {
			return nil
		}
		return writeAccountsJournal(journalPath, p.next)
	}
	if err := writeAccountsJournal(journalPath, p.during); err != nil {
		return err
	}
	for i, f := range changed {
		if err := replaceFile(f.name, f.bytes()); err != nil {
			var errs []error
			for _, done := range changed[:i] {
				if err := replaceFile(done.name, done.orig); err != nil {
					errs = append(errs, err)
				}
			}
			if len(errs) > 0 {
				return fmt.Errorf("accounts: %w; putting back the files failed too (%w): `ward setup --undo` removes what %s records",
					err, errors.Join(errs...), journalPath)
			}
			if oldRaw == nil {
				err = errors.Join(err, journal.Remove(journalPath))
			} else {
				err = errors.Join(err, journal.Write(journalPath, oldRaw))
			}
			return fmt.Errorf("accounts: %w; the account files are as they were", err)
		}
	}
	if err := syncDir(filepath.Dir(files[0].name)); err != nil {
		return err
	}
	return writeAccountsJournal(journalPath, p.next)
}

func writeAccountsJournal(path string, j accountsJournal) error {
	if j.empty() {
		return journal.Remove(path)
	}
	return journal.Write(path, journal.Encode(j))
}

func readAccountsJournal(path string) ([]byte, accountsJournal, error) {
	var j accountsJournal
	raw, err := journal.Read(path, "accounts", &j)
	if raw == nil || err != nil {
		return nil, j, err
	}
	if j.EtcDir == "" || j.Group == "" || j.GID == 0 {
		return nil, j, fmt.Errorf("accounts: accounts journal %s: no etc_dir, group or gid", path)
	}
	return raw, j, nil
}

// readEtc reads group, gshadow, passwd and shadow, in that order (the
// order they are written in: a user's group exists before the user). The
// shadow files may be missing.
func readEtc(dir string) ([]*etcFile, error) {
	var files []*etcFile
	for _, n := range []struct {
		name     string
		optional bool
	}{{"group", false}, {"gshadow", true}, {"passwd", false}, {"shadow", true}} {
		path := filepath.Join(dir, n.name)
		b, err := os.ReadFile(path)
		exists := err == nil
		if errors.Is(err, fs.ErrNotExist) && n.optional {
			err = nil
		}
		if err != nil {
			return nil, fmt.Errorf("accounts: %w", err)
		}
		files = append(files, parseEtc(path, b, exists))
	}
	return files, nil
}

// replaceFile replaces path with data, keeping its owner and mode
// (/etc/shadow is root:shadow 0640 on Debian, and must stay so).
func replaceFile(path string, data []byte) (err error) {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Owner and mode before the content: a shadow file's copy must never
	// be readable by more than the original.
	if err = f.Chown(int(sys.Uid), int(sys.Gid)); err != nil {
		return err
	}
	if err = f.Chmod(st.Mode().Perm()); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("accounts: sync %s: %w", dir, err)
	}
	return nil
}

// lockPasswd takes lckpwdf's lock: a write lock on <dir>/.pwd.lock. It is
// an open-file-description lock, which conflicts with lckpwdf's classic
// fcntl lock in another process like one of those would, but unlike one
// is not dropped when some other descriptor of the file in this process
// is closed.
func lockPasswd(dir string, timeout time.Duration) (unlock func(), err error) {
	if timeout <= 0 {
		timeout = DefaultLockTimeout
	}
	path := filepath.Join(dir, ".pwd.lock")
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("accounts: passwd lock: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	deadline := time.Now().Add(timeout)
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return func() { unix.Close(fd) }, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			unix.Close(fd)
			return nil, fmt.Errorf("accounts: passwd lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			unix.Close(fd)
			return nil, fmt.Errorf("accounts: %w: %s held for %s by another program (useradd, vipw, ...)", ErrLocked, path, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
