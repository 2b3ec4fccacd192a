package quota

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/config"
)

// btrfsBackend makes every instance directory a btrfs subvolume S and
// limits it through a level-1 qgroup 1/S that S's own qgroup 0/S belongs to.
// The limit sits on 1/S rather than 0/S because a tenant can create
// subvolumes inside its directory without privilege: each gets its own
// level-0 qgroup, which 0/S's limit does not cover. With simple quotas the
// kernel puts such a subvolume into the level-1 groups of the subvolume it
// was created in, so 1/S counts everything under the directory; Verify
// insists on simple quotas for that reason.
//
// Usage reads 1/S's "referenced" counter from sysfs rather than searching
// the quota tree: sysfs shows the kernel's in-memory counter (the search
// would read the item last committed to disk, which is no fresher), needs
// neither CAP_SYS_ADMIN nor item parsing, and costs one small file read.
// Both are updated when a transaction commits (every 30 s by default, or on
// sync): usage lags writes by up to that long. Enforcement does not lag: a
// write is checked against the limit when its space is reserved.
type btrfsBackend struct{ path string }

func (*btrfsBackend) Name() config.QuotaBackend { return config.QuotaBtrfs }

func (b *btrfsBackend) Create(t Target, limitBytes int64) error {
	if err := checkTarget(t, b.path, false); err != nil {
		return err
	}
	parent, name := filepath.Split(t.Dir)
	pfd, err := openDir(parent)
	if err != nil {
		return fmt.Errorf("quota: create %s: open parent: %w", t.Dir, err)
	}
	defer unix.Close(pfd)
	if err := subvolCreate(pfd, name); err != nil {
		return fmt.Errorf("quota: create subvolume %s: %w", t.Dir, err)
	}
	id, err := b.limitNew(pfd, name, limitBytes)
	if err != nil {
		err = fmt.Errorf("quota: create %s: %w", t.Dir, err)
		if rerr := b.teardown(pfd, name, id); rerr != nil {
			err = errors.Join(err, fmt.Errorf("quota: roll back %s: %w", t.Dir, rerr))
		}
		return err
	}
	return nil
}

// limitNew sets up the fresh subvolume name in pfd: mode 0700, its level-1
// qgroup and the limit. It returns the subvolume id as soon as it is known
// (0 before) so that a failure can be rolled back. The qgroup ioctls go
// through pfd, see teardownOnce.
func (b *btrfsBackend) limitNew(pfd int, name string, limitBytes int64) (uint64, error) {
	fd, err := openDirAt(pfd, name)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	// The kernel makes a subvolume root 0755 less the umask.
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return 0, fmt.Errorf("chmod: %w", err)
	}
	id, err := subvolID(fd)
	if err != nil {
		return 0, err
	}
	group := qgroupID(1, id)
	// EEXIST can only be a group leaked by a crash between its creation
	// and its subvolume's removal; the assignment and limit below make it
	// this subvolume's.
	err = qgroupCreate(pfd, group, true)
	if errors.Is(err, unix.ENOTCONN) {
		return id, fmt.Errorf("create qgroup %s: btrfs quotas are off (`ward setup` turns them on): %w", qgroupString(group), err)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return id, fmt.Errorf("create qgroup %s: %w", qgroupString(group), err)
	}
	if err := qgroupAssign(pfd, qgroupID(0, id), group, true); err != nil && !errors.Is(err, unix.EEXIST) {
		return id, fmt.Errorf("assign qgroup 0/%d to %s: %w", id, qgroupString(group), err)
	}
	if limitBytes > 0 {
		if err := qgroupLimit(pfd, group, limitBytes); err != nil {
			return id, fmt.Errorf("limit qgroup %s: %w", qgroupString(group), err)
		}
	}
	return id, nil
}

func (b *btrfsBackend) SetLimit(t Target, limitBytes int64) error {
	if err := checkTarget(t, b.path, false); err != nil {
		return err
	}
	parent, name := filepath.Split(t.Dir)
	pfd, err := openDir(parent)
	if err != nil {
		return fmt.Errorf("quota: set limit of %s: %w", t.Dir, err)
	}
	defer unix.Close(pfd)
	fd, id, err := openSubvolAt(pfd, name)
	if err != nil {
		return fmt.Errorf("quota: set limit of %s: %w", t.Dir, err)
	}
	unix.Close(fd)
	if err := qgroupLimit(pfd, qgroupID(1, id), limitBytes); err != nil {
		return fmt.Errorf("quota: set limit of %s (qgroup 1/%d): %w", t.Dir, id, err)
	}
	return nil
}

func (b *btrfsBackend) Usage(t Target) (int64, error) {
	if err := checkTarget(t, b.path, false); err != nil {
		return 0, err
	}
	fd, id, err := openSubvolAt(unix.AT_FDCWD, t.Dir)
	if err != nil {
		return 0, fmt.Errorf("quota: usage of %s: %w", t.Dir, err)
	}
	defer unix.Close(fd)
	sys, err := btrfsSysfsDir(fd)
	if err != nil {
		return 0, fmt.Errorf("quota: usage of %s: %w", t.Dir, err)
	}
	n, err := readUint(filepath.Join(sys, "qgroups", qgroupSysfsName(qgroupID(1, id)), "referenced"))
	if err != nil {
		return 0, fmt.Errorf("quota: usage of %s: %w", t.Dir, err)
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("quota: usage of %s: counter %d out of range", t.Dir, n)
	}
	return int64(n), nil
}

// Remove drops the level-1 qgroup first and the subvolumes after it, so
// that a crash in between leaves a directory whose next Remove finishes
// the job, never a group without a directory to find it by. The level-0
// qgroups of destroyed subvolumes cannot be deleted until the kernel's
// cleaner has dropped their trees (the kernel answers EBUSY). The kernel
// then deletes them itself (seen on 6.18, and tested), and they carry no
// limit, so Remove does not wait for the cleaner.
func (b *btrfsBackend) Remove(t Target) error {
	if err := checkTarget(t, b.path, false); err != nil {
		return err
	}
	parent, name := filepath.Split(t.Dir)
	pfd, err := openDir(parent)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("quota: remove %s: open parent: %w", t.Dir, err)
	}
	defer unix.Close(pfd)
	fd, err := openDirAt(pfd, name)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		return removeAll(t.Dir) // a file or symlink: not ours to keep either
	case err != nil:
		return fmt.Errorf("quota: remove %s: %w", t.Dir, err)
	}
	root, err := isSubvolRoot(fd)
	if err != nil || !root {
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("quota: remove %s: %w", t.Dir, err)
		}
		return removeAll(t.Dir) // a plain directory, e.g. made under another backend
	}
	id, err := subvolID(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("quota: remove %s: %w", t.Dir, err)
	}
	if err := b.teardown(pfd, name, id); err != nil {
		return fmt.Errorf("quota: remove %s: %w", t.Dir, err)
	}
	return nil
}

// RemoveLeftover is Remove whoever owns dir: the quota is keyed by the
// subvolume, not by a uid, so it is the leftover's own whatever uid is
// leased.
func (b *btrfsBackend) RemoveLeftover(dir string, _ func(uint32) bool) error {
	return b.Remove(Target{Dir: dir})
}

// teardown removes subvolume name (id; 0 if unknown) in pfd, the tenant's
// subvolumes nested in it and their qgroups. A subvolume created while it
// runs makes the destroy fail with ENOTEMPTY; it then starts over, a few
// times.
func (b *btrfsBackend) teardown(pfd int, name string, id uint64) error {
	var err error
	for range 3 {
		if err = teardownOnce(pfd, name, id); !errors.Is(err, unix.ENOTEMPTY) {
			return err
		}
	}
	return err
}

// Every ioctl that starts a transaction is issued on pfd, outside the
// subvolume: the kernel charges the transaction's metadata reservation to
// the subvolume of the fd, and a tenant at its limit would make it fail
// with EDQUOT. Destroying a nested subvolume charges the subvolume it sits
// in, which is why the limit is dropped first.
func teardownOnce(pfd int, name string, id uint64) error {
	var nested []uint64
	if id != 0 {
		fd, err := openDirAt(pfd, name)
		if errors.Is(err, unix.ENOENT) {
			return nil // removed meanwhile, by a concurrent Remove
		}
		if err != nil {
			return err
		}
		nested, err = subvolTree(fd, id)
		unix.Close(fd)
		if err == nil {
			err = dropGroup(pfd, id, nested)
		}
		if err == nil {
			for _, n := range nested {
				if derr := subvolDestroyByID(pfd, n); derr != nil && !errors.Is(derr, unix.ENOENT) {
					err = fmt.Errorf("destroy nested subvolume %d: %w", n, derr)
					break
				}
			}
		}
		if err != nil {
			return err
		}
	}
	if err := subvolDestroy(pfd, name); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("destroy subvolume: %w", err)
	}
	if id != 0 {
		// Best effort, see Remove: EBUSY until the cleaner ran.
		for _, n := range append(nested, id) {
			qgroupCreate(pfd, qgroupID(0, n), false)
		}
	}
	return nil
}

// dropGroup takes subvolume id and its nested subvolumes out of 1/id and
// deletes 1/id. Missing relations or groups are fine (a repeated Remove),
// and so are disabled quotas (ENOTCONN: no groups at all).
func dropGroup(fd int, id uint64, nested []uint64) error {
	group := qgroupID(1, id)
	for _, n := range append(nested, id) {
		err := qgroupAssign(fd, qgroupID(0, n), group, false)
		if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTCONN) {
			return fmt.Errorf("unassign qgroup 0/%d from %s: %w", n, qgroupString(group), err)
		}
	}
	err := qgroupCreate(fd, group, false)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTCONN) {
		return fmt.Errorf("delete qgroup %s: %w", qgroupString(group), err)
	}
	return nil
}

// Verify checks, in order: btrfs, quotas on, simple-quota mode, and then
// what counts: a probe subvolume with a 1 MiB limit and a subvolume nested
// in it, written into until the kernel answers EDQUOT.
func (b *btrfsBackend) Verify() error {
	fd, err := openDir(b.path)
	if err != nil {
		return notEnforced("quota path %s: %v", b.path, err)
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return notEnforced("quota path %s: %v", b.path, err)
	}
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		return notEnforced("%s is not on btrfs (filesystem magic %#x); point quota.path at a btrfs filesystem or choose another quota backend", b.path, st.Type)
	}
	sys, err := btrfsSysfsDir(fd)
	if err != nil {
		return notEnforced("%s: %v", b.path, err)
	}
	if on, _ := os.ReadFile(filepath.Join(sys, "qgroups", "enabled")); strings.TrimSpace(string(on)) != "1" {
		return notEnforced("btrfs quotas are off on the filesystem of %s; run `ward setup`, which enables simple quotas on it", b.path)
	}
	mode, err := os.ReadFile(filepath.Join(sys, "qgroups", "mode"))
	if err != nil {
		return notEnforced("btrfs quotas on %s are qgroups and this kernel has no simple quotas (Linux 6.7+), which ward needs so that subvolumes a tenant creates count against its limit", b.path)
	}
	if m := strings.TrimSpace(string(mode)); m != "squota" {
		return notEnforced("btrfs quotas on %s are in %q mode, in which subvolumes a tenant creates inside its directory escape its limit; "+
			"ward needs simple quotas: `btrfs quota disable %s` (drops every qgroup and limit on it), then `ward setup`", b.path, m, b.path)
	}
	return b.probe(sys)
}

const probeLimit = 1 << 20

func (b *btrfsBackend) probe(sys string) (err error) {
	stale, _ := filepath.Glob(filepath.Join(b.path, probePrefix+"*"))
	for _, s := range stale {
		// Another process's probe may be running right now (ward doctor
		// beside an agent start): only a dead prober's leftover goes.
		if probeOwnerGone(s) {
			b.Remove(Target{Dir: s})
		}
	}
	t := Target{Dir: probeDir(b.path)}
	if err := b.Create(t, probeLimit); err != nil {
		return notEnforced("probe: %v", err)
	}
	defer func() {
		if rerr := b.Remove(t); rerr != nil {
			err = errors.Join(err, fmt.Errorf("quota: probe: %w", rerr))
		}
	}()
	dfd, err := openDir(t.Dir)
	if err != nil {
		return fmt.Errorf("quota: probe: %w", err)
	}
	err = subvolCreate(dfd, "nested")
	unix.Close(dfd)
	if err != nil {
		return fmt.Errorf("quota: probe: nested subvolume: %w", err)
	}
	n, err := writeUntil(filepath.Join(t.Dir, "nested", "fill"), 16*probeLimit)
	switch {
	case errors.Is(err, unix.EDQUOT) && n <= probeLimit:
		return nil
	case errors.Is(err, unix.EDQUOT):
		return notEnforced("probe: %d bytes written under a %d-byte limit before EDQUOT", n, probeLimit)
	case err != nil:
		return fmt.Errorf("quota: probe: %w", err)
	}
	hint := ""
	if o, _ := os.ReadFile(filepath.Join(sys, "quota_override")); strings.TrimSpace(string(o)) == "1" {
		hint = " (quota_override is set in sysfs: root ignores limits there, write 0 to it)"
	}
	return notEnforced("probe: %d bytes written into a subvolume nested in a %d-byte limited directory without EDQUOT%s", n, probeLimit, hint)
}

// writeUntil writes to a new file at path in 64 KiB chunks until max bytes
// or an error, and reports how much was written.
func writeUntil(path string, max int64) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for n < max {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// EnableBtrfsQuota turns on simple quotas (Linux 6.7+) on the btrfs
// filesystem holding path, for `ward setup`. It is idempotent. Quotas
// already on in full qgroup mode are left alone and reported as an error:
// switching would mean disabling them, which drops every qgroup and limit
// on the filesystem, and that is the administrator's call.
func EnableBtrfsQuota(path string) error {
	fd, err := openDir(path)
	if err != nil {
		return fmt.Errorf("quota: enable btrfs quota on %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return fmt.Errorf("quota: enable btrfs quota on %s: %w", path, err)
	}
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		return fmt.Errorf("quota: enable btrfs quota on %s: not a btrfs filesystem (magic %#x)", path, st.Type)
	}
	args := btrfsQuotaCtlArgs{Cmd: btrfsQuotaCtlEnableSimple}
	if err := ioctl(fd, ioctlBtrfsQuotaCtl, unsafe.Pointer(&args)); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("quota: enable btrfs quota on %s: %w (simple quotas need Linux 6.7+)", path, err)
		}
		return fmt.Errorf("quota: enable btrfs quota on %s: %w", path, err)
	}
	sys, err := btrfsSysfsDir(fd)
	if err != nil {
		return fmt.Errorf("quota: enable btrfs quota on %s: %w", path, err)
	}
	if mode, _ := os.ReadFile(filepath.Join(sys, "qgroups", "mode")); strings.TrimSpace(string(mode)) != "squota" {
		return fmt.Errorf("quota: enable btrfs quota on %s: quotas are already on in %q mode; "+
			"ward needs simple quotas: `btrfs quota disable %s` (drops every qgroup and limit on it), then run this again",
			path, strings.TrimSpace(string(mode)), path)
	}
	return nil
}

// btrfs primitives.

func subvolCreate(dirfd int, name string) error {
	a := new(btrfsVolArgs)
	if name == "" || len(name) >= len(a.Name) || strings.ContainsRune(name, '/') {
		return fmt.Errorf("subvolume name %q: %w", name, unix.EINVAL)
	}
	copy(a.Name[:], name)
	return ioctl(dirfd, ioctlBtrfsSubvolCreate, unsafe.Pointer(a))
}

func subvolDestroy(dirfd int, name string) error {
	a := new(btrfsVolArgs)
	copy(a.Name[:], name)
	return ioctl(dirfd, ioctlBtrfsSnapDestroy, unsafe.Pointer(a))
}

// subvolDestroyByID destroys a subvolume wherever it is linked on fd's
// filesystem: no path inside the tenant's tree is walked.
func subvolDestroyByID(fd int, id uint64) error {
	a := new(btrfsVolArgsV2)
	a.Flags = btrfsSubvolSpecByID
	a.setSubvolID(id)
	return ioctl(fd, ioctlBtrfsSnapDestroyV2, unsafe.Pointer(a))
}

// subvolID is the id of the subvolume fd is in.
func subvolID(fd int) (uint64, error) {
	a := new(btrfsInoLookupArgs)
	a.Objectid = btrfsFirstFreeObjectid
	if err := ioctl(fd, ioctlBtrfsInoLookup, unsafe.Pointer(a)); err != nil {
		return 0, fmt.Errorf("subvolume id: %w", err)
	}
	return a.Treeid, nil
}

func isSubvolRoot(fd int) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return false, err
	}
	return sfs.Type == unix.BTRFS_SUPER_MAGIC && st.Ino == btrfsFirstFreeObjectid, nil
}

// openSubvolAt opens name in dirfd, which must be the root of a subvolume,
// and returns its id.
func openSubvolAt(dirfd int, name string) (int, uint64, error) {
	fd, err := openDirAt(dirfd, name)
	if err != nil {
		return -1, 0, err
	}
	root, err := isSubvolRoot(fd)
	if err == nil && !root {
		err = errors.New("not a btrfs subvolume")
	}
	var id uint64
	if err == nil {
		id, err = subvolID(fd)
	}
	if err != nil {
		unix.Close(fd)
		return -1, 0, err
	}
	return fd, id, nil
}

// subvolChildren lists the subvolumes linked directly inside subvolume
// parent, from the ROOT_REF items of the tree of tree roots (needs
// CAP_SYS_ADMIN).
func subvolChildren(fd int, parent uint64) ([]uint64, error) {
	a := new(btrfsSearchArgs)
	var kids []uint64
	for next := uint64(0); ; {
		a.Key = btrfsSearchKey{
			TreeID:      btrfsRootTreeObjectid,
			MinObjectid: parent, MaxObjectid: parent,
			MinType: btrfsRootRefKey, MaxType: btrfsRootRefKey,
			MinOffset: next, MaxOffset: math.MaxUint64,
			MaxTransid: math.MaxUint64,
			NrItems:    math.MaxUint32,
		}
		if err := ioctl(fd, ioctlBtrfsTreeSearch, unsafe.Pointer(a)); err != nil {
			return nil, fmt.Errorf("list subvolumes in %d: %w", parent, err)
		}
		if a.Key.NrItems == 0 {
			return kids, nil
		}
		items, err := parseSearchResults(a.Buf[:], a.Key.NrItems)
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			if it.Objectid == parent && it.Type == btrfsRootRefKey {
				kids = append(kids, it.Offset)
			}
			next = it.Offset + 1
		}
		if next == 0 { // wrapped past the last possible id
			return kids, nil
		}
	}
}

// subvolTree lists every subvolume nested (at any depth) in subvolume id,
// children before their parents: the order they can be destroyed in.
func subvolTree(fd int, id uint64) ([]uint64, error) {
	var out []uint64
	var walk func(uint64, int) error
	walk = func(p uint64, depth int) error {
		if depth > 1000 {
			return fmt.Errorf("subvolumes nested deeper than %d under %d", depth, id)
		}
		kids, err := subvolChildren(fd, p)
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := walk(k, depth+1); err != nil {
				return err
			}
			out = append(out, k)
		}
		return nil
	}
	return out, walk(id, 0)
}

func qgroupCreate(fd int, qgid uint64, create bool) error {
	a := btrfsQgroupCreateArgs{Qgroupid: qgid}
	if create {
		a.Create = 1
	}
	return ioctl(fd, ioctlBtrfsQgroupCreate, unsafe.Pointer(&a))
}

func qgroupAssign(fd int, src, dst uint64, assign bool) error {
	a := btrfsQgroupAssignArgs{Src: src, Dst: dst}
	if assign {
		a.Assign = 1
	}
	return ioctl(fd, ioctlBtrfsQgroupAssign, unsafe.Pointer(&a))
}

func qgroupLimit(fd int, qgid uint64, bytes int64) error {
	a := btrfsLimitArgs(qgid, bytes)
	return ioctl(fd, ioctlBtrfsQgroupLimit, unsafe.Pointer(&a))
}

// btrfsSysfsDir is /sys/fs/btrfs/<fsid> of the filesystem fd is on.
func btrfsSysfsDir(fd int) (string, error) {
	a := new(btrfsFsInfoArgs)
	if err := ioctl(fd, ioctlBtrfsFsInfo, unsafe.Pointer(a)); err != nil {
		return "", fmt.Errorf("btrfs fs info: %w", err)
	}
	return "/sys/fs/btrfs/" + fsidString(a.Fsid), nil
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("quota: remove %s: %w", dir, err)
	}
	return nil
}
