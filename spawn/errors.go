package spawn

import (
	"errors"
	"syscall"
)

// Start's errors say which step failed, so that a caller can tell a request
// at fault from a failure of its own or of the kernel with errors.Is and
// errors.As alone. The steps taken in the parent fail with one of these
// sentinels, the cause (usually a syscall.Errno) wrapped beside it; the
// steps the child takes after the clone fail with an *ExecError.
var (
	// ErrSpec: the Spec cannot be used as given (empty command, not
	// exactly one placement, a NUL byte, missing output files). A bug of
	// the caller, never of the program asked for.
	ErrSpec = errors.New("spawn: invalid spec")
	// ErrCgroup: the instance's group could not be opened (v2) or joined
	// (v1), or the agent's forking thread did not leave it in time.
	ErrCgroup = errors.New("spawn: cannot place the process in its cgroup")
	// ErrFork: the process could not be created (status pipe or clone).
	// With syscall.EAGAIN it is the group's pids limit (or the pool user's
	// RLIMIT_NPROC) that refused a new task.
	ErrFork = errors.New("spawn: cannot create the process")
	// ErrWatch: the process was created but could not be watched (pidfd,
	// start time); Start killed it again.
	ErrWatch = errors.New("spawn: cannot watch the process")
	// ErrIsolation: ward-init (Spec.Helper) could not be run, or failed
	// to build the instance's namespaces, limits or filter; the
	// *nsinit.Failure it reported is wrapped beside it.
	ErrIsolation = errors.New("spawn: cannot isolate the process")
)

// Step is one of the child's steps between clone and the program's first
// instruction, in the order the child takes them.
type Step string

const (
	StepCredentials Step = "setuid" // taking the pool user's uid and gid, dropping every group
	StepChdir       Step = "chdir"  // entering Spec.Dir, as the pool user
	StepStdio       Step = "stdio"  // putting /dev/null, Stdout and Stderr on fds 0, 1 and 2
	StepExec        Step = "exec"   // execve of Spec.Path (and of its #! or ELF interpreter)
	// StepUnknown: the child failed but the kernel would not say again
	// where (see ExecError); treat it as none of the above.
	StepUnknown Step = "child"
)

// ExecError is a failure the child reported after the clone and before
// Spec.Path ran: the kernel refused the pool user a step of its own.
//
// The child that syscall.StartProcess runs reports only an errno, not the
// step it failed at. Start tells the step by asking the kernel again: a
// probe child, cloned outside the instance's cgroup, repeats the same
// credentials, working directory and fds and then an execve that fails
// before it looks at anything (a path longer than PATH_MAX). If the probe
// fails with the same errno, the original failed before exec; if it gets
// as far as exec, so did the original. Only on failure does this cost a
// clone, and the probe never runs a program.
type ExecError struct {
	Step  Step
	Path  string // Spec.Dir for StepChdir, Spec.Path otherwise
	Errno syscall.Errno
}

func (e *ExecError) Error() string {
	return "spawn: " + string(e.Step) + " " + e.Path + ": " + e.Errno.Error()
}

// Unwrap makes errors.Is(err, syscall.ENOENT) and the like work.
func (e *ExecError) Unwrap() error { return e.Errno }
