// Package testroot gates tests that need root and a real kernel interface
// (cgroupfs, setuid, mounts). CI runs as root, so these tests run there; a
// developer without root sees them skipped with the reason.
package testroot

import (
	"os"
	"testing"
)

// Require skips t unless the test process runs as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("requires root: creates cgroups, leases uids and spawns processes as other users")
	}
}
