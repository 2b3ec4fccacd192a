package agent

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/spawn"
)

// spawnError maps a spawn.Start failure to the error the client gets. The
// request is at fault only when the kernel refused the instance's user the
// program the request named: that is invalid_argument on "command", saying
// what is wrong and what to do. A start refused by the pids limit is
// resource_exhausted on "limits.pids", as before. Anything else failed in
// ward or the kernel, the working directory and the pool user included
// (both are ward's, not the request's), and is internal, its cause kept for
// the log.
func spawnError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, spawn.ErrFork) && errors.Is(err, syscall.EAGAIN) {
		return &api.Error{Code: api.CodeResourceExhausted, Field: "limits.pids", Message: fmt.Sprintf("the pids limit refused the instance's first process; raise limits.pids (%v)", err)}
	}
	ee, ok := errors.AsType[*spawn.ExecError](err)
	if !ok || ee.Step != spawn.StepExec {
		return api.Internal(err)
	}
	if ee.Errno == syscall.ETXTBSY {
		return &api.Error{Code: api.CodeUnavailable, Field: "command", Message: fmt.Sprintf("%s is open for writing; retry once it is written", ee.Path)}
	}
	what, ok := execRefusals[ee.Errno]
	if !ok {
		return api.Internal(err) // ENOMEM, EIO, EMFILE, EAGAIN (RLIMIT_NPROC) ...
	}
	return &api.Error{Code: api.CodeInvalidArgument, Field: "command", Message: ee.Path + ": " + what}
}

// execRefusals are the errnos of execve that the program itself causes,
// with what the client is told (see execve(2)).
var execRefusals = map[syscall.Errno]string{
	syscall.ENOENT:       "no such file as the instance's user sees it, or its interpreter (the #! line or the ELF loader) is missing; give an absolute path or a program on PATH",
	syscall.ENOTDIR:      "a component of the path is not a directory; give an absolute path or a program on PATH",
	syscall.EACCES:       "permission denied to the instance's user: it must be a regular file it may execute, under directories it may search, on a filesystem not mounted noexec",
	syscall.EPERM:        "not permitted for the instance's user (set-user-id on a nosuid mount, or refused by a security module)",
	syscall.ENOEXEC:      "not an executable format; a script needs a #! line",
	syscall.EISDIR:       "its ELF interpreter is a directory",
	syscall.ELIBBAD:      "its ELF interpreter is not in a format the kernel runs",
	syscall.EINVAL:       "not a valid executable (an ELF file with more than one interpreter)",
	syscall.ELOOP:        "too many symbolic links or nested #! interpreters",
	syscall.ENAMETOOLONG: "path too long",
	syscall.E2BIG:        "its arguments and environment together exceed the kernel's limit; shorten them",
}
