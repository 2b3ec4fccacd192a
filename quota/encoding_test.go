package quota

import (
	"encoding/binary"
	"strings"
	"testing"
	"unsafe"
)

// The expected values below were printed by a C program compiled against
// the kernel's uapi headers (linux/btrfs.h, btrfs_tree.h, fs.h, quota.h,
// dqblk_xfs.h): sizeof, offsetof and the _IO* macros.

func TestStructLayouts(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"btrfs_ioctl_vol_args", unsafe.Sizeof(btrfsVolArgs{}), 4096},
		{"btrfs_ioctl_vol_args_v2", unsafe.Sizeof(btrfsVolArgsV2{}), 4096},
		{"btrfs_ioctl_vol_args_v2.flags", unsafe.Offsetof(btrfsVolArgsV2{}.Flags), 16},
		{"btrfs_ioctl_vol_args_v2.name/subvolid", unsafe.Offsetof(btrfsVolArgsV2{}.Name), 56},
		{"btrfs_ioctl_qgroup_limit_args", unsafe.Sizeof(btrfsQgroupLimitArgs{}), 48},
		{"btrfs_ioctl_quota_ctl_args", unsafe.Sizeof(btrfsQuotaCtlArgs{}), 16},
		{"btrfs_ioctl_qgroup_create_args", unsafe.Sizeof(btrfsQgroupCreateArgs{}), 16},
		{"btrfs_ioctl_qgroup_assign_args", unsafe.Sizeof(btrfsQgroupAssignArgs{}), 24},
		{"btrfs_ioctl_ino_lookup_args", unsafe.Sizeof(btrfsInoLookupArgs{}), 4096},
		{"btrfs_ioctl_fs_info_args", unsafe.Sizeof(btrfsFsInfoArgs{}), 1024},
		{"btrfs_ioctl_fs_info_args.fsid", unsafe.Offsetof(btrfsFsInfoArgs{}.Fsid), 16},
		{"btrfs_ioctl_search_key", unsafe.Sizeof(btrfsSearchKey{}), 104},
		{"btrfs_ioctl_search_args", unsafe.Sizeof(btrfsSearchArgs{}), 4096},
		{"fsxattr", unsafe.Sizeof(fsxattr{}), 28},
		{"fsxattr.fsx_projid", unsafe.Offsetof(fsxattr{}.Projid), 12},
		{"if_dqblk", unsafe.Sizeof(ifDqblk{}), 72},
		{"if_dqblk.dqb_curspace", unsafe.Offsetof(ifDqblk{}.CurSpace), 16},
		{"if_dqblk.dqb_valid", unsafe.Offsetof(ifDqblk{}.Valid), 64},
		{"if_dqinfo", unsafe.Sizeof(ifDqinfo{}), 24},
		{"fs_qfilestatv", unsafe.Sizeof(fsQfilestatv{}), 24},
		{"fs_quota_statv", unsafe.Sizeof(fsQuotaStatv{}), 160},
		{"fs_quota_statv.qs_flags", unsafe.Offsetof(fsQuotaStatv{}.Flags), 2},
		{"fs_quota_statv.qs_pquota", unsafe.Offsetof(fsQuotaStatv{}.Pquota), 56},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, kernel has %d", c.name, c.got, c.want)
		}
	}
}

func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"BTRFS_IOC_SUBVOL_CREATE", ioctlBtrfsSubvolCreate, 0x5000940e},
		{"BTRFS_IOC_SNAP_DESTROY", ioctlBtrfsSnapDestroy, 0x5000940f},
		{"BTRFS_IOC_TREE_SEARCH", ioctlBtrfsTreeSearch, 0xd0009411},
		{"BTRFS_IOC_INO_LOOKUP", ioctlBtrfsInoLookup, 0xd0009412},
		{"BTRFS_IOC_FS_INFO", ioctlBtrfsFsInfo, 0x8400941f},
		{"BTRFS_IOC_QUOTA_CTL", ioctlBtrfsQuotaCtl, 0xc0109428},
		{"BTRFS_IOC_QGROUP_ASSIGN", ioctlBtrfsQgroupAssign, 0x40189429},
		{"BTRFS_IOC_QGROUP_CREATE", ioctlBtrfsQgroupCreate, 0x4010942a},
		{"BTRFS_IOC_QGROUP_LIMIT", ioctlBtrfsQgroupLimit, 0x8030942b},
		{"BTRFS_IOC_SNAP_DESTROY_V2", ioctlBtrfsSnapDestroyV2, 0x5000943f},
		{"FS_IOC_FSGETXATTR", ioctlFsGetXattr, 0x801c581f},
		{"FS_IOC_FSSETXATTR", ioctlFsSetXattr, 0x401c5820},
	} {
		if c.got != c.want {
			t.Errorf("%s: %#x, kernel has %#x", c.name, c.got, c.want)
		}
	}
}

func TestQuotactlCommands(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uint32
	}{
		{"QCMD(Q_GETQUOTA, PRJQUOTA)", qcmd(qGetQuota, prjQuota), 0x80000702},
		{"QCMD(Q_GETINFO, PRJQUOTA)", qcmd(qGetInfo, prjQuota), 0x80000502},
		{"QCMD(Q_SETQUOTA, USRQUOTA)", qcmd(qSetQuota, usrQuota), 0x80000800},
		{"QCMD(Q_SETQUOTA, PRJQUOTA)", qcmd(qSetQuota, prjQuota), 0x80000802},
		{"Q_XGETQSTATV", qXGetQStatV, 0x5808},
		{"QIF_LIMITS", qifLimits, 5},
		{"FS_QUOTA_PDQ_ENFD", uint32(enforcedFlag(prjQuota)), 0x20},
		{"FS_QUOTA_UDQ_ENFD", uint32(enforcedFlag(usrQuota)), 0x2},
	} {
		if c.got != c.want {
			t.Errorf("%s: %#x, kernel has %#x", c.name, c.got, c.want)
		}
	}
}

func TestBytesToQuotaBlocks(t *testing.T) {
	for _, c := range []struct {
		bytes int64
		want  uint64
	}{
		{-1, 0}, {0, 0}, {1, 1}, {1023, 1}, {1024, 1}, {1025, 2},
		{1 << 30, 1 << 20}, {1<<30 + 1, 1<<20 + 1},
	} {
		if got := bytesToQuotaBlocks(c.bytes); got != c.want {
			t.Errorf("bytesToQuotaBlocks(%d) = %d, want %d", c.bytes, got, c.want)
		}
	}
}

func TestQgroupIDs(t *testing.T) {
	if got := qgroupID(1, 257); got != 1<<48|257 {
		t.Errorf("qgroupID(1, 257) = %#x", got)
	}
	if got := qgroupSysfsName(qgroupID(1, 257)); got != "1_257" {
		t.Errorf("sysfs name of 1/257 = %q", got)
	}
	if got := qgroupString(qgroupID(1, 257)); got != "1/257" {
		t.Errorf("1/257 prints as %q", got)
	}
	if got := qgroupSysfsName(qgroupID(0, 5)); got != "0_5" {
		t.Errorf("sysfs name of 0/5 = %q", got)
	}
	a := btrfsLimitArgs(qgroupID(1, 300), 10<<20)
	if a.Qgroupid != 1<<48|300 || a.Flags != btrfsQgroupLimitMaxRfer || a.MaxRfer != 10<<20 || a.MaxExcl != 0 {
		t.Errorf("limit args for 10 MiB: %+v", a)
	}
	for _, none := range []int64{0, -5} {
		if a := btrfsLimitArgs(7, none); a.Flags != btrfsQgroupLimitMaxRfer || a.MaxRfer != ^uint64(0) {
			t.Errorf("limit args for %d (clear): %+v", none, a)
		}
	}
}

func TestFsidString(t *testing.T) {
	b := [16]byte{0x63, 0x8d, 0x3e, 0xad, 0xe3, 0x14, 0x41, 0xa1, 0xad, 0x00, 0xb6, 0xe8, 0x34, 0x5b, 0x35, 0xaa}
	if got, want := fsidString(b), "638d3ead-e314-41a1-ad00-b6e8345b35aa"; got != want {
		t.Errorf("fsidString = %q, want %q", got, want)
	}
}

func searchRecord(objectid, offset uint64, typ uint32, item []byte) []byte {
	h := make([]byte, btrfsSearchHeaderSize)
	binary.NativeEndian.PutUint64(h[0:], 7)
	binary.NativeEndian.PutUint64(h[8:], objectid)
	binary.NativeEndian.PutUint64(h[16:], offset)
	binary.NativeEndian.PutUint32(h[24:], typ)
	binary.NativeEndian.PutUint32(h[28:], uint32(len(item)))
	return append(h, item...)
}

func TestParseSearchResults(t *testing.T) {
	buf := append(searchRecord(256, 257, btrfsRootRefKey, make([]byte, 18+6)),
		searchRecord(256, 300, btrfsRootRefKey, make([]byte, 18+1))...)
	buf = append(buf, make([]byte, 100)...) // the rest of the kernel's buffer
	items, err := parseSearchResults(buf, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || items[0].Objectid != 256 || items[0].Offset != 257 || items[1].Offset != 300 || items[1].Type != btrfsRootRefKey || items[0].Transid != 7 {
		t.Errorf("parsed %+v", items)
	}
	if _, err := parseSearchResults(buf[:btrfsSearchHeaderSize+10], 1); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("item cut short: err = %v", err)
	}
	if _, err := parseSearchResults(buf[:20], 1); err == nil || !strings.Contains(err.Error(), "header truncated") {
		t.Errorf("header cut short: err = %v", err)
	}
}

func TestVolArgsV2SubvolID(t *testing.T) {
	var a btrfsVolArgsV2
	a.setSubvolID(0x0102030405060708)
	if got := *(*uint64)(unsafe.Pointer(uintptr(unsafe.Pointer(&a)) + 56)); got != 0x0102030405060708 {
		t.Errorf("subvolid at offset 56 = %#x", got)
	}
}

func TestParseMountinfoSource(t *testing.T) {
	line := `36 35 7:3 / /var/lib/with\040space rw,relatime shared:1 - btrfs /dev/loop\0403 rw,space_cache=v2`
	if src, ok := parseMountinfoSource(line, "7:3"); !ok || src != "/dev/loop 3" {
		t.Errorf("source = %q, %v", src, ok)
	}
	if _, ok := parseMountinfoSource(line, "7:4"); ok {
		t.Error("matched another device")
	}
	if _, ok := parseMountinfoSource("garbage", "7:3"); ok {
		t.Error("matched a malformed line")
	}
}
