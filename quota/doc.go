// Package quota owns per-instance disk quotas: it creates each instance's
// directory with a byte limit already in force, changes the limit live,
// reads how much is charged, and removes the directory together with its
// quota — also a leftover directory no instance owns, each backend knowing
// which of its quotas such a directory takes along (RemoveLeftover).
// Verify proves at startup that a backend really enforces on its
// filesystem, rather than finding out at the first instance. What goes
// inside the directory, and handing it to the instance, is package
// instdir's.
//
// Where each backend was verified: btrfs for real, on Linux 6.18 with
// loop-mounted filesystems (tests write until the kernel answers EDQUOT,
// from the instance's uid too, and check nothing is left after removal).
// The project and user backends are unit-tested only: their syscall
// encoding (struct layouts, command and ioctl numbers, block conversion),
// the kernel's answers on a host without quota support (Verify returns
// ErrNotEnforced, Create rolls back) and what FS_IOC_FSSETXATTR does there.
// The test kernel has no quota format for ext4 or XFS, so no project or
// user limit has been seen enforced.
//
// Backends, chosen by the configuration's quota.backend (config.QuotaBackend):
//
//   - none: plain directories, no limit, no usage (ErrNoUsage).
//   - btrfs: each directory is a subvolume limited through a level-1
//     qgroup, all with ioctls; needs simple quotas (Linux 6.7+), which
//     EnableBtrfsQuota turns on, so that subvolumes a tenant nests inside
//     its directory are counted too.
//   - project: ext4/XFS project quota, project id = the instance's uid.
//   - user: ext4/XFS user quota on the instance's uid; counts every file
//     the uid owns on the filesystem.
package quota
