// Package acl owns the deny list: the POSIX ACL entries `ward setup` puts on
// system commands (su, compilers, package managers, network tools) so that
// the pool's group cannot execute, read or traverse them, while everybody
// else's access stays exactly as it was.
//
// It holds the codec of the system.posix_acl_access xattr (ParseACL,
// Encode: byte for byte what the kernel hands out), ApplyDeny and UndoDeny
// with their journal of each file's ACL before the change (package
// journal), and CheckDeny for `ward doctor`. Who the pool's users are is
// package accounts'; what an instance's directory holds, package instdir's.
package acl
