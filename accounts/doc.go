// Package accounts owns who an instance runs as: the pool of unix uids
// leased to instances, one at a time, all with the pool's group; the check
// that no passwd user shares a pool uid; the killing of a uid's strays
// before the uid goes back to the pool; and, host-wide for `ward setup`,
// the pool's group entry and (users.create_passwd) its passwd and shadow
// entries, with their journal (package journal).
//
// The leases themselves are package lease's, rebuilt from the agent's
// instance records at start. What the pool's group may not execute is
// package acl's; what an instance's directory holds, package instdir's.
package accounts
