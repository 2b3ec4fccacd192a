package seccomp

import (
	"encoding/binary"
	"errors"
	"sync"

	esc "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// The filter is a deny list in the spirit of Docker's default profile:
// what a program has no business calling and what breaks out of an
// instance or reaches the host's kernel state is refused with EPERM, the
// rest is allowed. Docker's profile is an allow list; a deny list here
// keeps every program a plain Linux host runs working, and its entries
// are the ones the allow list exists to leave out. The kernel refuses most
// of them to a user without capabilities anyway: the filter is the second
// wall, and the first one for what it does not guard (new user
// namespaces, keyrings, io_uring, bpf and perf for unprivileged users).
//
// The policy is assembled by github.com/elastic/go-seccomp-bpf: pure Go
// (no cgo and no libseccomp, so ward-init stays a static binary), kept by
// Elastic for Beats, with the kernel's syscall tables for amd64, arm64,
// 386 and arm and argument conditions. One thing is added to what it
// assembles (see filter): a process of another audit arch is killed — the
// library lets it through to the policy's default action, which for a
// deny list is "allow", and a 32-bit syscall (int 0x80 on amd64) would
// get past every entry.

// nsFlags are the clone and unshare flags that make a namespace.
const nsFlags = unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET |
	unix.CLONE_NEWIPC | unix.CLONE_NEWUTS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// denied are refused outright (EPERM).
var denied = []string{
	// mounts and the root: the instance's view stays the one it was given
	"mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
	"open_tree", "move_mount", "mount_setattr",
	// other namespaces
	"setns",
	// kernel modules, kexec, reboot, swap
	"init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
	"reboot", "swapon", "swapoff",
	// clocks
	"settimeofday", "clock_settime", "clock_adjtime",
	// keyrings (not namespaced: one per uid across the host)
	"keyctl", "add_key", "request_key",
	// kernel introspection and attack surface
	"bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "kcmp",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"open_by_handle_at", "name_to_handle_at", // open_by_handle_at reaches any file by its handle
	"quotactl", "quotactl_fd", "syslog", "acct", "iopl", "ioperm",
	"uselib", "ustat", "sysfs", "_sysctl", "nfsservctl",
	// NUMA policy of pages the instance does not own
	"mbind", "set_mempolicy", "migrate_pages", "move_pages",
}

// policy is the filter before the arch check.
func policy() *esc.Policy {
	bits := func(arg uint32) []esc.ArgumentConditions {
		return []esc.ArgumentConditions{{{Argument: arg, Operation: esc.BitsSet, Value: nsFlags}}}
	}
	return &esc.Policy{
		DefaultAction: esc.ActionAllow,
		Syscalls: []esc.SyscallGroup{
			{Action: esc.ActionErrno, Names: denied},
			// A new namespace of any kind, above all a user namespace, in
			// which an unprivileged process is root again.
			{Action: esc.ActionErrno, NamesWithCondtions: []esc.NameWithConditions{
				{Name: "unshare", Conditions: bits(0)[0]},
				{Name: "clone", Conditions: bits(0)[0]},
			}},
			// clone3's flags are in memory the filter cannot read: ENOSYS
			// makes libc and the Go runtime fall back to clone, which the
			// rule above sees.
			{Action: esc.ActionErrno | esc.Action(unix.ENOSYS), Names: []string{"clone3"}},
		},
	}
}

// errArch: ward-init was built for an architecture whose audit arch (and
// so whose filter) nobody checked (see arch_*.go).
var errArch = errors.New("no audit arch for this architecture")

// program is the filter as installed: the arch check, then the policy.
func program() ([]bpf.RawInstruction, error) {
	if auditArch == 0 {
		return nil, errArch
	}
	body, err := policy().Assemble()
	if err != nil {
		return nil, err
	}
	// seccomp_data: int nr at 0, u32 arch at 4.
	insns := append([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArch, SkipTrue: 1},
		bpf.RetConstant{Val: uint32(esc.ActionKillProcess)},
	}, body...)
	return bpf.Assemble(insns)
}

var (
	once    sync.Once
	cached  []byte
	errOnce error
)

// Program is the filter in the kernel's layout: struct sock_filter (u16
// code, u8 jt, u8 jf, u32 k) after struct sock_filter, native byte order.
// Assembled once; the slice must not be modified.
func Program() ([]byte, error) {
	once.Do(func() {
		raw, err := program()
		if err != nil {
			errOnce = err
			return
		}
		b := make([]byte, 0, 8*len(raw))
		for _, r := range raw {
			b = binary.NativeEndian.AppendUint16(b, r.Op)
			b = append(b, r.Jt, r.Jf)
			b = binary.NativeEndian.AppendUint32(b, r.K)
		}
		cached = b
	})
	return cached, errOnce
}
