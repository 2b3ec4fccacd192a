package acl

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/internal/testroot"
)

// Ids of this package's tests (other packages use other ranges).
const (
	testGID   = 23100
	otherGID  = 23101
	testUID   = 23102
	fsImmutFL = 0x10 // FS_IMMUTABLE_FL
)

// state is everything about a file the deny list may touch: the access
// ACL xattr verbatim (or none), the full st_mode, the owner.
type state struct {
	acl      []byte
	hasACL   bool
	mode     uint32
	uid, gid uint32
}

func snapshot(t *testing.T, path string) state {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	s := state{mode: st.Mode, uid: st.Uid, gid: st.Gid}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return s
	}
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(path, aclXattr, buf)
	switch {
	case errors.Is(err, unix.ENODATA):
	case err != nil:
		t.Fatal(err)
	default:
		s.acl, s.hasACL = buf[:n], true
	}
	return s
}

func snapshots(t *testing.T, paths []string) map[string]state {
	m := map[string]state{}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			m[p] = snapshot(t, p)
		}
	}
	return m
}

func sameStates(t *testing.T, what string, before, after map[string]state) {
	t.Helper()
	for p, b := range before {
		a := after[p]
		if a.hasACL != b.hasACL || !bytes.Equal(a.acl, b.acl) || a.mode != b.mode || a.uid != b.uid || a.gid != b.gid {
			t.Errorf("%s: %s changed:\n before ACL %v % x mode %o\n after  ACL %v % x mode %o", what, p, b.hasACL, b.acl, b.mode, a.hasACL, a.acl, a.mode)
		}
	}
}

// worldDir is a temp dir every user can traverse, so processes of test
// uids can reach the files in it.
func worldDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ward-acl-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// Chmod, not the create mode: the umask filters that, and setuid too.
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func setACL(t *testing.T, path string, a ACL) {
	t.Helper()
	if err := unix.Setxattr(path, aclXattr, a.Encode(), 0); err != nil {
		t.Fatalf("setxattr %s: %v", path, err)
	}
}

// fixture builds files in every state the deny list meets and returns
// the deny list, the paths to snapshot, and the distinct targets.
func fixture(t *testing.T, dir string) (deny, all, targets []string) {
	t.Helper()
	p := func(n string) string { return filepath.Join(dir, n) }
	writeFile(t, p("plain"), []byte("x"), 0o755)
	writeFile(t, p("suid"), []byte("x"), 0o755|os.ModeSetuid)
	writeFile(t, p("named"), []byte("x"), 0o754)
	setACL(t, p("named"), mustParse(t, fixNamed))
	writeFile(t, p("gidrwx"), []byte("x"), 0o750)
	setACL(t, p("gidrwx"), ACL{{TagUserObj, 7, UndefinedID}, {TagGroupObj, 5, UndefinedID}, {TagGroup, 7, testGID}, {TagMask, 7, UndefinedID}, {TagOther, 0, UndefinedID}})
	writeFile(t, p("chained"), []byte("x"), 0o711)
	must(t, os.Symlink("link2", p("link1")))
	must(t, os.Symlink(p("chained"), p("link2")))
	must(t, os.Link(p("plain"), p("hardlink")))
	must(t, os.Symlink("plain", p("plainlink")))
	must(t, os.Mkdir(p("dir"), 0o755))
	must(t, os.Chmod(p("dir"), 0o755))
	writeFile(t, p("dir/inside"), []byte("x"), 0o755)
	must(t, os.Symlink("nowhere", p("dangling")))

	deny = []string{p("plain"), p("suid"), p("named"), p("gidrwx"), p("link1"), p("hardlink"), p("plainlink"), p("missing"), p("dangling"), p("dir")}
	all = []string{p("plain"), p("suid"), p("named"), p("gidrwx"), p("chained"), p("link1"), p("link2"), p("hardlink"), p("plainlink"), p("dir"), p("dir/inside"), p("dangling")}
	targets = []string{p("plain"), p("suid"), p("named"), p("gidrwx"), p("chained"), p("dir")}
	return deny, all, targets
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestApplyUndoDeny(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	deny, all, targets := fixture(t, dir)
	journal := filepath.Join(t.TempDir(), "acl.json")
	before := snapshots(t, all)

	rep, err := ApplyDeny(deny, testGID, journal)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Denied, targets) || len(rep.Already) != 0 {
		t.Errorf("denied %v already %v, want denied %v", rep.Denied, rep.Already, targets)
	}
	if want := []string{filepath.Join(dir, "missing"), filepath.Join(dir, "dangling")}; !slices.Equal(rep.Absent, want) {
		t.Errorf("absent %v, want %v", rep.Absent, want)
	}
	applied := snapshots(t, all)
	for _, p := range targets {
		if ok, err := DeniesGroup(p, testGID); err != nil || !ok {
			t.Errorf("%s not denied: %v %v", p, ok, err)
		}
		// Setting an ACL sets the mode's group bits to the mask; the mask
		// chosen keeps them, and setuid stays.
		if applied[p].mode != before[p].mode {
			t.Errorf("%s: mode %o became %o", p, before[p].mode, applied[p].mode)
		}
	}
	// Existing entries are kept; gid's rwx entry is emptied, mask kept.
	if got, want := mustParse(t, applied[filepath.Join(dir, "named")].acl), (ACL{{TagUserObj, 7, u}, {TagUser, 4, 1000}, {TagGroupObj, 5, u}, {TagGroup, 6, 50}, {TagGroup, 0, testGID}, {TagMask, 7, u}, {TagOther, 4, u}}); !slices.Equal(got, want) {
		t.Errorf("named: %v, want %v", got, want)
	}
	if got, want := mustParse(t, applied[filepath.Join(dir, "gidrwx")].acl), (ACL{{TagUserObj, 7, u}, {TagGroupObj, 5, u}, {TagGroup, 0, testGID}, {TagMask, 7, u}, {TagOther, 0, u}}); !slices.Equal(got, want) {
		t.Errorf("gidrwx: %v, want %v", got, want)
	}
	// Only the targets changed: not the file inside the directory, not the
	// symlinks.
	for _, p := range all {
		if !slices.Contains(targets, p) && p != filepath.Join(dir, "hardlink") {
			sameStates(t, "apply", map[string]state{p: before[p]}, map[string]state{p: applied[p]})
		}
	}
	st, err := CheckDeny(deny, testGID)
	if err != nil || len(st.Drift) != 0 || !slices.Equal(st.Denied, targets) || len(st.Absent) != 2 {
		t.Errorf("CheckDeny after apply: %+v %v", st, err)
	}
	journalAfterFirst, err := os.ReadFile(journal)
	if err != nil {
		t.Fatal(err)
	}

	// A second apply changes nothing and keeps the recorded "before".
	rep, err = ApplyDeny(deny, testGID, journal)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Denied) != 0 || !slices.Equal(rep.Already, targets) {
		t.Errorf("second apply: denied %v already %v", rep.Denied, rep.Already)
	}
	sameStates(t, "second apply", applied, snapshots(t, all))
	if j, _ := os.ReadFile(journal); !bytes.Equal(j, journalAfterFirst) {
		t.Errorf("second apply rewrote the journal:\n%s\nwas\n%s", j, journalAfterFirst)
	}

	ur, err := UndoDeny(journal)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ur.Restored, targets) || len(ur.Skipped) != 0 {
		t.Errorf("undo: %+v", ur)
	}
	sameStates(t, "apply, apply, undo", before, snapshots(t, all))
	if _, err := os.Stat(journal); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal left after undo: %v", err)
	}
	st, err = CheckDeny(deny, testGID)
	if err != nil || !slices.Equal(st.Drift, targets) {
		t.Errorf("CheckDeny after undo: %+v %v", st, err)
	}
	// Undo without a journal: nothing to do.
	if ur, err := UndoDeny(journal); err != nil || len(ur.Restored)+len(ur.Skipped) != 0 {
		t.Errorf("second undo: %+v %v", ur, err)
	}
}

// TestReapplyAfterDrift: the ACL was lost (say, chmod by an admin tool
// that rewrote it) between two applies; the journal's "before" is still
// the original, so undo restores the original and not the first apply's
// result.
func TestReapplyAfterDrift(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	f := filepath.Join(dir, "f")
	writeFile(t, f, []byte("x"), 0o750)
	setACL(t, f, ACL{{TagUserObj, 7, u}, {TagUser, 5, 1000}, {TagGroupObj, 5, u}, {TagMask, 5, u}, {TagOther, 0, u}})
	journal := filepath.Join(t.TempDir(), "acl.json")
	before := snapshots(t, []string{f})
	if _, err := ApplyDeny([]string{f}, testGID, journal); err != nil {
		t.Fatal(err)
	}
	must(t, unix.Removexattr(f, aclXattr))
	if st, _ := CheckDeny([]string{f}, testGID); !slices.Equal(st.Drift, []string{f}) {
		t.Fatalf("drift not seen: %+v", st)
	}
	rep, err := ApplyDeny([]string{f}, testGID, journal)
	if err != nil || !slices.Equal(rep.Denied, []string{f}) {
		t.Fatalf("re-apply: %+v %v", rep, err)
	}
	if _, err := UndoDeny(journal); err != nil {
		t.Fatal(err)
	}
	sameStates(t, "apply, drift, apply, undo", before, snapshots(t, []string{f}))
}

// TestDenyExec runs processes as a pool user would (uid in the pool, gid
// the pool's, no supplementary groups) against copies of /bin/true.
func TestDenyExec(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	trueBin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	denied, allowed := filepath.Join(dir, "denied-true"), filepath.Join(dir, "allowed-true")
	sub := filepath.Join(dir, "sub")
	must(t, os.Mkdir(sub, 0o755))
	must(t, os.Chmod(sub, 0o755))
	inSub := filepath.Join(sub, "true")
	for _, p := range []string{denied, allowed, inSub} {
		writeFile(t, p, trueBin, 0o755)
	}
	journal := filepath.Join(t.TempDir(), "acl.json")

	run := func(gid uint32, path string, args ...string) error {
		cmd := exec.Command(path, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: testUID, Gid: gid, Groups: []uint32{}}}
		return cmd.Run()
	}
	exitCode := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			return -1
		}
		return 0
	}
	// Before: everything runs.
	for _, p := range []string{denied, allowed, inSub} {
		if err := run(testGID, p); err != nil {
			t.Fatalf("%s before apply: %v", p, err)
		}
	}
	if _, err := ApplyDeny([]string{denied, sub}, testGID, journal); err != nil {
		t.Fatal(err)
	}
	if err := run(testGID, denied); !errors.Is(err, syscall.EACCES) {
		t.Errorf("exec of the denied copy: %v, want EACCES", err)
	}
	if err := run(testGID, "/bin/sh", "-c", denied); exitCode(err) != 126 {
		t.Errorf("sh -c denied copy: %v, want exit 126", err)
	}
	if err := run(testGID, inSub); !errors.Is(err, syscall.EACCES) {
		t.Errorf("exec inside the denied directory: %v, want EACCES", err)
	}
	if err := run(testGID, allowed); err != nil {
		t.Errorf("the allowed copy: %v", err)
	}
	// Only the group is denied: the same uid in another group runs it.
	if err := run(otherGID, denied); err != nil {
		t.Errorf("denied copy as gid %d: %v", otherGID, err)
	}
	if _, err := UndoDeny(journal); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{denied, inSub} {
		if err := run(testGID, p); err != nil {
			t.Errorf("%s after undo: %v", p, err)
		}
	}
}

func setImmutable(t *testing.T, path string, on bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("no inode flags here: %v", err)
	}
	if on {
		flags |= fsImmutFL
	} else {
		flags &^= fsImmutFL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		t.Fatalf("chattr %s: %v", path, err)
	}
}

// TestApplyDenyRollsBack fails a real setxattr part way (an immutable
// file: even root gets EPERM) and checks that every ACL and the journal
// are as before that apply.
func TestApplyDenyRollsBack(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	var files []string
	for _, n := range []string{"a", "b", "immutable", "d"} {
		p := filepath.Join(dir, n)
		writeFile(t, p, []byte("x"), 0o755)
		files = append(files, p)
	}
	setACL(t, files[1], mustParse(t, fixNamed))
	setImmutable(t, files[2], true)
	t.Cleanup(func() { setImmutable(t, files[2], false) })
	journal := filepath.Join(t.TempDir(), "acl.json")

	// No journal before: none after.
	before := snapshots(t, files)
	_, err := ApplyDeny(files, testGID, journal)
	if !errors.Is(err, unix.EPERM) {
		t.Fatalf("apply over an immutable file: %v, want EPERM", err)
	}
	sameStates(t, "failed apply", before, snapshots(t, files))
	if _, err := os.Stat(journal); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal after a rolled-back first apply: %v", err)
	}

	// A journal before: the same journal after, and what it covers (a,
	// denied by the first apply) stays denied.
	if _, err := ApplyDeny(files[:1], testGID, journal); err != nil {
		t.Fatal(err)
	}
	j1, _ := os.ReadFile(journal)
	mid := snapshots(t, files)
	if _, err := ApplyDeny(files, testGID, journal); !errors.Is(err, unix.EPERM) {
		t.Fatalf("second apply: %v, want EPERM", err)
	}
	sameStates(t, "failed second apply", mid, snapshots(t, files))
	if j2, _ := os.ReadFile(journal); !bytes.Equal(j1, j2) {
		t.Errorf("journal changed by a rolled-back apply:\n%s\nwas\n%s", j2, j1)
	}
	if _, err := UndoDeny(journal); err != nil {
		t.Fatal(err)
	}
	sameStates(t, "undo", before, snapshots(t, files))
}

// TestApplyDenyDropped: a path taken off the list gets its ACL back on
// the next apply.
func TestApplyDenyDropped(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("x"), 0o755)
	writeFile(t, b, []byte("x"), 0o755)
	setACL(t, b, mustParse(t, fixNamed))
	before := snapshots(t, []string{a, b})
	journal := filepath.Join(t.TempDir(), "acl.json")
	if _, err := ApplyDeny([]string{a, b}, testGID, journal); err != nil {
		t.Fatal(err)
	}
	rep, err := ApplyDeny([]string{a}, testGID, journal)
	if err != nil || !slices.Equal(rep.Restored, []string{b}) || !slices.Equal(rep.Already, []string{a}) {
		t.Fatalf("apply without b: %+v %v", rep, err)
	}
	sameStates(t, "dropped", map[string]state{b: before[b]}, snapshots(t, []string{b}))
	if ok, _ := DeniesGroup(a, testGID); !ok {
		t.Error("a lost its entry")
	}
	// Nothing on the list any more: everything back, no journal.
	if _, err := ApplyDeny(nil, testGID, journal); err != nil {
		t.Fatal(err)
	}
	sameStates(t, "empty list", before, snapshots(t, []string{a, b}))
	if _, err := os.Stat(journal); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal after emptying the list: %v", err)
	}
}

// TestUndoDenySkipsReplaced: a file replaced since the apply (a package
// upgrade) is not ours to change.
func TestUndoDenySkipsReplaced(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	writeFile(t, a, []byte("x"), 0o755)
	writeFile(t, b, []byte("x"), 0o755)
	journal := filepath.Join(t.TempDir(), "acl.json")
	if _, err := ApplyDeny([]string{a, b}, testGID, journal); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "a.new")
	writeFile(t, fresh, []byte("y"), 0o755)
	setACL(t, fresh, mustParse(t, fixNamed))
	must(t, os.Rename(fresh, a))
	replaced := snapshots(t, []string{a})
	rep, err := UndoDeny(journal)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Restored, []string{b}) || len(rep.Skipped) != 1 {
		t.Errorf("undo: %+v", rep)
	}
	sameStates(t, "replaced file", replaced, snapshots(t, []string{a}))
	if ok, _ := DeniesGroup(b, testGID); ok {
		t.Error("b still denied")
	}
}

func TestApplyDenyRefuses(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	ok := filepath.Join(dir, "ok")
	writeFile(t, ok, []byte("x"), 0o755)
	own := filepath.Join(dir, "own")
	writeFile(t, own, []byte("x"), 0o755)
	must(t, os.Chown(own, 0, testGID))
	fifo := filepath.Join(dir, "fifo")
	must(t, unix.Mkfifo(fifo, 0o644))
	journal := filepath.Join(t.TempDir(), "acl.json")
	before := snapshots(t, []string{ok, own, fifo})
	for _, tc := range []struct {
		paths []string
		want  string
	}{
		{[]string{ok, "relative/path"}, `"relative/path" is not absolute`},
		{[]string{ok, own}, "belongs to group 23100"},
		{[]string{ok, fifo}, "not a regular file or directory"},
	} {
		_, err := ApplyDeny(tc.paths, testGID, journal)
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("ApplyDeny(%v): %v, want an error with %q", tc.paths, err, tc.want)
		}
	}
	sameStates(t, "refused applies", before, snapshots(t, []string{ok, own, fifo}))
	if _, err := os.Stat(journal); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal after refusals: %v", err)
	}

	// A journal for another gid is refused too.
	if _, err := ApplyDeny([]string{ok}, testGID, journal); err != nil {
		t.Fatal(err)
	}
	mid := snapshots(t, []string{ok})
	if _, err := ApplyDeny([]string{ok}, otherGID, journal); !errors.Is(err, ErrJournalGID) {
		t.Errorf("apply for another gid: %v, want ErrJournalGID", err)
	}
	sameStates(t, "other gid", mid, snapshots(t, []string{ok}))
	if _, err := UndoDeny(journal); err != nil {
		t.Fatal(err)
	}
}

// TestKernelAgreesWithCodec: the kernel takes what Encode writes and hands
// back the same bytes, and the fixtures are what it produces.
func TestKernelAgreesWithCodec(t *testing.T) {
	testroot.Require(t)
	dir := worldDir(t)
	f := filepath.Join(dir, "f")
	writeFile(t, f, []byte("x"), 0o640)
	for _, a := range []ACL{mustParse(t, fixNamed), must2(ACLFromMode(0o640).WithGroupDenied(testGID))} {
		setACL(t, f, a)
		got := snapshot(t, f)
		if !bytes.Equal(got.acl, a.Encode()) {
			t.Errorf("kernel returned % x for % x", got.acl, a.Encode())
		}
		if g := uint16(got.mode>>3) & 7; g != mask(a) {
			t.Errorf("%v: mode group bits %o, want the mask %o", a, g, mask(a))
		}
	}
	// The kernel refuses what ParseACL refuses.
	bad := enc([3]uint32{1, 7, u}, [3]uint32{4, 5, u}, [3]uint32{8, 0, 9}, [3]uint32{0x20, 5, u}) // no mask
	if err := unix.Setxattr(f, aclXattr, bad, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("kernel took a named entry without a mask: %v", err)
	}
}

func must2(a ACL, _ bool) ACL { return a }

func BenchmarkApplyDeny200(b *testing.B) {
	testroot.Require(b)
	dir := b.TempDir()
	var paths []string
	for i := range 200 {
		p := filepath.Join(dir, fmt.Sprintf("cmd%03d", i))
		if err := os.WriteFile(p, []byte("x"), 0o755); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, p)
	}
	journal := filepath.Join(b.TempDir(), "acl.json")
	b.ResetTimer()
	for b.Loop() {
		if _, err := ApplyDeny(paths, testGID, journal); err != nil {
			b.Fatal(err)
		}
		if _, err := UndoDeny(journal); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
}
