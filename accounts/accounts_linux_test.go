package accounts

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/internal/testroot"
)

// A Debian host's account files, trimmed. group lacks its final newline
// on purpose; passwd carries a NIS compat line.
var etcFixture = map[string]struct {
	content string
	mode    os.FileMode
	gid     int // owner group when the test runs as root
}{
	"passwd": {"root:x:0:0:root:/root:/bin/bash\n" +
		"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n" +
		"alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash\n" +
		"+::::::\n", 0o644, 0},
	"shadow": {"root:*:19000:0:99999:7:::\n" +
		"daemon:*:19000:0:99999:7:::\n" +
		"nobody:*:19000:0:99999:7:::\n" +
		"alice:$y$j9T$abc$def:19500:0:99999:7:::\n", 0o640, 42},
	"group": {"root:x:0:\n" +
		"shadow:x:42:\n" +
		"users:x:100:alice\n" +
		"alice:x:1000:", 0o644, 0},
	"gshadow": {"root:*::\n" +
		"shadow:*::\n" +
		"users:*::alice\n" +
		"alice:!::\n", 0o640, 42},
}

const (
	acctGroup = "wardtest"
	acctGID   = 23200
	acctMin   = 23200
	acctMax   = 23299
)

func etcDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for name, f := range etcFixture {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(f.content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
		if os.Geteuid() == 0 {
			if err := os.Chown(p, 0, f.gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

type fileState struct {
	data     []byte
	mode     os.FileMode
	uid, gid uint32
}

func etcState(t *testing.T, dir string) map[string]fileState {
	t.Helper()
	m := map[string]fileState{}
	for name := range etcFixture {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		m[name] = fileState{b, st.Mode(), sys.Uid, sys.Gid}
	}
	return m
}

func sameEtc(t *testing.T, what string, before, after map[string]fileState) {
	t.Helper()
	for name, b := range before {
		a := after[name]
		if !bytes.Equal(a.data, b.data) || a.mode != b.mode || a.uid != b.uid || a.gid != b.gid {
			t.Errorf("%s: %s changed: %o %d:%d %q\nwas %o %d:%d %q", what, name, a.mode, a.uid, a.gid, a.data, b.mode, b.uid, b.gid, b.data)
		}
	}
}

func accounts(dir string) Entries {
	return Entries{EtcDir: dir, Group: acctGroup, GID: acctGID, UIDMin: acctMin, UIDMax: acctMax, Users: true, LockTimeout: time.Second}
}

func noJournal(t *testing.T, journal string) {
	t.Helper()
	if _, err := os.Stat(journal); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("journal %s: %v, want none", journal, err)
	}
}

func TestEnsureUndoAccounts(t *testing.T) {
	dir := etcDir(t)
	journal := filepath.Join(t.TempDir(), "users.json")
	before := etcState(t, dir)

	rep, err := Ensure(accounts(dir), journal)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{GroupCreated: true, UsersCreated: 100}); rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	after := etcState(t, dir)
	// Every existing line kept byte for byte; ours appended; owner and
	// mode as they were.
	var wantPasswd, wantShadow strings.Builder
	for uid := acctMin; uid <= acctMax; uid++ {
		fmt.Fprintf(&wantPasswd, "wardtest-%d:x:%d:23200::/nonexistent:/usr/sbin/nologin\n", uid, uid)
		fmt.Fprintf(&wantShadow, "wardtest-%d:!:::::::\n", uid)
	}
	for name, added := range map[string]string{
		"passwd":  wantPasswd.String(),
		"shadow":  wantShadow.String(),
		"group":   "\nwardtest:x:23200:\n", // the fixture lacked its final newline
		"gshadow": "wardtest:!::\n",
	} {
		if got, want := string(after[name].data), string(before[name].data)+added; got != want {
			t.Errorf("%s:\n%s\nwant\n%s", name, got, want)
		}
		if b, a := before[name], after[name]; a.mode != b.mode || a.uid != b.uid || a.gid != b.gid {
			t.Errorf("%s: %o %d:%d, was %o %d:%d", name, a.mode, a.uid, a.gid, b.mode, b.uid, b.gid)
		}
	}
	// The agent's passwd check accepts the entries as the pool's own.
	if err := NewUIDPool(acctMin, acctMax, acctGroup, acctGID).CheckPasswd(filepath.Join(dir, "passwd")); err != nil {
		t.Errorf("CheckPasswd: %v", err)
	}

	// Again: nothing to do.
	rep, err = Ensure(accounts(dir), journal)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{GroupExisted: true, UsersExisting: 100}); rep != want {
		t.Errorf("second run: %+v, want %+v", rep, want)
	}
	sameEtc(t, "second run", after, etcState(t, dir))

	rep, err = Undo(journal)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{GroupRemoved: true, UsersRemoved: 100}); rep != want {
		t.Errorf("undo: %+v, want %+v", rep, want)
	}
	undone := etcState(t, dir)
	for name := range before {
		if name == "group" {
			// The newline added before our line stays: the rest is gone.
			if got := string(undone[name].data); got != string(before[name].data)+"\n" {
				t.Errorf("group after undo: %q", got)
			}
			continue
		}
		sameEtc(t, "undo", map[string]fileState{name: before[name]}, map[string]fileState{name: undone[name]})
	}
	noJournal(t, journal)
	if rep, err := Undo(journal); err != nil || rep != (Report{}) {
		t.Errorf("undo without a journal: %+v %v", rep, err)
	}
}

// TestUndoAccountsRemovesOnlyOurs: entries added by others after setup,
// and pool entries that were there before it, stay.
func TestUndoAccountsRemovesOnlyOurs(t *testing.T) {
	dir := etcDir(t)
	pw := filepath.Join(dir, "passwd")
	// A pool entry from before ward setup (say, a previous install).
	appendLine(t, pw, "wardtest-23200:x:23200:23200::/nonexistent:/usr/sbin/nologin")
	appendLine(t, filepath.Join(dir, "group"), "\nwardtest:x:23200:")
	before := etcState(t, dir)
	journal := filepath.Join(t.TempDir(), "users.json")
	rep, err := Ensure(accounts(dir), journal)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Report{GroupExisted: true, UsersCreated: 99, UsersExisting: 1}); rep != want {
		t.Errorf("report %+v, want %+v", rep, want)
	}
	appendLine(t, pw, "carol:x:1001:1001::/home/carol:/bin/sh")
	if rep, err := Undo(journal); err != nil || rep != (Report{UsersRemoved: 99}) {
		t.Fatalf("undo: %+v %v", rep, err)
	}
	after := etcState(t, dir)
	if got, want := string(after["passwd"].data), string(before["passwd"].data)+"carol:x:1001:1001::/home/carol:/bin/sh\n"; got != want {
		t.Errorf("passwd after undo:\n%s\nwant\n%s", got, want)
	}
	// The shadow and gshadow lines setup added go too, even for the user
	// and the group that were there before it.
	for _, name := range []string{"group", "gshadow", "shadow"} {
		sameEtc(t, "undo", map[string]fileState{name: before[name]}, map[string]fileState{name: after[name]})
	}
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
}

func TestEnsureAccountsRefusesClashes(t *testing.T) {
	for _, tc := range []struct {
		file, line, want string
	}{
		{"passwd", "bob:x:23250:100::/home/bob:/bin/sh", `uid 23250 belongs to user "bob"`},
		{"passwd", "wardtest-23210:x:5000:23200::/:/bin/sh", `user name "wardtest-23210" is taken`},
		{"passwd", "wardtest-23211:x:23211:100::/nonexistent:/usr/sbin/nologin", `uid 23211 belongs to user "wardtest-23211"`},
		{"group", "\nwardtest:x:999:", `group "wardtest" has gid 999`},
		{"group", "\nother:x:23200:", `gid 23200 belongs to group "other"`},
	} {
		dir := etcDir(t)
		appendLine(t, filepath.Join(dir, tc.file), tc.line)
		before := etcState(t, dir)
		journal := filepath.Join(t.TempDir(), "users.json")
		_, err := Ensure(accounts(dir), journal)
		if !errors.Is(err, ErrClash) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: %v, want ErrClash with %q", tc.file, tc.line, err, tc.want)
		}
		sameEtc(t, "refused", before, etcState(t, dir))
		noJournal(t, journal)
	}
	// Without users, a uid in the pool range is not ours to judge (the
	// agent refuses to start on it): only the group matters.
	dir := etcDir(t)
	appendLine(t, filepath.Join(dir, "passwd"), "bob:x:23250:100::/home/bob:/bin/sh")
	a := accounts(dir)
	a.Users = false
	if rep, err := Ensure(a, filepath.Join(t.TempDir(), "users.json")); err != nil || rep != (Report{GroupCreated: true}) {
		t.Errorf("group only: %+v %v", rep, err)
	}
}

// TestEnsureAccountsConverges: a shrunk range or users turned off remove
// the users the journal says setup added, and only those.
func TestEnsureAccountsConverges(t *testing.T) {
	dir := etcDir(t)
	before := etcState(t, dir)
	journal := filepath.Join(t.TempDir(), "users.json")
	a := accounts(dir)
	if _, err := Ensure(a, journal); err != nil {
		t.Fatal(err)
	}
	a.UIDMax = acctMin + 9
	rep, err := Ensure(a, journal)
	if err != nil || rep != (Report{GroupExisted: true, UsersExisting: 10, UsersRemoved: 90}) {
		t.Fatalf("shrunk: %+v %v", rep, err)
	}
	pw, _ := os.ReadFile(filepath.Join(dir, "passwd"))
	sh, _ := os.ReadFile(filepath.Join(dir, "shadow"))
	if n, m := strings.Count(string(pw), "wardtest-"), strings.Count(string(sh), "wardtest-"); n != 10 || m != 10 {
		t.Errorf("after shrinking: %d passwd and %d shadow entries, want 10", n, m)
	}
	a.Users = false
	if rep, err := Ensure(a, journal); err != nil || rep != (Report{GroupExisted: true, UsersRemoved: 10}) {
		t.Fatalf("users off: %+v %v", rep, err)
	}
	if _, err := Undo(journal); err != nil {
		t.Fatal(err)
	}
	after := etcState(t, dir)
	after["group"] = fileState{bytes.TrimSuffix(after["group"].data, []byte("\n")), after["group"].mode, after["group"].uid, after["group"].gid}
	sameEtc(t, "ensure, shrink, off, undo", before, after)
	noJournal(t, journal)

	// A journal for another group or gid is refused.
	if _, err := Ensure(accounts(dir), journal); err != nil {
		t.Fatal(err)
	}
	b := accounts(dir)
	b.GID = acctGID + 1
	if _, err := Ensure(b, journal); !errors.Is(err, ErrJournalConfig) {
		t.Errorf("another gid: %v, want ErrJournalConfig", err)
	}
}

func TestEnsureAccountsWaitsForLock(t *testing.T) {
	dir := etcDir(t)
	// An OFD lock conflicts with Ensure' even within this process,
	// as lckpwdf's does from another one.
	fd, err := unix.Open(filepath.Join(dir, ".pwd.lock"), unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	before := etcState(t, dir)
	a := accounts(dir)
	a.LockTimeout = 50 * time.Millisecond
	journal := filepath.Join(t.TempDir(), "users.json")
	if _, err := Ensure(a, journal); !errors.Is(err, ErrLocked) {
		t.Fatalf("with the lock held: %v, want ErrLocked", err)
	}
	sameEtc(t, "locked", before, etcState(t, dir))
	lk.Type = unix.F_UNLCK
	if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != nil {
		t.Fatal(err)
	}
	if _, err := Ensure(a, journal); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
}

// TestEnsureAccountsRollsBack fails the last file's replacement for real
// (an immutable shadow: rename over it is EPERM even for root) and checks
// the files written before it are put back.
func TestEnsureAccountsRollsBack(t *testing.T) {
	testroot.Require(t)
	dir := etcDir(t)
	before := etcState(t, dir)
	shadow := filepath.Join(dir, "shadow")
	setImmutable(t, shadow, true)
	t.Cleanup(func() { setImmutable(t, shadow, false) })
	journal := filepath.Join(t.TempDir(), "users.json")
	if _, err := Ensure(accounts(dir), journal); !errors.Is(err, unix.EPERM) {
		t.Fatalf("with shadow immutable: %v, want EPERM", err)
	}
	sameEtc(t, "rolled back", before, etcState(t, dir))
	noJournal(t, journal)
	// No temporary files left behind.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("left over: %s", e.Name())
		}
	}
}

func BenchmarkEnsureAccounts10000(b *testing.B) {
	dir := etcDir(b)
	journal := filepath.Join(b.TempDir(), "users.json")
	a := accounts(dir)
	a.UIDMax = acctMin + 9999
	for b.Loop() {
		if _, err := Ensure(a, journal); err != nil {
			b.Fatal(err)
		}
		if _, err := Undo(journal); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/op")
}

func TestEnsureAccountsBadInput(t *testing.T) {
	dir := etcDir(t)
	before := etcState(t, dir)
	for _, tc := range []struct {
		edit func(*Entries)
		want string
	}{
		{func(a *Entries) { a.Group = "a:b" }, "users.group"},
		{func(a *Entries) { a.GID = 0 }, "users.gid"},
		{func(a *Entries) { a.UIDMax = a.UIDMin - 1 }, "users.uid_min..uid_max"},
		{func(a *Entries) { a.UIDMax = a.UIDMin + MaxPoolUsers }, "at most 100000"},
	} {
		a := accounts(dir)
		tc.edit(&a)
		journal := filepath.Join(t.TempDir(), "users.json")
		if _, err := Ensure(a, journal); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %q", a, err, tc.want)
		}
		noJournal(t, journal)
	}
	sameEtc(t, "bad input", before, etcState(t, dir))
}

// fsImmutFL is FS_IMMUTABLE_FL (chattr +i).
const fsImmutFL = 0x00000010

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
