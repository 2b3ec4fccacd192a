package agent

import (
	"os"

	"golang.org/x/sys/unix"
)

// crashAt names the point at which the agent kills itself, for the tests
// that prove a crash anywhere is survived (WARD_CRASHPOINT=start:cgroup).
// Read once: an unset variable costs one string compare per point.
var crashAt = os.Getenv("WARD_CRASHPOINT")

// crashpoint SIGKILLs the agent when name is the configured crash point —
// no deferred cleanup, no flush, exactly like an OOM kill or a power cut
// for everything not yet on disk.
func crashpoint(name string) {
	if crashAt != "" && crashAt == name {
		unix.Kill(unix.Getpid(), unix.SIGKILL)
		select {} // the signal is asynchronous; go no further
	}
}
