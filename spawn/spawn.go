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

	// Helper is ward-init's path (package nsinit). With it, the child
	// execs ward-init as root, which resets what the instance must not
	// inherit from the agent (oom_score_adj, the open-file limit, to
	// NOFILE), takes UID and GID, enters Dir and execs Path; without it,
	// the child takes the identity itself and inherits the rest.
	Helper string
	NOFILE uint64
	// Isolation, with Helper, clones the process into new PID, IPC, UTS,
	// mount and cgroup namespaces, where ward-init builds its view.
	Isolation *Isolation
}

// Isolation is a namespaced instance's view (see nsinit.Spec).
type Isolation struct {
	Hostname string
	Writable string   // the instance's directory, the one writable host path
	TmpBytes int64    // its /tmp, /var/tmp and /dev/shm together
	Hide     []string // host paths it must not see
}

// Exit is how a process ended.
type Exit struct {
	Known  bool           // false when the process was adopted: its status went to another parent
	Code   int            // exit code when it exited normally
	Signal syscall.Signal // the signal that killed it, or 0
}
