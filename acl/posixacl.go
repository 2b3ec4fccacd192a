package acl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
)

// ErrMalformedACL reports xattr bytes that are not an access ACL the kernel
// would hand out or accept.
var ErrMalformedACL = errors.New("malformed POSIX ACL")

// POSIX ACL entry tags, as in the system.posix_acl_access xattr.
const (
	TagUserObj  uint16 = 0x01
	TagUser     uint16 = 0x02
	TagGroupObj uint16 = 0x04
	TagGroup    uint16 = 0x08
	TagMask     uint16 = 0x10
	TagOther    uint16 = 0x20
)

// UndefinedID is the id of the entries that name no user or group
// (USER_OBJ, GROUP_OBJ, MASK, OTHER).
const UndefinedID uint32 = 0xffffffff

const (
	xattrVersion = 2
	headerLen    = 4
	entryLen     = 8
	permBits     = 0o7 // r w x
)

// Entry is one ACL entry. Perm holds the r (4), w (2) and x (1) bits.
type Entry struct {
	Tag  uint16
	Perm uint16
	ID   uint32
}

// ACL is an access ACL in the kernel's order: by tag, then by id.
type ACL []Entry

// ParseACL decodes a system.posix_acl_access value. It accepts exactly what
// the kernel returns: version 2; entries sorted by tag and, for named
// entries, by strictly increasing id; exactly one USER_OBJ, GROUP_OBJ and
// OTHER; at most one MASK, required when there is a named entry; only rwx
// permission bits; UndefinedID on every entry that names nobody. Anything
// else is ErrMalformedACL, so that Encode(ParseACL(b)) == b whenever ParseACL
// succeeds.
func ParseACL(b []byte) (ACL, error) {
	if len(b) < headerLen || (len(b)-headerLen)%entryLen != 0 {
		return nil, fmt.Errorf("%w: length %d is not 4 + 8n", ErrMalformedACL, len(b))
	}
	if v := binary.LittleEndian.Uint32(b); v != xattrVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformedACL, v, xattrVersion)
	}
	a := make(ACL, 0, (len(b)-headerLen)/entryLen)
	for e := b[headerLen:]; len(e) > 0; e = e[entryLen:] {
		a = append(a, Entry{
			Tag:  binary.LittleEndian.Uint16(e),
			Perm: binary.LittleEndian.Uint16(e[2:]),
			ID:   binary.LittleEndian.Uint32(e[4:]),
		})
	}
	if err := a.Valid(); err != nil {
		return nil, err
	}
	return a, nil
}

// Valid checks a against the rules ParseACL enforces.
func (a ACL) Valid() error {
	var seen uint16 // tags met so far
	named := false
	for i, e := range a {
		if e.Perm&^permBits != 0 {
			return fmt.Errorf("%w: entry %d: permission bits %#o beyond rwx", ErrMalformedACL, i, e.Perm)
		}
		switch e.Tag {
		case TagUserObj, TagGroupObj, TagMask, TagOther:
			if seen&e.Tag != 0 {
				return fmt.Errorf("%w: entry %d: second entry with tag %#x", ErrMalformedACL, i, e.Tag)
			}
			if e.ID != UndefinedID {
				return fmt.Errorf("%w: entry %d: tag %#x carries id %d", ErrMalformedACL, i, e.Tag, e.ID)
			}
		case TagUser, TagGroup:
			named = true
			if i > 0 && a[i-1].Tag == e.Tag && a[i-1].ID >= e.ID {
				return fmt.Errorf("%w: entry %d: id %d not above the previous %d", ErrMalformedACL, i, e.ID, a[i-1].ID)
			}
		default:
			return fmt.Errorf("%w: entry %d: unknown tag %#x", ErrMalformedACL, i, e.Tag)
		}
		if i > 0 && a[i-1].Tag > e.Tag {
			return fmt.Errorf("%w: entry %d: tag %#x after %#x", ErrMalformedACL, i, e.Tag, a[i-1].Tag)
		}
		seen |= e.Tag
	}
	for _, t := range []uint16{TagUserObj, TagGroupObj, TagOther} {
		if seen&t == 0 {
			return fmt.Errorf("%w: no entry with tag %#x", ErrMalformedACL, t)
		}
	}
	if named && seen&TagMask == 0 {
		return fmt.Errorf("%w: named entries without a mask", ErrMalformedACL)
	}
	return nil
}

// Encode returns the xattr value of a.
func (a ACL) Encode() []byte {
	b := make([]byte, headerLen, headerLen+entryLen*len(a))
	binary.LittleEndian.PutUint32(b, xattrVersion)
	for _, e := range a {
		b = binary.LittleEndian.AppendUint16(b, e.Tag)
		b = binary.LittleEndian.AppendUint16(b, e.Perm)
		b = binary.LittleEndian.AppendUint32(b, e.ID)
	}
	return b
}

// ACLFromMode returns the minimal ACL equivalent to mode's permission bits:
// what a file without an ACL xattr is checked against.
func ACLFromMode(mode fs.FileMode) ACL {
	p := uint16(mode.Perm())
	return ACL{
		{TagUserObj, p >> 6 & permBits, UndefinedID},
		{TagGroupObj, p >> 3 & permBits, UndefinedID},
		{TagOther, p & permBits, UndefinedID},
	}
}

// WithGroupDenied returns a copy of a (which must be Valid) in which the named group gid has no
// permissions, and whether that differs from a. Every other entry is kept.
//
// The entry only takes from gid: a process matching several group-class
// entries gets the union of what they grant, so an empty entry grants
// nothing to anyone, and the one thing it changes is that a process in gid
// (and in no group with an entry) no longer falls through to OTHER. A named
// entry needs a MASK; when a has none, the new mask is GROUP_OBJ's
// permissions, so the owning group keeps exactly its access and the file's
// mode bits — whose group bits show the mask once an ACL exists — stay
// what they were. An existing mask is left alone: lowering it could only
// take from other entries.
func (a ACL) WithGroupDenied(gid uint32) (ACL, bool) {
	out := make(ACL, 0, len(a)+2)
	var groupObj uint16
	hasMask, done, changed := false, false, false
	for _, e := range a {
		// Valid ACLs end with OTHER, so both insertions happen by then.
		if !done && (e.Tag > TagGroup || (e.Tag == TagGroup && e.ID > gid)) {
			out = append(out, Entry{TagGroup, 0, gid})
			done, changed = true, true
		}
		if e.Tag == TagOther && !hasMask {
			out = append(out, Entry{TagMask, groupObj, UndefinedID})
			hasMask, changed = true, true
		}
		switch e.Tag {
		case TagGroupObj:
			groupObj = e.Perm
		case TagMask:
			hasMask = true
		case TagGroup:
			if e.ID == gid {
				done = true
				if e.Perm != 0 {
					e.Perm, changed = 0, true
				}
			}
		}
		out = append(out, e)
	}
	return out, changed
}

// DeniesGroup reports whether a has a named-group entry for gid with no
// permissions.
func (a ACL) DeniesGroup(gid uint32) bool {
	for _, e := range a {
		if e.Tag == TagGroup && e.ID == gid {
			return e.Perm == 0
		}
	}
	return false
}
