package acl

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

const aclXattr = "system.posix_acl_access"

// xattrMax bounds an xattr value (XATTR_SIZE_MAX).
const xattrMax = 64 << 10

// DeniesGroup reports whether path's access ACL (following symlinks)
// carries a named-group entry for gid with no permissions: the entry
// ApplyDeny writes.
func DeniesGroup(path string, gid uint32) (bool, error) {
	b, ok, err := getACL(func(buf []byte) (int, error) { return unix.Getxattr(path, aclXattr, buf) })
	if err != nil {
		return false, fmt.Errorf("acl: %s: %w", path, err)
	}
	if !ok {
		return false, nil
	}
	a, err := ParseACL(b)
	if err != nil {
		return false, fmt.Errorf("acl: %s: %w", path, err)
	}
	return a.DeniesGroup(gid), nil
}

// fgetACL returns fd's access ACL xattr verbatim; ok is false when the file
// has none.
func fgetACL(fd int) (b []byte, ok bool, err error) {
	return getACL(func(buf []byte) (int, error) { return unix.Fgetxattr(fd, aclXattr, buf) })
}

func getACL(get func([]byte) (int, error)) ([]byte, bool, error) {
	// Most ACLs are a handful of entries; ERANGE (it grew between the size
	// query and the read) retries with the size the kernel now reports.
	buf := make([]byte, 256)
	for {
		n, err := get(buf)
		switch {
		case err == nil:
			return buf[:n], true, nil
		case errors.Is(err, unix.ENODATA):
			return nil, false, nil
		case !errors.Is(err, unix.ERANGE):
			return nil, false, err
		}
		if n, err = get(nil); err != nil {
			if errors.Is(err, unix.ENODATA) {
				return nil, false, nil
			}
			return nil, false, err
		}
		if n > xattrMax {
			return nil, false, fmt.Errorf("%s of %d bytes: %w", aclXattr, n, unix.E2BIG)
		}
		buf = make([]byte, n)
	}
}

// fsetACL writes b as fd's access ACL, or removes the ACL when absent; a
// removal that finds none is not an error.
func fsetACL(fd int, b []byte, absent bool) error {
	if absent {
		if err := unix.Fremovexattr(fd, aclXattr); err != nil && !errors.Is(err, unix.ENODATA) {
			return err
		}
		return nil
	}
	return unix.Fsetxattr(fd, aclXattr, b, 0)
}
