//go:build !linux

package accounts

// KillUID: no instance runs outside Linux, so nothing runs as a pool uid.
func KillUID(int) (killed int) { return 0 }
