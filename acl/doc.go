// Package acl owns who an instance runs as and what that identity may touch:
// the pool of unix uids leased to instances, the ownership and mode of each
// instance's directory, and (host-wide, for `ward setup`) the pool's group
// and passwd entries and the ACL entries that deny the pool's group access
// to system commands.
package acl
