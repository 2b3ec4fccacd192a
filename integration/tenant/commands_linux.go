package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

var subcommands = map[string]subcommand{
	"forkbomb": {"fork/exec sleeping children until fork fails", forkbomb},
	"spawn":    {"start N short children and count the successes", spawn},
	"fill":     {"write 1 MiB chunks until an error", fill},
	"probe":    {"try to reach another instance's files and processes", probe},
	"burn":     {"spin on one core forever", burn},
	"hog":      {"allocate and touch N MiB and keep it", hog},
	"exec":     {"run a command and report how it ended", execCmd},
	"serve":    {"answer HTTP on $PORT until SIGUSR1, then stop listening", serve},
}

// errnoName names err's errno ("EACCES"); "" for no error, and the error's
// text when it carries no errno.
func errnoName(err error) string {
	if err == nil {
		return ""
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
		return fmt.Sprintf("errno %d", int(e))
	}
	return err.Error()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// childAttr gives children the tenant's environment and /dev/null for
// stdio: their output is not the tenant's result.
func childAttr() (*syscall.ProcAttr, func(), error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := null.Fd()
	return &syscall.ProcAttr{Env: os.Environ(), Files: []uintptr{fd, fd, fd}}, func() { null.Close() }, nil
}

func threads() int {
	ents, _ := os.ReadDir("/proc/self/task")
	return len(ents)
}

type forkbombResult struct {
	Children int    `json:"children"` // forks that succeeded (children still alive)
	Errno    string `json:"errno"`    // why the next one failed; "" if -max was reached
	Error    string `json:"error"`
	Threads  int    `json:"threads"` // the tenant's own threads, which count as pids too
}

// forkbomb starts children until the kernel refuses. The children are
// single-threaded and never exit, so each holds exactly one pid.
func forkbomb(c *common, args []string) error {
	fs := c.flags()
	max := fs.Int("max", 4096, "stop after this many children (for a host with no pids limit)")
	child := fs.String("child", "/bin/sleep", "the child program; run as CHILD infinity")
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	attr, done, err := childAttr()
	if err != nil {
		return err
	}
	defer done()
	if err := c.begin(); err != nil {
		return err
	}
	argv := []string{filepath.Base(*child), "infinity"}
	var r forkbombResult
	for r.Children < *max {
		if _, err = syscall.ForkExec(*child, argv, attr); err != nil {
			break
		}
		r.Children++
	}
	r.Errno, r.Error, r.Threads = errnoName(err), errText(err), threads()
	return c.done(r)
}

type spawnResult struct {
	Requested int    `json:"requested"`
	Started   int    `json:"started"`   // fork/exec succeeded
	Succeeded int    `json:"succeeded"` // started and exited with 0
	Errno     string `json:"errno"`     // the first failure to start, "" if none
	Error     string `json:"error"`
}

// spawn starts all N children before waiting for any, so that N of them
// are alive at once.
func spawn(c *common, args []string) error {
	fs := c.flags()
	n := fs.Int("n", 1, "how many children")
	child := fs.String("child", "/bin/true", "the child program (no arguments)")
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	if *n < 0 {
		return usagef("-n must be >= 0, got %d", *n)
	}
	attr, done, err := childAttr()
	if err != nil {
		return err
	}
	defer done()
	if err := c.begin(); err != nil {
		return err
	}
	r := spawnResult{Requested: *n}
	var pids []int
	var first error
	for i := 0; i < *n; i++ {
		pid, err := syscall.ForkExec(*child, []string{filepath.Base(*child)}, attr)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		pids = append(pids, pid)
	}
	r.Started = len(pids)
	for _, pid := range pids {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err == nil && ws.Exited() && ws.ExitStatus() == 0 {
			r.Succeeded++
		}
	}
	r.Errno, r.Error = errnoName(first), errText(first)
	return c.done(r)
}

type fillResult struct {
	Path   string `json:"path"`
	Bytes  int64  `json:"bytes"`  // written (and, with -sync, synced) before the error
	Op     string `json:"op"`     // what failed: open, write, fsync, close; "" if -max was reached
	Errno  string `json:"errno"`  // EDQUOT, ENOSPC, ...
	Error  string `json:"error"`  // the full error
	Capped bool   `json:"capped"` // stopped at -max, no error
}

// fill writes one file in 1 MiB chunks until the filesystem refuses. The
// chunks are not zeros, so neither compression nor holes can let the data
// escape the quota.
func fill(c *common, args []string) error {
	fs := c.flags()
	dir := fs.String("dir", os.Getenv("HOME"), "directory to fill")
	max := fs.Int64("max", 1<<30, "stop after this many bytes without an error (0: no cap)")
	sync := fs.Bool("sync", true, "fsync after every chunk, so a late quota error is seen at its chunk")
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	if *dir == "" {
		return usagef("-dir: no directory (and HOME is not set)")
	}
	if *max < 0 {
		return usagef("-max must be >= 0, got %d", *max)
	}
	if err := c.begin(); err != nil {
		return err
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i*131 + i>>8)
	}
	r := fillResult{Path: filepath.Join(*dir, "fill.dat")}
	fail := func(op string, err error) {
		r.Op, r.Errno, r.Error = op, errnoName(err), err.Error()
	}
	f, err := os.OpenFile(r.Path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		fail("open", err)
	} else {
		for {
			if *max > 0 && r.Bytes >= *max {
				r.Capped = true
				break
			}
			n, err := f.Write(chunk)
			if err != nil {
				r.Bytes += int64(n)
				fail("write", err)
				break
			}
			if *sync {
				if err := f.Sync(); err != nil {
					fail("fsync", err)
					break
				}
			}
			r.Bytes += int64(n)
		}
		if err := f.Close(); err != nil && r.Op == "" {
			fail("close", err)
		}
	}
	return c.done(r)
}

// probeReport is one target's outcome: each field is the errno of one
// attempt, "" when the attempt succeeded.
type probeReport struct {
	Dir      string `json:"dir"`
	PID      int    `json:"target_pid"`
	ReadDir  string `json:"readdir"`   // list the directory
	Open     string `json:"open"`      // open a file inside it for reading
	Kill0    string `json:"kill0"`     // kill(pid, 0)
	Ptrace   string `json:"ptrace"`    // PTRACE_ATTACH (detached again at once)
	Environ  string `json:"environ"`   // read /proc/pid/environ
	Mem      string `json:"mem"`       // read /proc/pid/mem at a mapped address
	KillTerm string `json:"kill_term"` // kill(pid, SIGTERM), tried last

	// What the successful attempts saw, so that a success is a real one.
	Entries      int `json:"entries"`
	EnvironBytes int `json:"environ_bytes"`
	MemBytes     int `json:"mem_bytes"`
}

type probeResult struct {
	Other *probeReport `json:"other,omitempty"` // -dir and -pid
	Self  *probeReport `json:"self,omitempty"`  // -self: $HOME and a child of its own
}

// probe tries, as this instance's user, everything a tenant could do to
// another instance's files and processes. With -self it tries the same on
// its own directory and on a child it starts, to show that the attempts
// work when they are allowed.
func probe(c *common, args []string) error {
	fs := c.flags()
	dir := fs.String("dir", "", "the other instance's directory")
	pid := fs.Int("pid", 0, "a process of the other instance")
	file := fs.String("file", "logs/stdout.log", "file to open, relative to the directory")
	self := fs.Bool("self", false, "also probe this instance's own directory and a child of its own")
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	if (*dir == "") != (*pid == 0) {
		return usagef("-dir and -pid go together")
	}
	if *dir == "" && !*self {
		return usagef("nothing to probe: give -dir and -pid, or -self")
	}
	if *pid < 0 || *pid == os.Getpid() {
		return usagef("-pid %d: not another process", *pid)
	}
	if err := c.begin(); err != nil {
		return err
	}
	var r probeResult
	if *dir != "" {
		r.Other = probeTarget(*dir, *file, *pid)
	}
	if *self {
		home := os.Getenv("HOME")
		if home == "" {
			return errors.New("-self: HOME is not set")
		}
		attr, done, err := childAttr()
		if err != nil {
			return err
		}
		child, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "infinity"}, attr)
		done()
		if err != nil {
			return fmt.Errorf("-self: start a child to probe: %w", err)
		}
		r.Self = probeTarget(home, *file, child)
		// The SIGTERM may not have been delivered if the probe failed.
		syscall.Kill(child, syscall.SIGKILL)
		var ws syscall.WaitStatus
		syscall.Wait4(child, &ws, 0, nil)
	}
	return c.done(r)
}

func probeTarget(dir, file string, pid int) *probeReport {
	r := &probeReport{Dir: dir, PID: pid}
	ents, err := os.ReadDir(dir)
	r.ReadDir, r.Entries = errnoName(err), len(ents)
	f, err := os.Open(filepath.Join(dir, file))
	if err == nil {
		f.Close()
	}
	r.Open = errnoName(err)
	r.Kill0 = errnoName(syscall.Kill(pid, 0))
	r.Ptrace = ptraceAttach(pid)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	r.Environ, r.EnvironBytes = errnoName(err), len(env)
	r.MemBytes, err = readMem(pid)
	r.Mem = errnoName(err)
	// Last: if it got through, the target is gone.
	r.KillTerm = errnoName(syscall.Kill(pid, syscall.SIGTERM))
	return r
}

// ptraceAttach attaches to pid and detaches again. ptrace requests must
// come from the tracing thread, hence the lock.
func ptraceAttach(pid int) string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceAttach(pid); err != nil {
		return errnoName(err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return "attached, but wait: " + errnoName(err)
	}
	if err := unix.PtraceDetach(pid); err != nil {
		return "attached, but detach: " + errnoName(err)
	}
	return ""
}

// readMem reads a few bytes of pid's memory at the start of its first
// mapping (from /proc/pid/maps; if that cannot be read, at an address
// where x86-64 executables usually start, so the open is still tried).
func readMem(pid int) (int, error) {
	addr := int64(0x400000)
	if maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid)); err == nil {
		sc := bufio.NewScanner(maps)
		if sc.Scan() {
			if start, _, ok := strings.Cut(sc.Text(), "-"); ok {
				if v, err := strconv.ParseInt(start, 16, 64); err == nil {
					addr = v
				}
			}
		}
		maps.Close()
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 64)
	return f.ReadAt(buf, addr)
}

type burnResult struct {
	CPU   int    `json:"cpu"`   // the CPU it is pinned to, -1 for none
	Errno string `json:"errno"` // of sched_setaffinity
}

// burn spins forever. The spinning goroutine is locked to its thread and
// that thread alone is pinned: it is the only one that uses CPU.
func burn(c *common, args []string) error {
	fs := c.flags()
	cpu := fs.Int("cpu", -1, "pin to this CPU (-1: no pinning)")
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	if *cpu < -1 || *cpu >= runtime.NumCPU() {
		return usagef("-cpu %d: this machine has CPUs 0..%d", *cpu, runtime.NumCPU()-1)
	}
	if err := c.begin(); err != nil {
		return err
	}
	r := burnResult{CPU: *cpu}
	go func() {
		runtime.LockOSThread()
		var err error
		if *cpu >= 0 {
			var set unix.CPUSet
			set.Set(*cpu)
			err = unix.SchedSetaffinity(0, &set) // 0: this thread
		}
		r.Errno = errnoName(err)
		if err := c.emit(phaseDone, r); err != nil {
			fmt.Fprintln(os.Stderr, "tenant burn:", err)
			os.Exit(1)
		}
		spin()
	}()
	c.end(true)
	return nil
}

var sink uint64

func spin() {
	x := uint64(1)
	for {
		for i := 0; i < 1<<20; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		sink = x
	}
}

type hogTouched struct {
	MiB       int `json:"mib"`
	PageBytes int `json:"page_bytes"`
}

type hogVerified struct {
	MiB      int  `json:"mib"`
	Intact   bool `json:"intact"`    // every page still holds what was written
	BadPages int  `json:"bad_pages"` // pages that do not
}

// hog maps N MiB outside the Go heap (the collector neither scans nor
// doubles it), writes every page's own index into it and keeps it. On each
// SIGUSR1 it checks every page again and reports ("verified"): a neighbour
// test uses that to show its memory survived someone else's OOM.
func hog(c *common, args []string) error {
	fs := c.flags()
	mib := fs.Int("mb", 0, "MiB to allocate and touch")
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	if *mib <= 0 {
		return usagef("-mb must be > 0, got %d", *mib)
	}
	if err := c.begin(); err != nil {
		return err
	}
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, *mib<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("mmap %d MiB: %w", *mib, err)
	}
	stamp := func(i int) uint64 { return uint64(i)*0x9e3779b97f4a7c15 | 1 }
	for i := 0; i*page < len(mem); i++ {
		putU64(mem[i*page:], stamp(i))
	}
	if err := c.emit("touched", hogTouched{MiB: *mib, PageBytes: page}); err != nil {
		return err
	}
	for {
		select {
		case <-c.term:
			return nil
		case <-c.usr1:
		}
		r := hogVerified{MiB: *mib}
		for i := 0; i*page < len(mem); i++ {
			if getU64(mem[i*page:]) != stamp(i) {
				r.BadPages++
			}
		}
		r.Intact = r.BadPages == 0
		if err := c.emit("verified", r); err != nil {
			return err
		}
	}
}

func putU64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

func getU64(b []byte) uint64 {
	var v uint64
	for i := 0; i < 8; i++ {
		v |= uint64(b[i]) << (8 * i)
	}
	return v
}

type execResult struct {
	Argv     []string `json:"argv"`
	Path     string   `json:"path"`      // the file executed
	Started  bool     `json:"started"`   // execve succeeded
	Errno    string   `json:"errno"`     // why it did not start
	Error    string   `json:"error"`     // the full error
	ExitCode *int     `json:"exit_code"` // when it exited
	Signal   string   `json:"signal"`    // when a signal ended it
	Stdout   string   `json:"stdout"`    // its output, at most 4 KiB
}

const maxExecOutput = 4 << 10

// execCmd runs a command and tells how the kernel answered. A bare name
// is looked up in PATH by existence only, and then executed: an execute
// permission refused (an ACL deny entry) must show as execve's EACCES, not
// as "not found" the way a lookup that checks access would put it.
func execCmd(c *common, args []string) error {
	fs := c.flags()
	if err := c.parse(fs, args, true); err != nil {
		return err
	}
	argv := fs.Args()
	if len(argv) == 0 {
		return usagef("exec: no command (tenant exec [flags] -- CMD [ARG...])")
	}
	if err := c.begin(); err != nil {
		return err
	}
	r := execResult{Argv: argv, Path: resolve(argv[0])}
	var out limitedBuffer
	cmd := &exec.Cmd{Path: r.Path, Args: argv, Stdout: &out, Stderr: os.Stderr}
	err := cmd.Run()
	r.Stdout = out.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
		r.Started, r.ExitCode = true, intp(0)
	case errors.As(err, &ee):
		r.Started = true
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.Signal = unix.SignalName(ws.Signal())
		} else {
			r.ExitCode = intp(ee.ExitCode())
		}
	default:
		r.Errno, r.Error = errnoName(err), err.Error()
	}
	return c.done(r)
}

func intp(v int) *int { return &v }

// resolve finds name in PATH the way execvp would choose, by existence.
func resolve(name string) string {
	if strings.Contains(name, "/") {
		return name
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return name // execve fails with ENOENT, which is the answer
}

// limitedBuffer keeps the first maxExecOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxExecOutput - b.Len(); room > 0 {
		if len(p) < room {
			room = len(p)
		}
		b.Buffer.Write(p[:room])
	}
	return len(p), nil
}

type serveResult struct {
	Addr  string `json:"addr"`
	Errno string `json:"errno"`
}

// serve answers every HTTP request on 127.0.0.1:$PORT with 200 until
// SIGUSR1, then closes its listener (and reports "closed") and stays alive
// until SIGTERM: an instance that stops answering without ending.
func serve(c *common, args []string) error {
	fs := c.flags()
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	port := os.Getenv("PORT")
	if port == "" {
		return usagef("serve: no PORT in the environment")
	}
	r := serveResult{Addr: net.JoinHostPort("127.0.0.1", port)}
	l, err := net.Listen("tcp", r.Addr)
	r.Errno = errnoName(err)
	if err := c.emit(phaseDone, r); err != nil || l == nil {
		return err
	}
	go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	select {
	case <-c.usr1:
		l.Close()
		if err := c.emit("closed", r); err != nil {
			return err
		}
	case <-c.term:
		return nil
	}
	<-c.term
	return nil
}
