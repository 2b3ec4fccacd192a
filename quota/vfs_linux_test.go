package quota

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/btrfstest"
	"github.com/hostward/ward/internal/testroot"
)

// The kernel these tests run on has CONFIG_QUOTA but no quota format for
// ext4 (QFMT_V2) and no XFS quota, and an ext4 made with the project
// feature does not mount. The tests pin what it does answer: that proves
// the commands are well-formed (a malformed one gets EINVAL), and that
// ward refuses to pretend.

// ext4Dir is a fresh directory on an ext4 filesystem (/var/tmp, on the
// root filesystem of the test machines).
func ext4Dir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "quota-ext4-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC {
		t.Skipf("/var/tmp is not ext4 (magic %#x)", st.Type)
	}
	return dir
}

func getFsxattr(t testing.TB, dir string) fsxattr {
	t.Helper()
	fd, err := openDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var a fsxattr
	if err := ioctl(fd, ioctlFsGetXattr, unsafe.Pointer(&a)); err != nil {
		t.Fatalf("FS_IOC_FSGETXATTR %s: %v", dir, err)
	}
	return a
}

func setFsxattr(dir string, a fsxattr) error {
	fd, err := openDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return ioctl(fd, ioctlFsSetXattr, unsafe.Pointer(&a))
}

// On ext4 without the project feature the kernel keeps project id 0 but
// takes the inherit flag; btrfs takes neither (it refuses any fsxattr
// field beyond the common flags).
func TestFsxattrProjectID(t *testing.T) {
	testroot.Require(t)
	t.Run("ext4", func(t *testing.T) {
		dir := ext4Dir(t)
		a := getFsxattr(t, dir)
		if a.Projid != 0 || a.Xflags&fsXflagProjInherit != 0 {
			t.Fatalf("fresh dir: %+v", a)
		}
		a.Xflags |= fsXflagProjInherit
		if err := setFsxattr(dir, a); err != nil {
			t.Fatalf("set PROJINHERIT with project 0: %v", err)
		}
		if got := getFsxattr(t, dir); got.Xflags&fsXflagProjInherit == 0 || got.Projid != 0 {
			t.Errorf("read back %+v, want PROJINHERIT set", got)
		}
		err := setProjectID(dir, 4_100_001)
		if !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("project id on ext4 without the project feature: %v, want EOPNOTSUPP", err)
		}
		if got := getFsxattr(t, dir); got.Projid != 0 {
			t.Errorf("projid %d after a refused set", got.Projid)
		}
	})
	t.Run("btrfs", func(t *testing.T) {
		mnt := btrfstest.Mount(t)
		dir := filepath.Join(mnt, "d")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := setProjectID(dir, 4_100_001); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("project id on btrfs: %v, want EOPNOTSUPP", err)
		}
		a := getFsxattr(t, dir)
		a.Xflags |= fsXflagProjInherit
		if err := setFsxattr(dir, a); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("PROJINHERIT on btrfs: %v, want EOPNOTSUPP", err)
		}
	})
}

// ESRCH is the kernel's "no quota of this type is on": it parsed the
// command, type and id and looked. ENOSYS: the filesystem has no quota
// operations at all.
func TestQuotactlAnswers(t *testing.T) {
	testroot.Require(t)
	for _, typ := range []uint32{usrQuota, prjQuota} {
		b := &vfsBackend{kind: "t", qtype: typ, path: ext4Dir(t)}
		var q ifDqblk
		if err := b.quotactl(qGetQuota, 4_100_001, unsafe.Pointer(&q)); !errors.Is(err, unix.ESRCH) {
			t.Errorf("type %d: Q_GETQUOTA on ext4 without quota: %v, want ESRCH", typ, err)
		}
		var info ifDqinfo
		if err := b.quotactl(qGetInfo, 0, unsafe.Pointer(&info)); !errors.Is(err, unix.ESRCH) {
			t.Errorf("type %d: Q_GETINFO on ext4 without quota: %v, want ESRCH", typ, err)
		}
		// The kernel answers ENOSYS when no quota type is accounted at
		// all (quota_getstatev: qs_flags == 0), and EINVAL for a version
		// it does not know, before it looks.
		st := fsQuotaStatv{Version: fsQStatVVersion1}
		if err := b.quotactl(qXGetQStatV, 0, unsafe.Pointer(&st)); !errors.Is(err, unix.ENOSYS) {
			t.Errorf("type %d: Q_XGETQSTATV on ext4 without quota: %v, want ENOSYS", typ, err)
		}
		q = ifDqblk{BHardlimit: 1024, Valid: qifBLimits}
		if err := b.quotactl(qSetQuota, 4_100_001, unsafe.Pointer(&q)); !errors.Is(err, unix.ESRCH) {
			t.Errorf("type %d: Q_SETQUOTA on ext4 without quota: %v, want ESRCH", typ, err)
		}
		// A command the kernel does not know is refused differently.
		if err := b.quotactl(0x800099, 0, unsafe.Pointer(&q)); !errors.Is(err, unix.EINVAL) {
			t.Errorf("type %d: unknown command: %v, want EINVAL", typ, err)
		}
	}
	b := &vfsBackend{kind: "t", qtype: prjQuota, path: btrfstest.Mount(t)}
	var info ifDqinfo
	if err := b.quotactl(qGetInfo, 0, unsafe.Pointer(&info)); !errors.Is(err, unix.ENOSYS) {
		t.Errorf("Q_GETINFO on btrfs: %v, want ENOSYS", err)
	}
}

func TestVFSVerifyNotEnforced(t *testing.T) {
	testroot.Require(t)
	for _, kind := range []config.QuotaBackend{config.QuotaProject, config.QuotaUser} {
		b, err := New(kind, ext4Dir(t))
		if err != nil {
			t.Fatal(err)
		}
		err = b.Verify()
		if !errors.Is(err, ErrNotEnforced) || !strings.Contains(err.Error(), "quotaon") {
			t.Errorf("%s Verify on ext4 without quota: %v; want ErrNotEnforced with the fix", kind, err)
		}
		t.Log(err)
		b, err = New(kind, btrfstest.Mount(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Verify(); !errors.Is(err, ErrNotEnforced) {
			t.Errorf("%s Verify on btrfs: %v; want ErrNotEnforced", kind, err)
		}
	}
}

// Create must leave nothing when the kernel refuses the quota.
func TestVFSCreateRollsBack(t *testing.T) {
	testroot.Require(t)
	for _, kind := range []config.QuotaBackend{config.QuotaProject, config.QuotaUser} {
		root := ext4Dir(t)
		b, err := New(kind, root)
		if err != nil {
			t.Fatal(err)
		}
		tg := Target{Dir: filepath.Join(root, "inst"), UID: 4_100_002}
		err = b.Create(tg, 10*mib)
		if err == nil {
			t.Fatalf("%s Create without quota support succeeded", kind)
		}
		t.Log(err)
		if _, serr := os.Lstat(tg.Dir); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%s: dir after failed Create: %v", kind, serr)
		}
		if err := b.Create(Target{Dir: tg.Dir}, mib); err == nil || !strings.Contains(err.Error(), "target.uid") {
			t.Errorf("%s Create with uid 0: %v", kind, err)
		}
		// Remove is still possible (quotas off: nothing to clear).
		if err := os.Mkdir(tg.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := b.Remove(tg); err != nil {
			t.Errorf("%s Remove: %v", kind, err)
		}
		if _, serr := os.Lstat(tg.Dir); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%s: dir after Remove: %v", kind, serr)
		}
	}
}

// The fallback to quotactl(2) needs the block device of a directory.
// (btrfs is no case for it: it has no quotactl support, and its st_dev is
// a per-subvolume anonymous device that mountinfo does not show.)
func TestMountSource(t *testing.T) {
	dir := ext4Dir(t)
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	src, err := mountSource(st.Dev)
	if err != nil {
		t.Fatal(err)
	}
	var dev unix.Stat_t
	if err := unix.Stat(src, &dev); err != nil {
		t.Fatalf("source %q: %v", src, err)
	}
	if dev.Mode&unix.S_IFMT != unix.S_IFBLK || dev.Rdev != st.Dev {
		t.Errorf("source %q of %s: mode %o rdev %#x, want the block device %#x", src, dir, dev.Mode, dev.Rdev, st.Dev)
	}
}

func TestClearsLeftover(t *testing.T) {
	leased := func(uid uint32) bool { return uid == 4_100_010 }
	for _, c := range []struct {
		uid  uint32
		want bool
	}{
		{0, false},         // root's: never handed over, its uid unknown
		{4_100_010, false}, // leased again: the live instance's limit
		{4_100_011, true},  // free: the leftover's own
	} {
		if got := clearsLeftover(c.uid, leased); got != c.want {
			t.Errorf("owner %d: clears %v, want %v", c.uid, got, c.want)
		}
	}
}

// RemoveLeftover removes the directory whoever owns it, and asks about the
// owner's uid — the quota id — and nothing else. With quotas off (all this
// kernel offers, see the top of this file) the clear itself is a no-op
// that must not fail the removal.
func TestVFSRemoveLeftover(t *testing.T) {
	testroot.Require(t)
	for _, kind := range []config.QuotaBackend{config.QuotaProject, config.QuotaUser} {
		root := ext4Dir(t)
		b, err := New(kind, root)
		if err != nil {
			t.Fatal(err)
		}
		for _, owner := range []uint32{0, 4_100_020, 4_100_021} {
			dir := filepath.Join(root, "left")
			if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "logs", "stdout.log"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, int(owner), int(owner)); err != nil {
				t.Fatal(err)
			}
			var asked []uint32
			leased := func(uid uint32) bool { asked = append(asked, uid); return uid == 4_100_020 }
			if err := b.RemoveLeftover(dir, leased); err != nil {
				t.Errorf("%s, owner %d: %v", kind, owner, err)
			}
			if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s, owner %d: dir after RemoveLeftover: %v", kind, owner, err)
			}
			switch {
			case owner == 0 && len(asked) != 0:
				t.Errorf("%s: root's dir asked about uids %v", kind, asked)
			case owner != 0 && (len(asked) != 1 || asked[0] != owner):
				t.Errorf("%s, owner %d: asked about %v, want the owner", kind, owner, asked)
			}
		}
		if err := b.RemoveLeftover(filepath.Join(root, "never-made"), nil); err != nil {
			t.Errorf("%s: RemoveLeftover of a dir never made: %v", kind, err)
		}
		if err := b.RemoveLeftover("/elsewhere/left", nil); err == nil || !strings.Contains(err.Error(), "target.dir") {
			t.Errorf("%s: RemoveLeftover outside the path: err = %v", kind, err)
		}
	}
}
