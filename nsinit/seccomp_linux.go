package nsinit

import (
	"encoding/binary"
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errFilter: the program ward-init was given is not whole instructions.
var errFilter = errors.New("seccomp program is not a whole number of instructions")

// loadFilter installs prog (package seccomp's Program, struct
// sock_filter after struct sock_filter) on the calling thread, which
// execs next (no TSYNC: the runtime's other threads end at exec).
func loadFilter(prog []byte) error {
	if len(prog) == 0 || len(prog)%8 != 0 || len(prog)/8 > 0xffff {
		return errFilter
	}
	filter := make([]unix.SockFilter, len(prog)/8)
	for i := range filter {
		b := prog[8*i:]
		filter[i] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return errno
	}
	return nil
}
