package quota

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/config"
)

func newPlatform(kind config.QuotaBackend, path string) (Backend, error) {
	switch kind {
	case config.QuotaBtrfs:
		return &btrfsBackend{path: path}, nil
	case config.QuotaProject:
		return &vfsBackend{kind: kind, qtype: prjQuota, path: path}, nil
	case config.QuotaUser:
		return &vfsBackend{kind: kind, qtype: usrQuota, path: path}, nil
	}
	return nil, fmt.Errorf("quota: kind %q: unknown", kind)
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

// openDir opens a directory without following a final symlink: the
// directories handled here sit inside trees a tenant writes to.
func openDir(path string) (int, error) {
	return unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

func openDirAt(dirfd int, name string) (int, error) {
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// probePrefix names the throwaway directories Verify makes in the quota
// path; a leftover from an interrupted probe is removed by the next one.
const probePrefix = ".ward-quota-probe-"

func probeDir(path string) string {
	var b [6]byte
	rand.Read(b[:])
	return filepath.Join(path, fmt.Sprintf("%s%d-%s", probePrefix, os.Getpid(), hex.EncodeToString(b[:])))
}

// probeOwnerGone reports whether the process that made the probe dir is
// no longer alive (its pid is in the name).
func probeOwnerGone(dir string) bool {
	rest := strings.TrimPrefix(filepath.Base(dir), probePrefix)
	pid, err := strconv.Atoi(rest[:max(strings.IndexByte(rest, '-'), 0)])
	if err != nil || pid <= 0 {
		return true
	}
	return pid != os.Getpid() && errors.Is(unix.Kill(pid, 0), unix.ESRCH)
}

func notEnforced(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotEnforced}, args...)...)
}
