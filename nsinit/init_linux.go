package nsinit

import (
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// statusFD is the agent's status pipe (see the package doc).
const statusFD = 3

// Main is ward-init. It never returns: it execs the program or exits.
// Call it first thing in main (or TestMain, see Invoked).
func Main() {
	// The bounding set, no_new_privs and a seccomp filter belong to a
	// thread, and execve keeps those of the thread that calls it:
	// everything runs on this one, which also execs. (Locked here, not in
	// an init function, which would pin the main goroutine of every
	// program importing the package, the agent included.)
	runtime.LockOSThread()
	if _, err := unix.FcntlInt(statusFD, unix.F_SETFD, unix.FD_CLOEXEC); err != nil {
		os.Stderr.WriteString("ward-init: fd 3 is not a status pipe; ward-init is run by the ward agent only\n")
		os.Exit(126)
	}
	s, err := Parse(os.Args[1:])
	if err != nil {
		exit(&Failure{Step: StepUsage, Detail: err.Error()})
	}
	exit(run(s))
}

// exit reports f to the agent and ends ward-init.
func exit(f *Failure) {
	unix.Write(statusFD, f.Encode())
	os.Exit(127)
}

func failure(step Step, detail string, err error) *Failure {
	f := &Failure{Step: step, Detail: detail}
	if errno, ok := err.(syscall.Errno); ok {
		f.Errno = errno
	} else if err != nil {
		f.Detail += ": " + err.Error()
	}
	return f
}

// run does everything between the clone and the program, in an order
// where each step still has the privilege it needs: mounts and hostname
// as root, then the limits, then the identity, then the working directory
// (so that the pool user's rights decide it, as they decide everything
// after), and the filter last, since it forbids mount.
func run(s *Spec) *Failure {
	unix.Umask(0o022)
	if s.Namespaces {
		if f := buildView(s); f != nil {
			return f
		}
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return failure(StepHostname, "sethostname "+s.Hostname, err)
		}
	}
	// syscall.Setrlimit, not unix.Setrlimit: it tells the runtime not to
	// put the agent's limit back at exec.
	lim := syscall.Rlimit{Cur: s.NOFILE, Max: s.NOFILE}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return failure(StepLimits, "RLIMIT_NOFILE "+strconv.FormatUint(s.NOFILE, 10), err)
	}
	// Raising towards 0 is always allowed; lowering to 0 from a positive
	// value only down to the minimum a privileged writer set, which is the
	// agent's own at most.
	if err := writeProc("/proc/self/oom_score_adj", "0"); err != nil {
		return failure(StepLimits, "oom_score_adj", err)
	}
	if s.Namespaces {
		if f := dropBounding(); f != nil {
			return f
		}
	}
	// The identity is this thread's only: the program inherits the exec'ing
	// thread's, and the runtime's other threads, which run none of this
	// code, end at exec. (syscall.Setresuid would signal every thread to
	// follow, a good part of this stage's time.)
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return failure(StepCredentials, "setgroups", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(s.GID), uintptr(s.GID), uintptr(s.GID)); e != 0 {
		return failure(StepCredentials, "setresgid "+strconv.FormatUint(uint64(s.GID), 10), e)
	}
	// From uid 0 to a non-zero uid in all three ids, without keep-caps,
	// the kernel clears the permitted, effective and ambient sets.
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(s.UID), uintptr(s.UID), uintptr(s.UID)); e != 0 {
		return failure(StepCredentials, "setresuid "+strconv.FormatUint(uint64(s.UID), 10), e)
	}
	if s.Namespaces {
		// What setresuid left (the inheritable set, empty unless the
		// agent's is not) goes too: every set empty.
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var none [2]unix.CapUserData
		if err := unix.Capset(&hdr, &none[0]); err != nil {
			return failure(StepCredentials, "capset", err)
		}
	}
	if err := unix.Chdir(s.Dir); err != nil {
		return failure(StepChdir, s.Dir, err)
	}
	if s.Namespaces {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return failure(StepSeccomp, "no_new_privs", err)
		}
		if err := loadFilter(s.Filter); err != nil {
			return failure(StepSeccomp, "load filter", err)
		}
	}
	err := syscall.Exec(s.Path, s.Argv, s.Env)
	return failure(StepExec, s.Path, err)
}

// writeProc writes v to a /proc file, without os.File's machinery.
func writeProc(path, v string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(v))
	return err
}

// unwrapErrno returns the errno inside an *os.PathError, or err.
func unwrapErrno(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// dropBounding empties the capability bounding set, so that nothing the
// program execs can gain a capability (no_new_privs forbids it too; this
// is the second wall), and the ambient set.
func dropBounding() *Failure {
	last := unix.CAP_LAST_CAP
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			last = n
		}
	}
	for c := 0; c <= last; c++ {
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && err != unix.EINVAL {
			return failure(StepCredentials, "drop capability "+strconv.Itoa(c)+" from the bounding set", err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return failure(StepCredentials, "clear ambient capabilities", err)
	}
	return nil
}

// buildView makes the instance's filesystem in its own mount namespace:
// the host's tree read-only, without set-uid and devices; ward's paths
// and isolation.hide covered by empty read-only tmpfs; a /dev of its
// own; one tmpfs of TmpBytes for /tmp, /var/tmp and /dev/shm; /proc of
// its PID namespace; its own cgroup (v2) or none; and its directory, the
// only writable host path, at the same place as on the host.
func buildView(s *Spec) *Failure {
	mf := func(detail string, err error) *Failure { return failure(StepMounts, detail, err) }
	// Nothing below may propagate to the host's namespace (whose root is
	// shared on a systemd host).
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return mf("make / private", err)
	}
	// The directory is taken before anything covers it or makes it
	// read-only: a detached bind mount of it.
	wfd, err := unix.OpenTree(unix.AT_FDCWD, s.Writable, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return mf("open_tree "+s.Writable, err)
	}
	defer unix.Close(wfd)
	ro := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, ro); err != nil {
		return mf("make / read-only", err)
	}
	if f := mountDev(); f != nil {
		return f
	}
	if f := mountTmp(s.TmpBytes); f != nil {
		return f
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, "/dev", 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return mf("make /dev read-only", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return mf("mount /proc", err)
	}
	// The host's cgroup tree would show every neighbour's name and usage.
	// On v2 the instance's cgroup namespace roots a fresh mount at its
	// own group; v1 hierarchies get nothing.
	// The host's mount there goes first: on a unified host it is a cgroup2
	// mount already, and the kernel refuses the same one on top of itself.
	if err := unix.Unmount("/sys/fs/cgroup", unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return mf("detach the host's /sys/fs/cgroup", err)
	}
	cgFlags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if s.Cgroup2 {
		err = unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", cgFlags, "")
	} else {
		err = unix.Mount("tmpfs", "/sys/fs/cgroup", "tmpfs", cgFlags, "size=4k,mode=755")
	}
	if err != nil && err != unix.ENOENT {
		return mf("mount /sys/fs/cgroup", err)
	}
	// After the mounts above: a hidden path under /tmp or /var/tmp is
	// already gone with the host's, and hiding must not cover them.
	hidden, f := hide(s.Hide)
	if f != nil {
		return f
	}
	// Parents made here (in a tmpfs that hides ward's state) must let the
	// pool user through to its directory, as the host's do.
	if err := os.MkdirAll(s.Writable, 0o711); err != nil {
		return mf("make the mount point "+s.Writable, unwrapErrno(err))
	}
	rw := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Attr_clr: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(wfd, "", unix.AT_EMPTY_PATH, rw); err != nil {
		return mf("set the flags of "+s.Writable, err)
	}
	if err := unix.MoveMount(wfd, "", unix.AT_FDCWD, s.Writable, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return mf("mount "+s.Writable, err)
	}
	for _, d := range hidden {
		if err := unix.MountSetattr(unix.AT_FDCWD, d, 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return mf("make "+d+" read-only", err)
		}
	}
	return nil
}

// hide covers each path: a directory by an empty tmpfs (left writable
// for the mount points still to be made under it, see buildView), a file
// by the host's /dev/null, which the read-only tree's nodev makes refuse
// every open. A path nested in one already hidden, or absent, is skipped.
// It returns the directories covered.
func hide(paths []string) ([]string, *Failure) {
	ps := append([]string(nil), paths...)
	sort.Strings(ps)
	var dirs []string
	var done []string
	for _, p := range ps {
		if covered(p, done) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			if err == unix.ENOENT || err == unix.ENOTDIR {
				continue
			}
			return nil, failure(StepMounts, "stat "+p, err)
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := unix.Mount("tmpfs", p, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
				return nil, failure(StepMounts, "hide "+p, err)
			}
			dirs = append(dirs, p)
		} else if err := unix.Mount("/dev/null", p, "", unix.MS_BIND, ""); err != nil {
			return nil, failure(StepMounts, "hide "+p, err)
		}
		done = append(done, p)
	}
	return dirs, nil
}

// covered reports whether p is one of done or under one.
func covered(p string, done []string) bool {
	for _, d := range done {
		if p == d || strings.HasPrefix(p, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

// devices are the character devices of an instance's /dev, as in every
// container runtime's minimal /dev.
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// mountDev gives the instance a /dev of its own: the host's would show
// its disks, its kernel log and its IPC namespace's queues.
func mountDev() *Failure {
	mf := func(detail string, err error) *Failure { return failure(StepMounts, detail, err) }
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return mf("mount /dev", err)
	}
	for _, d := range devices {
		if err := unix.Mknod("/dev/"+d.name, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return mf("mknod /dev/"+d.name, err)
		}
		// mknod takes the umask off the mode.
		if err := unix.Chmod("/dev/"+d.name, 0o666); err != nil {
			return mf("chmod /dev/"+d.name, err)
		}
	}
	for _, l := range [][2]string{
		{"/proc/self/fd", "/dev/fd"}, {"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"}, {"/proc/self/fd/2", "/dev/stderr"},
		{"pts/ptmx", "/dev/ptmx"},
	} {
		if err := unix.Symlink(l[0], l[1]); err != nil {
			return mf("symlink "+l[1], err)
		}
	}
	for _, d := range []struct {
		name string
		mode uint32
	}{{"/dev/pts", 0o755}, {"/dev/shm", 0o1777}, {"/dev/mqueue", 0o1777}} {
		if err := unix.Mkdir(d.name, d.mode); err != nil {
			return mf("mkdir "+d.name, err)
		}
		if err := unix.Chmod(d.name, d.mode); err != nil {
			return mf("chmod "+d.name, err)
		}
	}
	if err := unix.Mount("devpts", "/dev/pts", "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"); err != nil {
		return mf("mount /dev/pts", err)
	}
	// The instance's IPC namespace's own queues, for whoever lists them.
	if err := unix.Mount("mqueue", "/dev/mqueue", "mqueue", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return mf("mount /dev/mqueue", err)
	}
	return nil
}

// mountTmp makes one tmpfs of size bytes and puts three directories of it
// at /tmp, /var/tmp and /dev/shm, so the three share one bound. Its pages
// are charged to the memory cgroup of the process that writes them, the
// instance's.
//
// The tmpfs is made at /proc, which the instance's own proc covers next,
// and detached from there once its directories are bound where they go:
// a kernel before 6.15 clones no tree of a mount that is not attached, so
// fsmount's detached mount would not do.
func mountTmp(size int64) *Failure {
	mf := func(detail string, err error) *Failure { return failure(StepMounts, detail, err) }
	const stage = "/proc"
	if err := unix.Mount("tmpfs", stage, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=700,size="+strconv.FormatInt(size, 10)); err != nil {
		return mf("mount the tmpfs", err)
	}
	for _, t := range [][2]string{{"tmp", "/tmp"}, {"var-tmp", "/var/tmp"}, {"shm", "/dev/shm"}} {
		src := stage + "/" + t[0]
		if err := unix.Mkdir(src, 0o1777); err != nil {
			return mf("mkdir "+t[0]+" in the tmpfs", err)
		}
		if err := unix.Chmod(src, 0o1777); err != nil {
			return mf("chmod "+t[0]+" in the tmpfs", err)
		}
		err := unix.Mount(src, t[1], "", unix.MS_BIND, "")
		if err == unix.ENOENT && t[1] == "/var/tmp" {
			continue // a host without /var/tmp: nothing to cover
		}
		if err != nil {
			return mf("mount "+t[1], err)
		}
		if err := unix.MountSetattr(unix.AT_FDCWD, t[1], 0, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV, Attr_clr: unix.MOUNT_ATTR_RDONLY}); err != nil {
			return mf("set the flags of "+t[1], err)
		}
	}
	if err := unix.Unmount(stage, unix.MNT_DETACH); err != nil {
		return mf("detach the tmpfs from "+stage, err)
	}
	return nil
}
