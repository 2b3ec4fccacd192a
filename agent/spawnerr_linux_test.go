package agent

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/spawn"
)

// TestSpawnError classifies errors built the way spawn.Start builds them.
func TestSpawnError(t *testing.T) {
	const prog = "/srv/app/bin/web"
	exec := func(step spawn.Step, errno syscall.Errno) error {
		path := prog
		if step == spawn.StepChdir {
			path = "/var/lib/ward/instances/x"
		}
		return &spawn.ExecError{Step: step, Path: path, Errno: errno}
	}
	for _, tc := range []struct {
		name  string
		err   error
		code  api.Code
		field string
	}{
		{"missing program", exec(spawn.StepExec, syscall.ENOENT), api.CodeInvalidArgument, "command"},
		{"path through a file", exec(spawn.StepExec, syscall.ENOTDIR), api.CodeInvalidArgument, "command"},
		{"not executable", exec(spawn.StepExec, syscall.EACCES), api.CodeInvalidArgument, "command"},
		{"not permitted", exec(spawn.StepExec, syscall.EPERM), api.CodeInvalidArgument, "command"},
		{"not a program", exec(spawn.StepExec, syscall.ENOEXEC), api.CodeInvalidArgument, "command"},
		{"interpreter is a directory", exec(spawn.StepExec, syscall.EISDIR), api.CodeInvalidArgument, "command"},
		{"symlink loop", exec(spawn.StepExec, syscall.ELOOP), api.CodeInvalidArgument, "command"},
		{"arguments too long", exec(spawn.StepExec, syscall.E2BIG), api.CodeInvalidArgument, "command"},
		{"being written", exec(spawn.StepExec, syscall.ETXTBSY), api.CodeUnavailable, "command"},
		{"pids limit", fmt.Errorf("%w: %s: %w", spawn.ErrFork, prog, syscall.EAGAIN), api.CodeResourceExhausted, "limits.pids"},
		// The working directory and the pool user are ward's, not the request's.
		{"dir the uid cannot enter", exec(spawn.StepChdir, syscall.EACCES), api.CodeInternal, ""},
		{"missing dir", exec(spawn.StepChdir, syscall.ENOENT), api.CodeInternal, ""},
		{"setuid refused", exec(spawn.StepCredentials, syscall.EPERM), api.CodeInternal, ""},
		{"stdio", exec(spawn.StepStdio, syscall.EBADF), api.CodeInternal, ""},
		{"child step unknown", exec(spawn.StepUnknown, syscall.ENOENT), api.CodeInternal, ""},
		{"exec out of memory", exec(spawn.StepExec, syscall.ENOMEM), api.CodeInternal, ""},
		{"exec under RLIMIT_NPROC", exec(spawn.StepExec, syscall.EAGAIN), api.CodeInternal, ""},
		{"clone out of memory", fmt.Errorf("%w: %s: %w", spawn.ErrFork, prog, syscall.ENOMEM), api.CodeInternal, ""},
		{"cgroup gone", fmt.Errorf("%w: join %s: %w", spawn.ErrCgroup, "/sys/fs/cgroup/pids/x", syscall.ENOENT), api.CodeInternal, ""},
		{"cgroup EAGAIN is no pids limit", fmt.Errorf("%w: join %s: %w", spawn.ErrCgroup, "/sys/fs/cgroup/pids/x", syscall.EAGAIN), api.CodeInternal, ""},
		{"pidfd", fmt.Errorf("%w: pidfd: %w", spawn.ErrWatch, syscall.EMFILE), api.CodeInternal, ""},
		{"spec", fmt.Errorf("%w: empty command", spawn.ErrSpec), api.CodeInternal, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := spawnError(tc.err)
			e := api.AsError(got)
			if e.Code != tc.code || e.Field != tc.field {
				t.Fatalf("%v -> %s on %q (%v), want %s on %q", tc.err, e.Code, e.Field, got, tc.code, tc.field)
			}
			if !errors.Is(got, &api.Error{Code: tc.code}) {
				t.Errorf("errors.Is(%v, %s) is false", got, tc.code)
			}
			switch {
			case tc.code == api.CodeInternal && !errors.Is(got, tc.err):
				t.Errorf("internal %v lost its cause %v", got, tc.err)
			case tc.field == "command" && !strings.Contains(e.Message, prog):
				t.Errorf("message %q does not name the program", e.Message)
			}
		})
	}
	if spawnError(nil) != nil {
		t.Error("spawnError(nil) != nil")
	}
}
