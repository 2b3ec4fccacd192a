package acl

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/journal"
)

// The deny list
//
// ApplyDeny gives every deny-list path a `group:<gid>:---` entry in its
// access ACL, so a process whose only group is gid (a pool user) cannot
// execute, read or — for a directory — traverse it, while everybody else's
// access stays exactly as it was.
//
// Symlinks are followed to the file they end at (/bin/su → /usr/bin/su,
// /usr/bin/cc → /etc/alternatives/cc → /usr/bin/gcc-14 ...), because an ACL
// on a symlink means nothing: the target is what is executed. Each inode is
// changed once however many paths lead to it. A directory gets the entry on
// its access ACL only: that stops the group from traversing it, so nothing
// below is reachable through it. Its default ACL is left alone: it would
// only mark files created there later, which could then be moved anywhere
// carrying an entry no journal knows about.
//
// Before anything changes, a journal records each target's exact xattr
// (or that it had none), keyed by device and inode. A later apply keeps the
// first "before" of a target it already knows, so applying twice and
// undoing once restores the original bytes. When an apply fails part way,
// the targets it changed are put back at once and the journal returns to
// what it was; if even that fails, the journal still covers every target
// and UndoDeny finishes the job. A crash between the journal and the last
// change leaves the same: a journal covering everything, for a rerun or an
// undo.

type denyJournal struct {
	GID     uint32       `json:"gid"`
	Targets []denyRecord `json:"targets"`
}

type denyRecord struct {
	Path string   `json:"path"`
	From []string `json:"from,omitempty"` // the deny-list paths leading here
	Dev  uint64   `json:"dev"`
	Ino  uint64   `json:"ino"`
	// Absent: the file had no ACL xattr; Before: the xattr, verbatim.
	Absent bool   `json:"absent,omitempty"`
	Before []byte `json:"before,omitempty"`
}

type inode struct{ dev, ino uint64 }

// target is a resolved deny-list entry, held open so that what is read,
// recorded and changed is one inode whatever happens to its path meanwhile.
type target struct {
	path string
	from []string
	fd   int
	id   inode
	mode uint32
	gid  uint32
}

// resolve follows each path to its final file and opens it. Paths that do
// not exist come back in absent; any other problem is an error naming the
// path, with nothing left open.
func resolve(paths []string) (targets []*target, absent []string, err error) {
	byInode := map[inode]*target{}
	defer func() {
		if err != nil {
			closeAll(targets)
			targets = nil
		}
	}()
	for _, p := range paths {
		if !filepath.IsAbs(p) {
			return targets, nil, fmt.Errorf("acl: deny path %q is not absolute", p)
		}
		final, err := filepath.EvalSymlinks(p)
		if errors.Is(err, fs.ErrNotExist) {
			absent = append(absent, p)
			continue
		}
		if err != nil {
			return targets, nil, fmt.Errorf("acl: deny path %s: %w", p, err)
		}
		t, err := openTarget(p, final)
		if err != nil {
			return targets, nil, err
		}
		if prev, ok := byInode[t.id]; ok {
			unix.Close(t.fd)
			if !slices.Contains(prev.from, p) {
				prev.from = append(prev.from, p)
			}
			continue
		}
		byInode[t.id] = t
		targets = append(targets, t)
	}
	return targets, absent, nil
}

func openTarget(p, final string) (*target, error) {
	// Only files and directories: opening a device or a FIFO to set its
	// ACL could block or have side effects, and no command is one.
	var st unix.Stat_t
	if err := unix.Lstat(final, &st); err != nil {
		return nil, fmt.Errorf("acl: deny path %s: %w", p, err)
	}
	if !regularOrDir(st.Mode) {
		return nil, fmt.Errorf("acl: deny path %s: %s is not a regular file or directory", p, final)
	}
	fd, err := unix.Open(final, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("acl: deny path %s: open %s: %w", p, final, err)
	}
	if err := unix.Fstat(fd, &st); err != nil || !regularOrDir(st.Mode) {
		unix.Close(fd)
		if err == nil {
			err = errors.New("replaced while opening it")
		}
		return nil, fmt.Errorf("acl: deny path %s: %s: %w", p, final, err)
	}
	return &target{path: final, from: []string{p}, fd: fd, id: inode{uint64(st.Dev), uint64(st.Ino)}, mode: st.Mode, gid: st.Gid}, nil
}

func regularOrDir(mode uint32) bool {
	return mode&unix.S_IFMT == unix.S_IFREG || mode&unix.S_IFMT == unix.S_IFDIR
}

func closeAll(ts []*target) {
	for _, t := range ts {
		unix.Close(t.fd)
	}
}

// change is one target's planned ACL change.
type change struct {
	t         *target
	cur       []byte // the xattr now
	curAbsent bool
	want      []byte
	changed   bool
}

// ApplyDeny gives every path of the deny list (after symlinks) a
// `group:<gid>:---` ACL entry, recording in the journal file the ACL each
// target had first, and restores the targets the journal holds that the
// list no longer leads to. It is idempotent. Paths that do not exist are
// skipped and reported; any other bad path is an error and nothing changes.
func ApplyDeny(paths []string, gid uint32, journalPath string) (rep DenyReport, err error) {
	targets, absent, err := resolve(paths)
	if err != nil {
		return DenyReport{}, err
	}
	defer closeAll(targets)
	rep.Absent = absent

	oldRaw, old, err := readDenyJournal(journalPath)
	if err != nil {
		return DenyReport{}, err
	}
	if oldRaw != nil && old.GID != gid {
		return DenyReport{}, fmt.Errorf("acl: %w: %s denies gid %d, users.gid is %d; run `ward setup --undo` with the old configuration first",
			ErrJournalGID, journalPath, old.GID, gid)
	}
	known := map[inode]denyRecord{}
	for _, r := range old.Targets {
		known[inode{r.Dev, r.Ino}] = r
	}

	next := denyJournal{GID: gid}
	changes := make([]change, 0, len(targets))
	for _, t := range targets {
		if t.gid == gid {
			// Group-class entries grant the union of what they allow, so
			// GROUP_OBJ would still let the group in.
			return DenyReport{}, fmt.Errorf("acl: deny path %s: %s belongs to group %d itself; an ACL entry cannot deny a file's own group", t.from[0], t.path, gid)
		}
		cur, ok, err := fgetACL(t.fd)
		if err != nil {
			return DenyReport{}, fmt.Errorf("acl: deny path %s: read ACL of %s: %w", t.from[0], t.path, err)
		}
		a := ACLFromMode(fs.FileMode(t.mode & 0o777))
		if ok {
			if a, err = ParseACL(cur); err != nil {
				return DenyReport{}, fmt.Errorf("acl: deny path %s: ACL of %s: %w", t.from[0], t.path, err)
			}
		}
		want, changed := a.WithGroupDenied(gid)
		changes = append(changes, change{t: t, cur: cur, curAbsent: !ok, want: want.Encode(), changed: changed})

		rec, seen := known[t.id]
		if !seen {
			rec = denyRecord{Dev: t.id.dev, Ino: t.id.ino, Absent: !ok, Before: cur}
		}
		delete(known, t.id)
		rec.Path, rec.From = t.path, t.from
		next.Targets = append(next.Targets, rec)
	}
	// What the journal holds and the list no longer reaches is given back
	// below; until then it stays in the journal.
	var stale []denyRecord
	for _, r := range old.Targets {
		if _, ok := known[inode{r.Dev, r.Ino}]; ok {
			stale = append(stale, r)
		}
	}
	if len(next.Targets)+len(stale) > 0 {
		during := journal.Encode(denyJournal{GID: gid, Targets: append(append([]denyRecord(nil), next.Targets...), stale...)})
		// A rerun with nothing new records nothing new: no write, no fsync.
		if !bytes.Equal(during, oldRaw) {
			if err := journal.Write(journalPath, during); err != nil {
				return DenyReport{}, err
			}
		}
	}

	for i, c := range changes {
		if !c.changed {
			rep.Already = append(rep.Already, c.t.path)
			continue
		}
		if err := fsetACL(c.t.fd, c.want, false); err != nil {
			err = fmt.Errorf("acl: deny %s (for %s): %w", c.t.path, c.t.from[0], err)
			return DenyReport{}, rollbackDeny(changes[:i], journalPath, oldRaw, err)
		}
		rep.Denied = append(rep.Denied, c.t.path)
	}

	var errs []error
	for _, r := range stale {
		switch why, err := restoreRecord(r); {
		case err != nil:
			next.Targets = append(next.Targets, r)
			errs = append(errs, err)
		case why == "":
			rep.Restored = append(rep.Restored, r.Path)
		}
	}
	if len(stale) > 0 {
		if err := writeOrRemoveDenyJournal(journalPath, next); err != nil {
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// rollbackDeny undoes the changes made before a failure and returns the
// journal to its previous state. When a target cannot be put back, the
// journal (which covers every target) stays for UndoDeny.
func rollbackDeny(done []change, journalPath string, oldRaw []byte, cause error) error {
	var errs []error
	for _, c := range done {
		if !c.changed {
			continue
		}
		if err := fsetACL(c.t.fd, c.cur, c.curAbsent); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", c.t.path, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w; rolling back failed too (%w): `ward setup --undo` restores from %s", cause, errors.Join(errs...), journalPath)
	}
	var err error
	if oldRaw == nil {
		err = journal.Remove(journalPath)
	} else {
		err = journal.Write(journalPath, oldRaw)
	}
	if err != nil {
		return fmt.Errorf("%w; the ACLs were rolled back but the journal was not: %w", cause, err)
	}
	return fmt.Errorf("%w; every ACL changed was rolled back", cause)
}

// UndoDeny gives every target in the journal its recorded ACL back — the
// exact bytes, or no ACL at all — and removes the journal. A target that is
// gone or is another inode now (a package upgrade replaced the file) is
// skipped: its ACL is not ours to set. Targets that fail stay in the
// journal, so a rerun finishes the job. No journal means nothing to undo.
func UndoDeny(journalPath string) (UndoReport, error) {
	raw, j, err := readDenyJournal(journalPath)
	if err != nil || raw == nil {
		return UndoReport{}, err
	}
	var rep UndoReport
	var errs []error
	left := denyJournal{GID: j.GID}
	for _, r := range j.Targets {
		why, err := restoreRecord(r)
		switch {
		case err != nil:
			errs = append(errs, err)
			left.Targets = append(left.Targets, r)
		case why != "":
			rep.Skipped = append(rep.Skipped, r.Path+": "+why)
		default:
			rep.Restored = append(rep.Restored, r.Path)
		}
	}
	if err := writeOrRemoveDenyJournal(journalPath, left); err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

// restoreRecord puts r's recorded ACL back on r.Path if that is still the
// recorded inode; why says why it was skipped otherwise.
func restoreRecord(r denyRecord) (why string, err error) {
	fd, err := unix.Open(r.Path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
		return "gone", nil
	}
	if err != nil {
		return "", fmt.Errorf("acl: restore %s: %w", r.Path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("acl: restore %s: %w", r.Path, err)
	}
	if uint64(st.Dev) != r.Dev || uint64(st.Ino) != r.Ino {
		return "replaced by another file", nil
	}
	if err := fsetACL(fd, r.Before, r.Absent); err != nil {
		return "", fmt.Errorf("acl: restore %s: %w", r.Path, err)
	}
	return "", nil
}

// CheckDeny reports which deny-list paths (after symlinks) carry the
// entry ApplyDeny writes for gid and which lack it.
func CheckDeny(paths []string, gid uint32) (DenyStatus, error) {
	targets, absent, err := resolve(paths)
	if err != nil {
		return DenyStatus{}, err
	}
	defer closeAll(targets)
	st := DenyStatus{Absent: absent}
	for _, t := range targets {
		b, ok, err := fgetACL(t.fd)
		if err != nil {
			return DenyStatus{}, fmt.Errorf("acl: %s: %w", t.path, err)
		}
		denied := false
		if ok {
			a, err := ParseACL(b)
			if err != nil {
				return DenyStatus{}, fmt.Errorf("acl: %s: %w", t.path, err)
			}
			denied = a.DeniesGroup(gid)
		}
		if denied {
			st.Denied = append(st.Denied, t.path)
		} else {
			st.Drift = append(st.Drift, t.path)
		}
	}
	return st, nil
}

func readDenyJournal(path string) ([]byte, denyJournal, error) {
	var j denyJournal
	raw, err := journal.Read(path, "deny", &j)
	if raw == nil || err != nil {
		return nil, j, err
	}
	for _, r := range j.Targets {
		if !filepath.IsAbs(r.Path) || (r.Absent == (r.Before != nil)) {
			return nil, j, fmt.Errorf("acl: deny journal %s: bad record for %q", path, r.Path)
		}
		if !r.Absent {
			if _, err := ParseACL(r.Before); err != nil {
				return nil, j, fmt.Errorf("acl: deny journal %s: record for %s: %w", path, r.Path, err)
			}
		}
	}
	return raw, j, nil
}

func writeOrRemoveDenyJournal(path string, j denyJournal) error {
	if len(j.Targets) == 0 {
		return journal.Remove(path)
	}
	return journal.Write(path, journal.Encode(j))
}
