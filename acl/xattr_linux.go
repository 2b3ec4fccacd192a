package acl

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// POSIX ACL xattr layout (system.posix_acl_access): a little-endian u32
// version (2), then 8-byte entries {u16 tag, u16 perm, u32 id}.
const (
	aclXattr   = "system.posix_acl_access"
	aclVersion = 2
	tagGroup   = 0x08
)

// DeniesGroup reports whether path's access ACL carries a named-group entry
// for gid with no permissions: the entry `ward setup` writes.
func DeniesGroup(path string, gid uint32) (bool, error) {
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(path, aclXattr, buf)
	if errors.Is(err, unix.ENODATA) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("acl: %s: %w", path, err)
	}
	b := buf[:n]
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != aclVersion || (len(b)-4)%8 != 0 {
		return false, fmt.Errorf("acl: %s: malformed %s", path, aclXattr)
	}
	for e := b[4:]; len(e) >= 8; e = e[8:] {
		tag, perm, id := binary.LittleEndian.Uint16(e), binary.LittleEndian.Uint16(e[2:]), binary.LittleEndian.Uint32(e[4:])
		if tag == tagGroup && id == gid {
			return perm == 0, nil
		}
	}
	return false, nil
}
