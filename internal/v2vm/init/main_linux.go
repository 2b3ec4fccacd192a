// Command init is PID 1 of the cgroup v2 test VM that scripts/v2vm boots.
//
// It mounts what the tests expect of a host (proc, sysfs, devtmpfs, cgroup2
// at /sys/fs/cgroup, tmpfs for /tmp, /var/tmp, /var/lib, /run and /root),
// enables the memory, cpu, pids and (when offered) io controllers, brings up
// loopback, and then runs every test binary that /v2vm/tests lists, one
// after the other, with its -test.v output on the console. It ends with a
// PASS/FAIL line per package and the sentinel line V2VM-EXIT=<n> (n: the
// number of packages that failed), and powers the machine off.
//
// The host reads only that sentinel: qemu exits 0 however the tests went,
// and a run that never prints it (a hang, a kernel panic, this program
// dying) must count as a failure.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	manifest = "/v2vm/tests" // lines: <name> <source dir> [<-test.run pattern>]
	binDir   = "/v2vm/bin"   // <name>.test
	srcDir   = "/v2vm/src"   // <source dir>/testdata, the tests' working dir

	// setupFailed is the sentinel value when the VM could not even be made
	// ready for the tests.
	setupFailed = 125
)

func main() {
	// The first line the host waits for: a boot that never prints it stalled
	// in the kernel and is worth one retry; anything after it is not.
	fmt.Println("V2VM-INIT")
	if err := setup(); err != nil {
		fmt.Println("v2vm: setup:", err)
		finish(setupFailed)
	}
	tests, err := readManifest(manifest)
	if err != nil {
		fmt.Println("v2vm:", err)
		finish(setupFailed)
	}
	var summary []string
	failed := 0
	for _, tc := range tests {
		ok, d := run(tc)
		verdict := "PASS"
		if !ok {
			verdict = "FAIL"
			failed++
		}
		summary = append(summary, fmt.Sprintf("V2VM-SUMMARY %s %s %.1fs", verdict, tc.name, d.Seconds()))
	}
	fmt.Println()
	for _, s := range summary {
		fmt.Println(s)
	}
	finish(failed)
}

// finish prints the sentinel and powers off. It never returns: if PID 1
// returned, the kernel would panic, and the host would count that as a
// failure even after a passing sentinel.
func finish(code int) {
	fmt.Printf("V2VM-EXIT=%d\n", code)
	os.Stdout.Sync()
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("v2vm: power off:", err)
	}
	for {
		time.Sleep(time.Hour)
	}
}

type testCase struct {
	name, dir, run string
}

func readManifest(path string) ([]testCase, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var tests []testCase
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch len(fields) {
		case 0:
			continue
		case 2, 3:
		default:
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		tc := testCase{name: fields[0], dir: fields[1]}
		if len(fields) == 3 {
			tc.run = fields[2]
		}
		tests = append(tests, tc)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(tests) == 0 {
		return nil, fmt.Errorf("%s lists no tests", path)
	}
	return tests, nil
}

// run runs one package's test binary to its end and says whether it passed.
func run(tc testCase) (bool, time.Duration) {
	args := []string{tc.name + ".test", "-test.v", "-test.count=1", "-test.timeout=" + env("V2VM_TEST_TIMEOUT", "5m")}
	if tc.run != "" {
		args = append(args, "-test.run="+tc.run)
	}
	fmt.Printf("\n=== V2VM PACKAGE %s (%s)\n", tc.name, strings.Join(args[1:], " "))
	dir := filepath.Join(srcDir, tc.dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Println("v2vm:", err)
		return false, 0
	}
	begin := time.Now()
	p, err := os.StartProcess(filepath.Join(binDir, tc.name+".test"), args, &os.ProcAttr{
		Dir:   dir,
		Env:   testEnv(),
		Files: []*os.File{nil, os.Stdout, os.Stdout},
	})
	if err != nil {
		fmt.Println("v2vm:", err)
		return false, 0
	}
	code := reapUntil(p.Pid)
	d := time.Since(begin)
	fmt.Printf("=== V2VM PACKAGE %s exit %d after %.1fs\n", tc.name, code, d.Seconds())
	return code == 0, d
}

// reapUntil reaps children — the test binary and every orphan the tests
// leave, which PID 1 inherits — until pid has exited, and returns its exit
// code (128+signal when killed).
func reapUntil(pid int) int {
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			fmt.Println("v2vm: wait:", err)
			return -1
		case wpid != pid:
			continue
		case ws.Signaled():
			return 128 + int(ws.Signal())
		default:
			return ws.ExitStatus()
		}
	}
}

// testEnv is the test binaries' environment: a plain root shell's, plus
// the WARD_* settings the host put on the kernel command line (the kernel
// hands unknown name=value parameters to init as its environment).
func testEnv() []string {
	e := []string{
		"PATH=/usr/bin:/bin:/usr/sbin:/sbin",
		"HOME=/root",
		"TMPDIR=/tmp",
		"USER=root",
		"LANG=C",
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WARD_") {
			e = append(e, kv)
		}
	}
	return e
}

func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func setup() error {
	mounts := []struct {
		fstype, target, data string
		flags                uintptr
	}{
		{"proc", "/proc", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"sysfs", "/sys", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"devtmpfs", "/dev", "mode=0755", unix.MS_NOSUID},
		{"cgroup2", "/sys/fs/cgroup", "", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		{"tmpfs", "/tmp", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/var/tmp", "mode=1777", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/var/lib", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/run", "mode=0755", unix.MS_NOSUID | unix.MS_NODEV},
		{"tmpfs", "/root", "mode=0700", unix.MS_NOSUID | unix.MS_NODEV},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// Kernel messages (OOM reports above all) would interleave with the
	// tests' output; keep only the emergencies — a panic still shows.
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("3"), 0); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte("v2vm")); err != nil {
		return err
	}
	if err := loopbackUp(); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := enableControllers("/sys/fs/cgroup"); err != nil {
		return err
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	ctl, _ := os.ReadFile("/sys/fs/cgroup/cgroup.subtree_control")
	fmt.Printf("v2vm: kernel %s, cgroup2 subtree_control: %s\n", unix.ByteSliceToString(u.Release[:]), strings.TrimSpace(string(ctl)))
	return nil
}

// enableControllers hands memory, cpu and pids (required) and io (when the
// kernel offers it) down from the cgroup2 root, as a host's init system
// would.
func enableControllers(root string) error {
	b, err := os.ReadFile(filepath.Join(root, "cgroup.controllers"))
	if err != nil {
		return err
	}
	avail := strings.Fields(string(b))
	has := func(c string) bool {
		for _, a := range avail {
			if a == c {
				return true
			}
		}
		return false
	}
	var add []string
	for _, c := range []string{"memory", "cpu", "pids", "io"} {
		switch {
		case has(c):
			add = append(add, "+"+c)
		case c != "io":
			return fmt.Errorf("cgroup2 controller %s missing (have %q)", c, avail)
		}
	}
	file := filepath.Join(root, "cgroup.subtree_control")
	if err := os.WriteFile(file, []byte(strings.Join(add, " ")), 0); err != nil {
		return fmt.Errorf("enable %v: %w", add, err)
	}
	return nil
}

// loopbackUp sets lo up: the agent's socket needs no network, but tests
// that dial an unreachable bus expect "connection refused", not "network
// unreachable".
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
