package quota

// The kernel ABI ward speaks to enforce quotas: ioctl numbers, argument
// structs and conversions. It lives in a portable file so that its layout is
// unit-tested on every platform; only the syscalls are Linux-only. Every
// number and layout was checked against the kernel's uapi headers
// (linux/btrfs.h, linux/btrfs_tree.h, linux/fs.h, linux/quota.h,
// linux/dqblk_xfs.h); encoding_test.go pins the values they give.

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unsafe"
)

// ioc builds an ioctl request number the way the kernel's _IOC macro does
// on the common architectures: direction in bits 30-31, argument size in
// bits 16-29, type in 8-15, number in 0-7.
func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | typ<<8 | nr
}

const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	btrfsIoctlMagic = 0x94
	fsxattrMagic    = 'X'
)

// btrfs ioctl argument structs (linux/btrfs.h).

// btrfsVolArgs is struct btrfs_ioctl_vol_args: a name relative to the
// directory the ioctl is issued on.
type btrfsVolArgs struct {
	Fd   int64
	Name [4088]byte // BTRFS_PATH_NAME_MAX + 1
}

// btrfsVolArgsV2 is struct btrfs_ioctl_vol_args_v2. Its trailing union is
// either a name or, with btrfsSubvolSpecByID, a u64 subvolume id; Name holds
// both and setSubvolID writes the id.
type btrfsVolArgsV2 struct {
	Fd      int64
	Transid uint64
	Flags   uint64
	Unused  [4]uint64
	Name    [4040]byte // BTRFS_SUBVOL_NAME_MAX + 1
}

func (a *btrfsVolArgsV2) setSubvolID(id uint64) {
	binary.NativeEndian.PutUint64(a.Name[:8], id)
}

// btrfsQgroupLimitArgs is struct btrfs_ioctl_qgroup_limit_args.
type btrfsQgroupLimitArgs struct {
	Qgroupid uint64
	Flags    uint64
	MaxRfer  uint64
	MaxExcl  uint64
	RsvRfer  uint64
	RsvExcl  uint64
}

// btrfsQuotaCtlArgs is struct btrfs_ioctl_quota_ctl_args.
type btrfsQuotaCtlArgs struct {
	Cmd    uint64
	Status uint64
}

// btrfsQgroupCreateArgs is struct btrfs_ioctl_qgroup_create_args.
type btrfsQgroupCreateArgs struct {
	Create   uint64
	Qgroupid uint64
}

// btrfsQgroupAssignArgs is struct btrfs_ioctl_qgroup_assign_args.
type btrfsQgroupAssignArgs struct {
	Assign uint64
	Src    uint64
	Dst    uint64
}

// btrfsInoLookupArgs is struct btrfs_ioctl_ino_lookup_args.
type btrfsInoLookupArgs struct {
	Treeid   uint64
	Objectid uint64
	Name     [4080]byte
}

// btrfsFsInfoArgs is struct btrfs_ioctl_fs_info_args.
type btrfsFsInfoArgs struct {
	MaxID          uint64
	NumDevices     uint64
	Fsid           [16]byte
	Nodesize       uint32
	Sectorsize     uint32
	CloneAlignment uint32
	CsumType       uint16
	CsumSize       uint16
	Flags          uint64
	Generation     uint64
	MetadataUUID   [16]byte
	Reserved       [944]byte
}

// btrfsSearchKey is struct btrfs_ioctl_search_key.
type btrfsSearchKey struct {
	TreeID      uint64
	MinObjectid uint64
	MaxObjectid uint64
	MinOffset   uint64
	MaxOffset   uint64
	MinTransid  uint64
	MaxTransid  uint64
	MinType     uint32
	MaxType     uint32
	NrItems     uint32
	Unused      uint32
	Unused1     uint64
	Unused2     uint64
	Unused3     uint64
	Unused4     uint64
}

// btrfsSearchArgs is struct btrfs_ioctl_search_args: the key, then a
// buffer of (struct btrfs_ioctl_search_header, item) records.
type btrfsSearchArgs struct {
	Key btrfsSearchKey
	Buf [4096 - unsafe.Sizeof(btrfsSearchKey{})]byte
}

const btrfsSearchHeaderSize = 32 // struct btrfs_ioctl_search_header

var (
	ioctlBtrfsSubvolCreate  = ioc(iocWrite, btrfsIoctlMagic, 14, unsafe.Sizeof(btrfsVolArgs{}))
	ioctlBtrfsSnapDestroy   = ioc(iocWrite, btrfsIoctlMagic, 15, unsafe.Sizeof(btrfsVolArgs{}))
	ioctlBtrfsTreeSearch    = ioc(iocRead|iocWrite, btrfsIoctlMagic, 17, unsafe.Sizeof(btrfsSearchArgs{}))
	ioctlBtrfsInoLookup     = ioc(iocRead|iocWrite, btrfsIoctlMagic, 18, unsafe.Sizeof(btrfsInoLookupArgs{}))
	ioctlBtrfsFsInfo        = ioc(iocRead, btrfsIoctlMagic, 31, unsafe.Sizeof(btrfsFsInfoArgs{}))
	ioctlBtrfsQuotaCtl      = ioc(iocRead|iocWrite, btrfsIoctlMagic, 40, unsafe.Sizeof(btrfsQuotaCtlArgs{}))
	ioctlBtrfsQgroupAssign  = ioc(iocWrite, btrfsIoctlMagic, 41, unsafe.Sizeof(btrfsQgroupAssignArgs{}))
	ioctlBtrfsQgroupCreate  = ioc(iocWrite, btrfsIoctlMagic, 42, unsafe.Sizeof(btrfsQgroupCreateArgs{}))
	ioctlBtrfsQgroupLimit   = ioc(iocRead, btrfsIoctlMagic, 43, unsafe.Sizeof(btrfsQgroupLimitArgs{})) // _IOR in the header, though it is an input
	ioctlBtrfsSnapDestroyV2 = ioc(iocWrite, btrfsIoctlMagic, 63, unsafe.Sizeof(btrfsVolArgsV2{}))
)

const (
	btrfsQuotaCtlEnable       = 1
	btrfsQuotaCtlEnableSimple = 4 // Linux 6.7+

	btrfsQgroupLimitMaxRfer = 1 << 0
	btrfsSubvolSpecByID     = 1 << 4
	// btrfsLimitClear as a max_rfer with the MAX_RFER flag set removes the
	// limit (the kernel's CLEAR_VALUE).
	btrfsLimitClear = math.MaxUint64

	btrfsRootTreeObjectid  = 1   // the tree of tree roots
	btrfsFirstFreeObjectid = 256 // inode number of every subvolume's root directory
	btrfsRootRefKey        = 156 // (parent subvol, ROOT_REF, child subvol)
)

// qgroupID is the kernel's qgroup id: level in the top 16 bits, id below.
func qgroupID(level uint16, id uint64) uint64 { return uint64(level)<<48 | id&(1<<48-1) }

// qgroupString is the usual notation of a qgroup id: "<level>/<id>".
func qgroupString(qgid uint64) string {
	return fmt.Sprintf("%d/%d", qgid>>48, qgid&(1<<48-1))
}

// qgroupSysfsName is the name of a qgroup's directory in
// /sys/fs/btrfs/<fsid>/qgroups ("<level>_<id>").
func qgroupSysfsName(qgid uint64) string {
	return fmt.Sprintf("%d_%d", qgid>>48, qgid&(1<<48-1))
}

// fsidString formats a btrfs fsid the way sysfs names the filesystem's
// directory: a lowercase UUID.
func fsidString(b [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// btrfsLimitArgs encodes a limit for qgroup qgid: bytes <= 0 clears it.
func btrfsLimitArgs(qgid uint64, bytes int64) btrfsQgroupLimitArgs {
	a := btrfsQgroupLimitArgs{Qgroupid: qgid, Flags: btrfsQgroupLimitMaxRfer, MaxRfer: btrfsLimitClear}
	if bytes > 0 {
		a.MaxRfer = uint64(bytes)
	}
	return a
}

// searchItem is one record a tree search returned, its item body left out.
type searchItem struct {
	Transid, Objectid, Offset uint64
	Type                      uint32
}

// parseSearchResults decodes the n (header, item) records of a tree
// search buffer.
func parseSearchResults(buf []byte, n uint32) ([]searchItem, error) {
	items := make([]searchItem, 0, n)
	for i := uint32(0); i < n; i++ {
		if len(buf) < btrfsSearchHeaderSize {
			return nil, fmt.Errorf("tree search: record %d of %d: header truncated", i, n)
		}
		it := searchItem{
			Transid:  binary.NativeEndian.Uint64(buf[0:]),
			Objectid: binary.NativeEndian.Uint64(buf[8:]),
			Offset:   binary.NativeEndian.Uint64(buf[16:]),
			Type:     binary.NativeEndian.Uint32(buf[24:]),
		}
		l := int(binary.NativeEndian.Uint32(buf[28:]))
		if len(buf)-btrfsSearchHeaderSize < l {
			return nil, fmt.Errorf("tree search: record %d of %d: item of %d bytes truncated", i, n, l)
		}
		buf = buf[btrfsSearchHeaderSize+l:]
		items = append(items, it)
	}
	return items, nil
}

// Generic (VFS) quota: quotactl(2) and the inode attribute that carries a
// project id.

// fsxattr is struct fsxattr (linux/fs.h), read and written with
// FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR.
type fsxattr struct {
	Xflags     uint32
	Extsize    uint32
	Nextents   uint32
	Projid     uint32
	Cowextsize uint32
	Pad        [8]byte
}

var (
	ioctlFsGetXattr = ioc(iocRead, fsxattrMagic, 31, unsafe.Sizeof(fsxattr{}))
	ioctlFsSetXattr = ioc(iocWrite, fsxattrMagic, 32, unsafe.Sizeof(fsxattr{}))
)

// fsXflagProjInherit makes new files and directories under a directory
// inherit its project id: without it only the directory itself is charged.
const fsXflagProjInherit = 0x200

// ifDqblk is struct if_dqblk (linux/quota.h): limits in 1 KiB blocks,
// current space in bytes.
type ifDqblk struct {
	BHardlimit uint64
	BSoftlimit uint64
	CurSpace   uint64
	IHardlimit uint64
	ISoftlimit uint64
	CurInodes  uint64
	BTime      uint64
	ITime      uint64
	Valid      uint32
	_          uint32
}

// ifDqinfo is struct if_dqinfo.
type ifDqinfo struct {
	BGrace uint64
	IGrace uint64
	Flags  uint32
	Valid  uint32
}

// fsQfilestatv and fsQuotaStatv are struct fs_qfilestatv and
// fs_quota_statv (linux/dqblk_xfs.h), the answer to Q_XGETQSTATV, which
// says per quota type whether it is accounted and whether it is enforced.
type fsQfilestatv struct {
	Ino      uint64
	Nblks    uint64
	Nextents uint32
	Pad      uint32
}

type fsQuotaStatv struct {
	Version      int8
	Pad1         uint8
	Flags        uint16
	Incoredqs    uint32
	Uquota       fsQfilestatv
	Gquota       fsQfilestatv
	Pquota       fsQfilestatv
	Btimelimit   int32
	Itimelimit   int32
	Rtbtimelimit int32
	Bwarnlimit   uint16
	Iwarnlimit   uint16
	Rtbwarnlimit uint16
	Pad3         uint16
	Pad4         uint32
	Pad2         [7]uint64
}

const (
	usrQuota = 0 // USRQUOTA
	prjQuota = 2 // PRJQUOTA

	qGetInfo    = 0x800005
	qGetQuota   = 0x800007
	qSetQuota   = 0x800008
	qXGetQStatV = 'X'<<8 + 8 // XQM_CMD(8)

	qifBLimits = 1
	qifILimits = 4
	qifLimits  = qifBLimits | qifILimits

	fsQStatVVersion1 = 1
	fsQuotaUdqEnfd   = 0x0002
	fsQuotaPdqEnfd   = 0x0020

	quotaBlockSize = 1024 // QIF_DQBLKSIZE: the unit of dqb_*limit
)

// qcmd is the kernel's QCMD(cmd, type).
func qcmd(cmd, typ uint32) uint32 { return cmd<<8 | typ&0xff }

// bytesToQuotaBlocks converts a byte limit to quotactl's 1 KiB blocks,
// rounding up so that a limit is never tighter than asked; <= 0 is 0, which
// the kernel reads as "no limit".
func bytesToQuotaBlocks(bytes int64) uint64 {
	if bytes <= 0 {
		return 0
	}
	return (uint64(bytes) + quotaBlockSize - 1) / quotaBlockSize
}

// enforcedFlag is the Q_XGETQSTATV flag saying limits of quota type typ
// are enforced.
func enforcedFlag(typ uint32) uint16 {
	if typ == prjQuota {
		return fsQuotaPdqEnfd
	}
	return fsQuotaUdqEnfd
}

// parseMountinfoSource returns the mount source of a mountinfo line if its
// major:minor is majmin. Fields: id parent maj:min root mountpoint options
// [optional...] - fstype source superoptions.
func parseMountinfoSource(line, majmin string) (string, bool) {
	f := strings.Fields(line)
	if len(f) < 3 || f[2] != majmin {
		return "", false
	}
	for i, s := range f {
		if s == "-" && i+2 < len(f) {
			return unescapeMountinfo(f[i+2]), true
		}
	}
	return "", false
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
