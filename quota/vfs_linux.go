package quota

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/config"
)

// vfsBackend drives the kernel's generic disk quotas (ext4, XFS) through
// quotactl(2), for one quota type:
//
//   - project (PRJQUOTA): the instance directory gets project id = the
//     instance's uid, with FS_XFLAG_PROJINHERIT so that everything created
//     under it inherits the id. Pooled uids are leased to one instance at a
//     time, so the mapping is one-to-one while the instance lives; 0 (the
//     default project of every unmarked file) is refused.
//   - user (USRQUOTA): the limit is on the uid itself. It counts every
//     file the uid owns on the filesystem, inside the directory or not
//     (a /tmp on the same filesystem, for instance).
//
// Limits are set in 1 KiB quota blocks, rounded up from bytes.
type vfsBackend struct {
	kind  config.QuotaBackend
	qtype uint32
	path  string
}

func (b *vfsBackend) Name() config.QuotaBackend { return b.kind }

func (b *vfsBackend) Create(t Target, limitBytes int64) error {
	if err := checkTarget(t, b.path, true); err != nil {
		return err
	}
	if err := mkdirFresh(t.Dir); err != nil {
		return err
	}
	// The project id first: removing the directory undoes it.
	var err error
	if b.qtype == prjQuota {
		err = setProjectID(t.Dir, t.UID)
	}
	if err == nil {
		err = b.setLimit(t.UID, limitBytes)
	}
	if err != nil {
		err = fmt.Errorf("quota: create %s: %w", t.Dir, err)
		if rerr := os.Remove(t.Dir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("quota: roll back: %w", rerr))
		}
		return err
	}
	return nil
}

func (b *vfsBackend) SetLimit(t Target, limitBytes int64) error {
	if err := checkTarget(t, b.path, true); err != nil {
		return err
	}
	if err := b.setLimit(t.UID, limitBytes); err != nil {
		return fmt.Errorf("quota: set limit of %s: %w", t.Dir, err)
	}
	return nil
}

// setLimit writes the block limits of quota id: hard = limitBytes, no soft
// limit; <= 0 clears both, so a reused id never inherits an old limit.
func (b *vfsBackend) setLimit(id uint32, limitBytes int64) error {
	q := ifDqblk{BHardlimit: bytesToQuotaBlocks(limitBytes), Valid: qifBLimits}
	if err := b.quotactl(qSetQuota, id, unsafe.Pointer(&q)); err != nil {
		return fmt.Errorf("%s quota %d: set limit: %w", b.kind, id, err)
	}
	return nil
}

func (b *vfsBackend) Usage(t Target) (int64, error) {
	if err := checkTarget(t, b.path, true); err != nil {
		return 0, err
	}
	var q ifDqblk
	if err := b.quotactl(qGetQuota, t.UID, unsafe.Pointer(&q)); err != nil {
		return 0, fmt.Errorf("quota: usage of %s (%s quota %d): %w", t.Dir, b.kind, t.UID, err)
	}
	return int64(q.CurSpace), nil
}

// Remove deletes the directory, then clears the id's block and inode
// limits so that the next instance leasing the uid starts clean. With
// quotas off (ESRCH, ENOSYS) no limit is in force to clear.
func (b *vfsBackend) Remove(t Target) error {
	if err := checkTarget(t, b.path, true); err != nil {
		return err
	}
	if err := os.RemoveAll(t.Dir); err != nil {
		return fmt.Errorf("quota: remove %s: %w", t.Dir, err)
	}
	return b.clearLimits(t.Dir, t.UID)
}

// clearLimits clears the block and inode limits of quota id, once dir (the
// directory it was for) is gone.
func (b *vfsBackend) clearLimits(dir string, id uint32) error {
	q := ifDqblk{Valid: qifLimits}
	err := b.quotactl(qSetQuota, id, unsafe.Pointer(&q))
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOSYS) {
		return fmt.Errorf("quota: remove %s: clear %s quota %d: %w", dir, b.kind, id, err)
	}
	return nil
}

// RemoveLeftover removes dir and then, when it is the leftover's own,
// the quota of the uid owning it (see clearsLeftover). The owner is what
// root made it (instdir.Prepare's chown), which an instance cannot change;
// the project id the directory carries can be changed by its owner
// (FS_IOC_FSSETXATTR), so it is not trusted here.
func (b *vfsBackend) RemoveLeftover(dir string, leased func(uid uint32) bool) error {
	if err := checkTarget(Target{Dir: dir}, b.path, false); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("quota: remove %s: %w", dir, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("quota: remove %s: %w", dir, err)
	}
	// Asked once the directory is gone, as late as it can be: a uid
	// leased again meanwhile keeps its new holder's limit.
	if !clearsLeftover(st.Uid, leased) {
		return nil
	}
	return b.clearLimits(dir, st.Uid)
}

// clearsLeftover says whether a leftover directory owned by uid takes the
// uid's quota with it: not when uid is root's (whose quota, user or the
// default project's, is not an instance's; the directory was never handed
// over, and the uid it was made for is unknown) nor when uid is leased to
// a live instance, which the limit now belongs to.
func clearsLeftover(uid uint32, leased func(uint32) bool) bool {
	return uid != 0 && !leased(uid)
}

// Verify asks the kernel whether quotas of the backend's type are on
// (Q_GETINFO) and enforced (Q_XGETQSTATV, which XFS and ext4 both answer),
// and for project quotas whether a directory can be given a project id.
func (b *vfsBackend) Verify() error {
	var info ifDqinfo
	if err := b.quotactl(qGetInfo, 0, unsafe.Pointer(&info)); err != nil {
		return notEnforced("%s quotas are not on for the filesystem of %s (%v); %s", b.kind, b.path, err, b.fix())
	}
	st := fsQuotaStatv{Version: fsQStatVVersion1}
	if err := b.quotactl(qXGetQStatV, 0, unsafe.Pointer(&st)); err != nil {
		return notEnforced("%s quota state of %s: %v; %s", b.kind, b.path, err, b.fix())
	}
	if st.Flags&enforcedFlag(b.qtype) == 0 {
		return notEnforced("%s quotas on the filesystem of %s are accounted but not enforced; %s", b.kind, b.path, b.fix())
	}
	if b.qtype == prjQuota {
		dir := probeDir(b.path)
		if err := mkdirFresh(dir); err != nil {
			return notEnforced("probe: %v", err)
		}
		err := setProjectID(dir, probeProjectID)
		os.Remove(dir)
		if err != nil {
			return notEnforced("cannot give %s a project id (%v); %s", b.path, err, b.fix())
		}
	}
	return nil
}

// probeProjectID marks Verify's probe directory for the instant it exists;
// pool uids (= project ids) are far below it.
const probeProjectID = 0xfffffffe

func (b *vfsBackend) fix() string {
	if b.qtype == prjQuota {
		return "mount it with project quotas and turn them on (ext4: tune2fs -O project,quota -Q prjquota <dev>, mount -o prjquota, quotaon -P; XFS: mount -o prjquota)"
	}
	return "mount it with user quotas and turn them on (ext4: tune2fs -O quota -Q usrquota <dev>, mount -o usrquota, quotaon -u; XFS: mount -o usrquota)"
}

// quotactl runs quotactl_fd(2) on the backend's path, or quotactl(2) on the
// path's block device where quotactl_fd is missing (Linux < 5.14).
// ENOSYS is ambiguous: quotactl_fd also answers it for filesystems without
// quota support, in which case quotactl answers it again.
func (b *vfsBackend) quotactl(cmd, id uint32, addr unsafe.Pointer) error {
	c := uintptr(qcmd(cmd, b.qtype))
	fd, err := unix.Open(b.path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, _, e := unix.Syscall6(unix.SYS_QUOTACTL_FD, uintptr(fd), c, uintptr(id), uintptr(addr), 0, 0)
	var st unix.Stat_t
	if e == unix.ENOSYS {
		err = unix.Fstat(fd, &st)
	}
	unix.Close(fd)
	if e != unix.ENOSYS {
		if e != 0 {
			return e
		}
		return nil
	}
	if err != nil {
		return err
	}
	dev, err := mountSource(uint64(st.Dev))
	if err != nil {
		return unix.ENOSYS
	}
	special, err := unix.BytePtrFromString(dev)
	if err != nil {
		return err
	}
	if _, _, e := unix.Syscall6(unix.SYS_QUOTACTL, c, uintptr(unsafe.Pointer(special)), uintptr(id), uintptr(addr), 0, 0); e != 0 {
		return e
	}
	return nil
}

// mountSource is the source (block device) of a mount of device dev, from
// /proc/self/mountinfo.
func mountSource(dev uint64) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if src, ok := parseMountinfoSource(sc.Text(), want); ok {
			return src, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no mount of device %s", want)
}

// setProjectID gives directory dir project id projid, inherited by
// everything created under it.
func setProjectID(dir string, projid uint32) error {
	fd, err := openDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var a fsxattr
	if err := ioctl(fd, ioctlFsGetXattr, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("get fsxattr: %w", err)
	}
	a.Projid = projid
	a.Xflags |= fsXflagProjInherit
	if err := ioctl(fd, ioctlFsSetXattr, unsafe.Pointer(&a)); err != nil {
		return fmt.Errorf("set project id %d: %w", projid, err)
	}
	return nil
}
