//go:build linux

package seccomp

import (
	"encoding/binary"
	"testing"

	esc "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// verdicts runs the installed program on seccomp_data as the kernel would
// hand it: x/net/bpf's VM loads words big-endian, so each 32-bit field is
// written big-endian at the offset the kernel's little-endian layout puts
// it (args as low word, then high word).
type filterVM struct {
	t  *testing.T
	vm *bpf.VM
}

func newFilterVM(t *testing.T) *filterVM {
	t.Helper()
	raw, err := program()
	if err != nil {
		t.Fatal(err)
	}
	insns := make([]bpf.Instruction, len(raw))
	for i, r := range raw {
		insns[i] = r.Disassemble()
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	return &filterVM{t: t, vm: vm}
}

func (f *filterVM) run(arch uint32, nr int, args ...uint64) uint32 {
	f.t.Helper()
	data := make([]byte, 64)
	binary.BigEndian.PutUint32(data[0:], uint32(nr))
	binary.BigEndian.PutUint32(data[4:], arch)
	for i, a := range args {
		binary.BigEndian.PutUint32(data[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(data[16+8*i+4:], uint32(a>>32))
	}
	v, err := f.vm.Run(data)
	if err != nil {
		f.t.Fatal(err)
	}
	return uint32(v)
}

const (
	retAllow = uint32(esc.ActionAllow)
	retKill  = uint32(esc.ActionKillProcess)
	retEPERM = uint32(esc.ActionErrno) | uint32(unix.EPERM)
)

func TestFilterVerdicts(t *testing.T) {
	f := newFilterVM(t)
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	for _, c := range []struct {
		what string
		arch uint32
		nr   int
		args []uint64
		want uint32
	}{
		{"read", x86, unix.SYS_READ, nil, retAllow},
		{"execve", x86, unix.SYS_EXECVE, nil, retAllow},
		{"clone of a thread", x86, unix.SYS_CLONE, []uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD}, retAllow},
		{"fork", x86, unix.SYS_CLONE, []uint64{uint64(unix.SIGCHLD)}, retAllow},
		{"clone of a user namespace", x86, unix.SYS_CLONE, []uint64{unix.CLONE_NEWUSER | uint64(unix.SIGCHLD)}, retEPERM},
		{"clone of a mount namespace", x86, unix.SYS_CLONE, []uint64{unix.CLONE_NEWNS}, retEPERM},
		{"unshare of the fs", x86, unix.SYS_UNSHARE, []uint64{unix.CLONE_FS}, retAllow},
		{"unshare of a user namespace", x86, unix.SYS_UNSHARE, []uint64{unix.CLONE_NEWUSER}, retEPERM},
		{"unshare of a time namespace", x86, unix.SYS_UNSHARE, []uint64{unix.CLONE_NEWTIME}, retEPERM},
		{"clone3", x86, unix.SYS_CLONE3, nil, uint32(esc.ActionErrno) | uint32(unix.ENOSYS)},
		{"mount", x86, unix.SYS_MOUNT, nil, retEPERM},
		{"open_tree", x86, unix.SYS_OPEN_TREE, nil, retEPERM},
		{"keyctl", x86, unix.SYS_KEYCTL, nil, retEPERM},
		{"bpf", x86, unix.SYS_BPF, nil, retEPERM},
		{"perf_event_open", x86, unix.SYS_PERF_EVENT_OPEN, nil, retEPERM},
		{"io_uring_setup", x86, unix.SYS_IO_URING_SETUP, nil, retEPERM},
		{"open_by_handle_at", x86, unix.SYS_OPEN_BY_HANDLE_AT, nil, retEPERM},
		{"setns", x86, unix.SYS_SETNS, nil, retEPERM},
		{"init_module", x86, unix.SYS_INIT_MODULE, nil, retEPERM},
		{"reboot", x86, unix.SYS_REBOOT, nil, retEPERM},
		{"clock_settime", x86, unix.SYS_CLOCK_SETTIME, nil, retEPERM},
		// The 32-bit ABI has other numbers for everything: a deny list
		// in amd64 numbers would let its mount through.
		{"i386 mount (int 0x80)", unix.AUDIT_ARCH_I386, 21, nil, retKill},
		{"i386 read", unix.AUDIT_ARCH_I386, 3, nil, retKill},
		// x32 numbers are amd64's with bit 30 set.
		{"x32 mount", x86, unix.SYS_MOUNT | 0x40000000, nil, uint32(esc.ActionErrno) | uint32(unix.ENOSYS)},
	} {
		if got := f.run(c.arch, c.nr, c.args...); got != c.want {
			t.Errorf("%s: %#x, want %#x", c.what, got, c.want)
		}
	}
}

// TestProgramLayout: Program is program in the kernel's struct layout.
func TestProgramLayout(t *testing.T) {
	raw, err := program()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Program()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 8*len(raw) {
		t.Fatalf("%d bytes for %d instructions", len(b), len(raw))
	}
	for i, r := range raw {
		got := b[8*i:]
		if binary.LittleEndian.Uint16(got) != r.Op || got[2] != r.Jt || got[3] != r.Jf || binary.LittleEndian.Uint32(got[4:]) != r.K {
			t.Fatalf("instruction %d: % x, want %+v", i, got[:8], r)
		}
	}
}

// TestFilterListsKnownSyscalls: every name in the deny list is one the
// library knows for this architecture (it refuses the policy otherwise,
// which would stop every namespaced start).
func TestFilterListsKnownSyscalls(t *testing.T) {
	if _, err := policy().Assemble(); err != nil {
		t.Fatal(err)
	}
}
