package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func init() {
	subcommands["escape"] = subcommand{"try the ways out of an instance: namespaces, mounts, kernel interfaces, setuid, other processes and paths", escape}
}

// escapeResult is what each attempt got: the errno's name, or "" when the
// kernel let it through.
type escapeResult struct {
	Attempts map[string]string `json:"attempts"`
	// What the instance sees of the host.
	Hostname  string `json:"hostname"`
	Processes int    `json:"processes"` // entries in /proc that are processes
	SuidEUID  *int   `json:"suid_euid"` // euid a set-uid program reported, when one was run
	OOMScore  string `json:"oom_score_adj"`
	NOFILE    uint64 `json:"nofile"`
	Caps      string `json:"cap_eff"`
}

// escape tries, as the instance's user, what gets out of an instance or at
// the host's kernel state, and reports each attempt. A neighbour (-pid, a
// host pid) and host paths (-path, repeatable) are tried too; -suid runs a
// set-uid program that prints its effective uid (id -u).
func escape(c *common, args []string) error {
	fs := c.flags()
	pid := fs.Int("pid", 0, "a neighbour's process (a host pid)")
	suid := fs.String("suid", "", "a set-uid-root program printing its euid (id -u)")
	var paths multiFlag
	fs.Var(&paths, "path", "a host path to open (repeatable)")
	if err := c.parse(fs, args, false); err != nil {
		return err
	}
	if err := c.begin(); err != nil {
		return err
	}
	r := escapeResult{Attempts: map[string]string{}}
	try := func(name string, err error) { r.Attempts[name] = errnoName(err) }

	// New namespaces: a user namespace makes an unprivileged process root
	// again, inside it; the others need that root.
	// (unshare would not do: the kernel refuses a user namespace to a
	// multithreaded caller whatever the filter says.)
	try("clone_user", cloneUser())
	try("mount_tmpfs", unix.Mount("tmpfs", "/tmp", "tmpfs", 0, ""))
	try("umount_proc", unix.Unmount("/proc", unix.MNT_DETACH))
	try("chroot", unix.Chroot("/"))
	// Kernel interfaces a tenant has no business with.
	_, err := unix.KeyctlInt(unix.KEYCTL_JOIN_SESSION_KEYRING, 0, 0, 0, 0)
	try("keyctl", err)
	_, _, errno := unix.Syscall(unix.SYS_BPF, 0 /* BPF_MAP_CREATE */, 0, 0)
	try("bpf", errnoOrNil(errno))
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_CPU_CLOCK}
	attr.Size = uint32(unsafe.Sizeof(attr))
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, 0)
	if err == nil {
		unix.Close(fd)
	}
	try("perf_event_open", err)
	var params [120]byte
	r1, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&params[0])), 0)
	if errno == 0 {
		unix.Close(int(r1))
	}
	try("io_uring_setup", errnoOrNil(errno))
	try("mknod", unix.Mknod(filepath.Join(os.Getenv("HOME"), "sda"), unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))))
	try("sethostname", unix.Sethostname([]byte("owned")))
	try("write_etc", writeFile("/etc/ward-escape"))
	try("write_usr", writeFile("/usr/ward-escape"))
	// The neighbour.
	if *pid > 0 {
		try("neighbour_kill0", unix.Kill(*pid, 0))
		_, err := os.Stat("/proc/" + strconv.Itoa(*pid))
		try("neighbour_proc", err)
		try("neighbour_ptrace", errFromString(ptraceAttach(*pid)))
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err == nil {
			f.Close()
		}
		try("open "+p, err)
	}
	if *suid != "" {
		out, err := exec.Command(*suid, "-u").Output()
		try("suid_exec", err)
		if n, perr := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && perr == nil {
			r.SuidEUID = &n
		}
	}
	r.Hostname, _ = os.Hostname()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			r.Processes++
		}
	}
	b, _ := os.ReadFile("/proc/self/oom_score_adj")
	r.OOMScore = string(bytes.TrimSpace(b))
	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	r.NOFILE = lim.Cur
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(st), "\n") {
			if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
				r.Caps = strings.TrimSpace(v)
			}
		}
	}
	return c.done(r)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func errnoOrNil(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func errFromString(s string) error {
	if s == "" {
		return nil
	}
	return stringError(s)
}

type stringError string

func (e stringError) Error() string { return string(e) }

func writeFile(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(p)
}

// cloneUser starts /bin/true in a new user namespace, as unshare -U would.
func cloneUser() error {
	attr, done, err := childAttr()
	if err != nil {
		return err
	}
	defer done()
	attr.Sys = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
	pid, err := syscall.ForkExec("/bin/true", []string{"true"}, attr)
	if err != nil {
		return err
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	return nil
}
