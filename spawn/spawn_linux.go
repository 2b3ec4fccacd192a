package spawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrGone reports that a process to adopt is no longer the one recorded: it
// exited and was reaped, or its pid now belongs to another process.
var ErrGone = errors.New("process is gone")

func init() {
	// See the package comment: keeps goroutines that move their thread into a
	// v1 cgroup off the main thread, whose exit the runtime cannot perform.
	runtime.LockOSThread()
}

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

// Process is a running (or exited, not yet waited for) instance process.
type Process struct {
	Pid       int
	StartTime uint64 // start time in clock ticks since boot (/proc/<pid>/stat field 22)

	child  bool
	pidfd  *os.File
	waited chan struct{}
	exit   Exit
}

// Start starts the process described by spec inside its cgroup.
func Start(spec Spec) (*Process, error) {
	if spec.Path == "" || len(spec.Args) == 0 {
		return nil, errors.New("spawn: empty command")
	}
	if (spec.CgroupV2Dir == "") == (len(spec.CgroupV1Dirs) == 0) {
		return nil, errors.New("spawn: exactly one cgroup placement is required")
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	defer devnull.Close()

	pidfd := -1
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

	var pid int
	if spec.CgroupV2Dir != "" {
		cgfd, err := unix.Open(spec.CgroupV2Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("spawn: open cgroup %s: %w", spec.CgroupV2Dir, err)
		}
		sys.UseCgroupFD, sys.CgroupFD = true, cgfd
		pid, _, err = syscall.StartProcess(spec.Path, spec.Args, attr)
		unix.Close(cgfd)
		if err != nil {
			return nil, fmt.Errorf("spawn: start %s: %w", spec.Path, err)
		}
	} else {
		pid, err = startFromV1Thread(spec.CgroupV1Dirs, spec.Path, spec.Args, attr)
		if err != nil {
			return nil, err
		}
	}

	p := &Process{Pid: pid, child: true, waited: make(chan struct{})}
	if pidfd < 0 {
		// Kernels without CLONE_PIDFD: still safe, the child is a zombie
		// (so its pid is not reused) until this agent waits for it.
		pidfd, err = unix.PidfdOpen(pid, 0)
		if err != nil {
			p.kill()
			return nil, fmt.Errorf("spawn: pidfd: %w", err)
		}
	}
	// Read before the watcher may reap it: until then the child is at worst
	// a zombie whose stat is still there.
	if p.StartTime, err = StartTime(pid); err != nil {
		unix.Close(pidfd)
		p.kill()
		return nil, err
	}
	if err := p.attach(pidfd); err != nil {
		p.kill()
		return nil, err
	}
	return p, nil
}

// startFromV1Thread forks from a fresh OS thread that first joins the v1
// groups, so the child is born inside them. The thread is never returned to
// the runtime's pool: the goroutine exits locked, and the runtime ends it.
// Start returns only once that thread is gone: while it lives, the agent's
// own pid is listed in the instance's groups, where a kill-all would reach
// the agent and a freeze would stop it.
func startFromV1Thread(dirs []string, path string, args []string, attr *syscall.ProcAttr) (int, error) {
	type result struct {
		pid, tid int
		err      error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		tid := unix.Gettid()
		r := result{tid: tid}
		for _, d := range dirs {
			if err := os.WriteFile(d+"/tasks", []byte(strconv.Itoa(tid)), 0); err != nil {
				r.err = fmt.Errorf("spawn: join cgroup %s: %w", d, err)
				break
			}
		}
		if r.err == nil {
			r.pid, _, r.err = syscall.StartProcess(path, args, attr)
			if r.err != nil {
				r.err = fmt.Errorf("spawn: start %s: %w", path, r.err)
			}
		}
		ch <- r
	}()
	r := <-ch
	if err := awaitThreadExit(r.tid); err != nil && r.err == nil {
		r.err = err
	}
	return r.pid, r.err
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
			return fmt.Errorf("spawn: thread %d still alive inside the instance's cgroups", tid)
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
