package spawn

import (
	"errors"
	"os"
	"syscall"
)

// ErrGone reports that a process to adopt is no longer the one recorded: it
// exited and was reaped, or its pid now belongs to another process.
var ErrGone = errors.New("process is gone")

// Spec describes the process to start.
type Spec struct {
	Path string   // absolute path of the executable
	Args []string // argv, Args[0] included
	Env  []string
	Dir  string
	UID  uint32
	GID  uint32 // the only group: supplementary groups are cleared

	Stdout, Stderr *os.File // stdin is /dev/null

	// Exactly one placement is used: CgroupV2Dir (the group's directory on
	// the cgroup2 mount) or CgroupV1Dirs (the group's directory in every v1
	// hierarchy it must join).
	CgroupV2Dir  string
	CgroupV1Dirs []string
}

// Exit is how a process ended.
type Exit struct {
	Known  bool           // false when the process was adopted: its status went to another parent
	Code   int            // exit code when it exited normally
	Signal syscall.Signal // the signal that killed it, or 0
}
