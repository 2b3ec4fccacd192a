// Package instdir owns what is inside an instance's directory: its layout,
// handing it to the instance's uid with mode 0700, its logs (opened for the
// instance to append to, rotated in place, the tail of stderr read back when
// the instance ends). Every path inside an instance directory is named here.
//
// The directory itself — <instances>/<id>, made empty, root-owned and 0700
// with its disk limit already in force, and removed together with that
// limit — is the quota backend's (package quota): a directory and its quota
// are created and dropped as one.
//
// The layout:
//
//	<dir>/                 the instance's working directory, uid:gid 0700
//	<dir>/logs/            uid:gid 0700
//	<dir>/logs/stdout.log  the instance's stdout, appended to by the instance
//	<dir>/logs/stderr.log  its stderr
//	<dir>/logs/<log>.<n>   rotated copies, n = 1 (newest) .. logs.keep
//
// Once handed over, the directory belongs to the instance, which can plant
// symlinks, FIFOs and hard links in it: everything root does inside goes
// through descriptors opened without following symlinks, and touches only
// regular files of the instance's uid.
package instdir
