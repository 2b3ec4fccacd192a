package spawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hostward/ward/nsinit"
	"github.com/hostward/ward/seccomp"
	"golang.org/x/sys/unix"
)

// Process is a running (or exited, not yet waited for) instance process.
type Process struct {
	Pid       int
	StartTime uint64 // start time in clock ticks since boot (/proc/<pid>/stat field 22)

	child  bool
	pidfd  *os.File
	waited chan struct{}
	exit   Exit
}

// Start starts the process described by spec inside its cgroup. Its errors
// name the step that failed: ErrSpec, ErrCgroup, ErrFork or ErrWatch
// (errors.Is) for the parent's steps, *ExecError (errors.As) for the
// child's; the errno is reachable with errors.Is either way.
func Start(spec Spec) (*Process, error) {
	if err := checkSpec(&spec); err != nil {
		return nil, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFork, err)
	}
	defer devnull.Close()

	pidfd := noChild
	sys := &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: spec.UID, Gid: spec.GID, Groups: []uint32{}},
		Setsid:     true,
		PidFD:      &pidfd,
	}
	attr := &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: []uintptr{devnull.Fd(), spec.Stdout.Fd(), spec.Stderr.Fd()},
		Sys:   sys,
	}
	path, args := spec.Path, spec.Args
	var status, statusW *os.File // ward-init's status pipe
	if spec.Helper != "" {
		status, statusW, err = os.Pipe()
		if err != nil {
			return nil, fmt.Errorf("%w: status pipe: %w", ErrFork, err)
		}
		defer status.Close()
		defer statusW.Close()
		attr.Files = append(attr.Files, statusW.Fd())
		// ward-init starts as root and takes the identity, and the
		// directory, itself; the program's environment goes on its
		// command line, and its own is ward's choice: one P, as it runs
		// on one thread anyway.
		sys.Credential, attr.Dir, attr.Env = nil, "", helperEnv
		is, err := helperSpec(&spec)
		if err != nil {
			return nil, err
		}
		if spec.Isolation != nil {
			sys.Cloneflags = nsCloneFlags
		}
		path, args = spec.Helper, append([]string{nsinit.Argv0}, is.Args()...)
	}

	var pid int
	if spec.CgroupV2Dir != "" {
		cgfd, oerr := unix.Open(spec.CgroupV2Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if oerr != nil {
			return nil, fmt.Errorf("%w: open %s: %w", ErrCgroup, spec.CgroupV2Dir, oerr)
		}
		sys.UseCgroupFD, sys.CgroupFD = true, cgfd
		pid, err = startProcess(path, args, attr)
		unix.Close(cgfd)
	} else {
		pid, err = startFromV1Thread(spec.CgroupV1Dirs, path, args, attr)
	}
	if err == nil && status != nil {
		// The write end must be closed here too, or the read below never
		// sees the end of file that means the program runs.
		statusW.Close()
		err = awaitHelper(status, &spec)
	}
	if err != nil {
		if pid > 0 {
			// Started, but the forking thread stayed in its groups, or
			// ward-init failed: the child must not run on unwatched.
			syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			syscall.Wait4(pid, &ws, 0, nil)
			if pidfd >= 0 {
				unix.Close(pidfd)
			}
		}
		if ee, ok := errors.AsType[*ExecError](err); ok && ee.Step == StepUnknown {
			if status != nil {
				// ward-init itself could not be executed: the agent's
				// installation is at fault, never the request.
				return nil, fmt.Errorf("%w: exec %s: %w", ErrIsolation, spec.Helper, ee.Errno)
			}
			// Here, off the v1 thread: the probe must not run inside the
			// instance's groups.
			ee.Step = locate(ee.Errno, attr)
			if ee.Step == StepChdir {
				ee.Path = spec.Dir
			}
		}
		return nil, err
	}

	p := &Process{Pid: pid, child: true, waited: make(chan struct{})}
	if pidfd < 0 {
		// Kernels without CLONE_PIDFD: still safe, the child is a zombie
		// (so its pid is not reused) until this agent waits for it.
		pidfd, err = unix.PidfdOpen(pid, 0)
		if err != nil {
			p.kill()
			return nil, fmt.Errorf("%w: pidfd: %w", ErrWatch, err)
		}
	}
	// Read before the watcher may reap it: until then the child is at worst
	// a zombie whose stat is still there.
	if p.StartTime, err = StartTime(pid); err != nil {
		unix.Close(pidfd)
		p.kill()
		return nil, fmt.Errorf("%w: %w", ErrWatch, err)
	}
	if err := p.attach(pidfd); err != nil {
		p.kill()
		return nil, fmt.Errorf("%w: %w", ErrWatch, err)
	}
	return p, nil
}

// nsCloneFlags are the namespaces of an isolated instance. The network
// namespace is not among them yet: namespaced instances keep the host's
// network until per-instance networking lands.
const nsCloneFlags = unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP

// helperTimeout bounds ward-init's work, milliseconds when well: only a
// kernel stuck on a mount makes it wait longer.
const helperTimeout = 10 * time.Second

// helperEnv is ward-init's own environment.
var helperEnv = []string{"GOMAXPROCS=1"}

// helperSpec is what ward-init is told for spec.
func helperSpec(spec *Spec) (*nsinit.Spec, error) {
	is := &nsinit.Spec{
		UID: spec.UID, GID: spec.GID, Dir: spec.Dir, NOFILE: spec.NOFILE,
		Path: spec.Path, Argv: spec.Args, Env: spec.Env,
	}
	if iso := spec.Isolation; iso != nil {
		is.Namespaces = true
		is.Hostname, is.Writable, is.TmpBytes, is.Hide = iso.Hostname, iso.Writable, iso.TmpBytes, iso.Hide
		is.Cgroup2 = spec.CgroupV2Dir != ""
		prog, err := seccomp.Program()
		if err != nil {
			return nil, fmt.Errorf("%w: seccomp filter: %w", ErrIsolation, err)
		}
		is.Filter = prog
	}
	return is, nil
}

// awaitHelper reads ward-init's status pipe to its end: nothing means the
// program runs; a Failure is returned as the error Start gives for that
// step.
func awaitHelper(status *os.File, spec *Spec) error {
	status.SetReadDeadline(time.Now().Add(helperTimeout))
	b, err := io.ReadAll(status)
	if err != nil {
		return fmt.Errorf("%w: ward-init status: %w", ErrIsolation, err)
	}
	if len(b) == 0 {
		return nil
	}
	f, err := nsinit.DecodeFailure(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIsolation, err)
	}
	switch f.Step {
	case nsinit.StepExec:
		return &ExecError{Step: StepExec, Path: spec.Path, Errno: f.Errno}
	case nsinit.StepChdir:
		return &ExecError{Step: StepChdir, Path: spec.Dir, Errno: f.Errno}
	case nsinit.StepCredentials:
		return &ExecError{Step: StepCredentials, Path: spec.Path, Errno: f.Errno}
	}
	return fmt.Errorf("%w: %w", ErrIsolation, f)
}

// checkSpec refuses what syscall would refuse before forking, or what
// would make Start panic, as ErrSpec: so that an errno from StartProcess
// always comes from the kernel.
func checkSpec(spec *Spec) error {
	switch {
	case spec.Path == "" || len(spec.Args) == 0:
		return fmt.Errorf("%w: empty command", ErrSpec)
	case (spec.CgroupV2Dir == "") == (len(spec.CgroupV1Dirs) == 0):
		return fmt.Errorf("%w: exactly one cgroup placement is required", ErrSpec)
	case spec.Stdout == nil || spec.Stderr == nil:
		return fmt.Errorf("%w: Stdout and Stderr are required", ErrSpec)
	case spec.Stdout.Fd() == ^uintptr(0) || spec.Stderr.Fd() == ^uintptr(0):
		// syscall would start the program with that fd closed.
		return fmt.Errorf("%w: Stdout or Stderr is closed", ErrSpec)
	}
	nul := func(ss ...string) error {
		for _, s := range ss {
			if strings.IndexByte(s, 0) >= 0 {
				return fmt.Errorf("%w: NUL byte in %q", ErrSpec, s)
			}
		}
		return nil
	}
	return errors.Join(nul(spec.Path, spec.Dir), nul(spec.Args...), nul(spec.Env...))
}

// noChild is what Start puts in SysProcAttr.PidFD before StartProcess.
// syscall writes the child's pidfd (or -1) there the moment its clone
// succeeded, and on a later failure of the child closes it and writes -1
// (forkAndExecFailureCleanup); it never puts the old value back. So an
// error that leaves noChild there came before any child existed: the
// status pipe or the clone itself. TestStartErrorSteps fails if a Go
// release changes this.
const noChild = -2

// startProcess is syscall.StartProcess with its errno told apart: ErrFork
// for the parent's steps, an *ExecError (step still to be located) for the
// child's.
func startProcess(path string, args []string, attr *syscall.ProcAttr) (int, error) {
	*attr.Sys.PidFD = noChild
	pid, _, err := syscall.StartProcess(path, args, attr)
	if err == nil {
		return pid, nil
	}
	errno, ok := errors.AsType[syscall.Errno](err)
	switch {
	case !ok:
		return 0, fmt.Errorf("%w: %w", ErrSpec, err) // syscall's own checks of attr
	case *attr.Sys.PidFD == noChild:
		return 0, fmt.Errorf("%w: %s: %w", ErrFork, path, errno)
	}
	*attr.Sys.PidFD = -1
	return 0, &ExecError{Step: StepUnknown, Path: path, Errno: errno}
}

// probePath is longer than PATH_MAX: execve refuses it with ENAMETOOLONG
// while copying it in, before it looks anything up or checks any limit.
var probePath = strings.Repeat("/", 4096)

// locate tells at which step a child failed with errno, by asking the
// kernel again (see ExecError): a probe child takes the same credentials,
// directory and fds, outside any instance's group, and then execs
// probePath.
func locate(errno syscall.Errno, attr *syscall.ProcAttr) Step {
	if errno == syscall.ENAMETOOLONG {
		// The probe's own answer: tell by the names instead.
		if nameTooLong(attr.Dir) {
			return StepChdir
		}
		return StepExec
	}
	probeFD := noChild
	sys := *attr.Sys
	sys.PidFD, sys.UseCgroupFD, sys.CgroupFD = &probeFD, false, 0
	probe := syscall.ProcAttr{Dir: attr.Dir, Files: attr.Files, Sys: &sys}
	_, _, err := syscall.StartProcess(probePath, []string{"spawn-probe"}, &probe)
	again, _ := errors.AsType[syscall.Errno](err)
	switch {
	case probeFD == noChild:
		return StepUnknown // no probe child: its own clone failed
	case again == syscall.ENAMETOOLONG:
		return StepExec // the probe got past every step before exec
	case again != errno:
		return StepUnknown // the kernel answers differently now
	case errno == syscall.EPERM || errno == syscall.EINVAL:
		return StepCredentials // chdir and dup3 never fail so
	case errno == syscall.EBADF || errno == syscall.EMFILE:
		return StepStdio // chdir and the credential calls never fail so
	case attr.Dir != "" && chdirErrnos[errno]:
		return StepChdir
	}
	return StepUnknown
}

// chdirErrnos are those chdir(2) fails with (ENAMETOOLONG aside, see locate).
var chdirErrnos = map[syscall.Errno]bool{
	syscall.EACCES: true, syscall.ENOENT: true, syscall.ENOTDIR: true, syscall.ELOOP: true,
	syscall.EIO: true, syscall.ENOMEM: true, syscall.EFAULT: true,
}

// nameTooLong reports whether the kernel refuses path's name itself:
// PATH_MAX for the whole, NAME_MAX for each component.
func nameTooLong(path string) bool {
	if len(path) >= 4096 {
		return true
	}
	for _, c := range strings.Split(path, "/") {
		if len(c) > 255 {
			return true
		}
	}
	return false
}

// mainTID is the id of the process's main thread, which equals its pid.
var mainTID = os.Getpid()

// onDisposableThread runs f on an OS thread of its own, locked, which the
// runtime ends when f returns (the goroutine exits locked), and returns the
// thread's id. That thread is never the main one: the runtime cannot end the
// main thread (a goroutine exiting locked to it wedges it instead), so it
// must never be the one that joins an instance's groups, where it would
// stay. Only a call that lands on the main thread pays: it holds that
// thread, locked and blocked, while another goroutine goes again, which
// then cannot land there.
func onDisposableThread(f func(tid int)) int {
	done := make(chan int, 1)
	go func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		if tid == mainTID {
			mainThreadDodges.Add(1)
			done <- onDisposableThread(f)
			runtime.UnlockOSThread()
			return
		}
		f(tid)
		done <- tid
	}()
	return <-done
}

// mainThreadDodges counts the calls of onDisposableThread that landed on the
// main thread and went again; tests read it to know they covered that case.
var mainThreadDodges atomic.Int64

// startFromV1Thread forks from a fresh OS thread that first joins the v1
// groups, so the child is born inside them. The thread is never returned to
// the runtime's pool (see onDisposableThread). Start returns only once that
// thread is gone: while it lives, the agent's own pid is listed in the
// instance's groups, where a kill-all would reach the agent and a freeze
// would stop it.
func startFromV1Thread(dirs []string, path string, args []string, attr *syscall.ProcAttr) (int, error) {
	var pid int
	var err error
	tid := onDisposableThread(func(tid int) {
		for _, d := range dirs {
			if werr := os.WriteFile(d+"/tasks", []byte(strconv.Itoa(tid)), 0); werr != nil {
				err = fmt.Errorf("%w: join %s: %w", ErrCgroup, d, werr)
				return
			}
		}
		pid, err = startProcess(path, args, attr)
	})
	if werr := awaitThreadExit(tid); werr != nil && err == nil {
		err = werr
	}
	return pid, err
}

// threadExitTimeout bounds the wait for a spawning thread to end; the
// runtime ends it right after its goroutine returns, within microseconds.
const threadExitTimeout = 5 * time.Second

func awaitThreadExit(tid int) error {
	p := "/proc/self/task/" + strconv.Itoa(tid)
	deadline := time.Now().Add(threadExitTimeout)
	for d := time.Duration(0); ; d = min(2*d+10*time.Microsecond, time.Millisecond) {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: thread %d still alive inside the instance's groups", ErrCgroup, tid)
		}
		time.Sleep(d)
	}
}

// Adopt re-attaches to a process started by an earlier agent. startTime
// guards against pid reuse: a different process under the same pid is
// ErrGone. A process that exited but is not yet reaped by its new parent is
// adopted, and its Wait returns at once.
func Adopt(pid int, startTime uint64) (*Process, error) {
	if pid <= 0 {
		return nil, ErrGone
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, ErrGone
	}
	if err != nil {
		return nil, fmt.Errorf("spawn: pidfd %d: %w", pid, err)
	}
	// Checked after the pidfd exists: from here on the pidfd pins this very
	// process, so a matching start time cannot belong to a later one.
	st, err := StartTime(pid)
	if err != nil || st != startTime {
		unix.Close(fd)
		return nil, ErrGone
	}
	p := &Process{Pid: pid, StartTime: st, waited: make(chan struct{})}
	if err := p.attach(fd); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Process) attach(fd int) error {
	// Non-blocking lets the netpoller own the fd: Wait then parks a
	// goroutine, not a thread.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return fmt.Errorf("spawn: pidfd nonblock: %w", err)
	}
	p.pidfd = os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(p.Pid))
	go p.watch()
	return nil
}

func (p *Process) watch() {
	defer close(p.waited)
	rc, err := p.pidfd.SyscallConn()
	if err == nil {
		err = rc.Read(func(fd uintptr) bool { return p.exited(int(fd)) })
	}
	if err != nil {
		// The poller failed (it should not): fall back to a blocking poll on
		// this goroutine's thread.
		for !p.exited(int(p.pidfd.Fd())) {
			fds := []unix.PollFd{{Fd: int32(p.pidfd.Fd()), Events: unix.POLLIN}}
			unix.Poll(fds, -1)
		}
	}
	p.pidfd.Close()
}

// exited reports whether the process has ended, reaping it if it is ours.
func (p *Process) exited(fd int) bool {
	if p.child {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(p.Pid, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			return false
		}
		if wpid == 0 && err == nil {
			return false
		}
		if err == nil {
			p.exit = Exit{Known: true, Code: ws.ExitStatus()}
			if ws.Signaled() {
				p.exit.Code, p.exit.Signal = -1, ws.Signal()
			}
		}
		return true
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// Wait blocks until the process exits or ctx ends.
func (p *Process) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.waited:
		return p.exit, nil
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Done is closed once the process has exited (and, if it is a child, been reaped).
func (p *Process) Done() <-chan struct{} { return p.waited }

// Exited returns how the process ended; valid once Done is closed.
func (p *Process) Exited() Exit { <-p.waited; return p.exit }

// Signal sends sig through the pidfd, so it can never reach a process that
// reused the pid. A process that already exited is not an error.
func (p *Process) Signal(sig unix.Signal) error {
	select {
	case <-p.waited:
		return nil
	default:
	}
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return nil // closed: the process is gone
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return nil
	}
	if serr != nil && !errors.Is(serr, unix.ESRCH) {
		return fmt.Errorf("spawn: signal %d: %w", p.Pid, serr)
	}
	return nil
}

func (p *Process) kill() {
	syscall.Kill(p.Pid, syscall.SIGKILL)
	if p.pidfd == nil {
		var ws syscall.WaitStatus
		syscall.Wait4(p.Pid, &ws, 0, nil)
	}
}

// StartTime reads a process's start time (clock ticks since boot), the
// kernel's own identity check against pid reuse.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, ErrGone
		}
		return 0, fmt.Errorf("spawn: %w", err)
	}
	// The command name may contain spaces and parentheses: fields are
	// counted after the last ')'. starttime is field 22; field 3 follows ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("spawn: malformed /proc/%d/stat", pid)
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 20 {
		return 0, fmt.Errorf("spawn: malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(string(fields[19]), 10, 64)
}

// TermInit makes a SIGTERM already sent to p end it when p is the init of
// a PID namespace (a namespaced instance's main process) that neither
// catches nor ignores SIGTERM. The kernel delivers to a namespace's init
// only the signals it has a handler for, so such a process would sit out
// every grace period; outside the namespace SIGTERM's default action
// would have ended it at once, and that is what it gets: SIGKILL, which
// also ends every other process of the namespace. A process that is not
// an init, or that handles SIGTERM, is left alone.
func (p *Process) TermInit() error {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/status")
	if err != nil {
		return nil // gone
	}
	var init, handled bool
	for _, line := range strings.Split(string(st), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		switch k {
		case "NSpid":
			init = len(f) > 1 && f[len(f)-1] == "1"
		case "SigCgt", "SigIgn":
			if len(f) == 1 {
				mask, err := strconv.ParseUint(f[0], 16, 64)
				handled = handled || err != nil || mask&(1<<(unix.SIGTERM-1)) != 0
			}
		}
	}
	if !init || handled {
		return nil
	}
	return p.Signal(unix.SIGKILL)
}
