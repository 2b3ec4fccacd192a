package acl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"slices"
	"testing"
)

// enc builds xattr bytes by hand, independently of Encode.
func enc(entries ...[3]uint32) []byte {
	b := []byte{2, 0, 0, 0}
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

const u = 0xffffffff

// Fixtures. fixNamed is what the kernel returns for
// user::rwx user:1000:r-- group::r-x group:50:rw- mask::rwx other::r--
// (checked against the kernel in TestKernelAgreesWithCodec).
var (
	fixMinimal = []byte{
		0x02, 0x00, 0x00, 0x00,
		0x01, 0x00, 0x07, 0x00, 0xff, 0xff, 0xff, 0xff, // user::rwx
		0x04, 0x00, 0x05, 0x00, 0xff, 0xff, 0xff, 0xff, // group::r-x
		0x20, 0x00, 0x05, 0x00, 0xff, 0xff, 0xff, 0xff, // other::r-x
	}
	fixNamed = []byte{
		0x02, 0x00, 0x00, 0x00,
		0x01, 0x00, 0x07, 0x00, 0xff, 0xff, 0xff, 0xff, // user::rwx
		0x02, 0x00, 0x04, 0x00, 0xe8, 0x03, 0x00, 0x00, // user:1000:r--
		0x04, 0x00, 0x05, 0x00, 0xff, 0xff, 0xff, 0xff, // group::r-x
		0x08, 0x00, 0x06, 0x00, 0x32, 0x00, 0x00, 0x00, // group:50:rw-
		0x10, 0x00, 0x07, 0x00, 0xff, 0xff, 0xff, 0xff, // mask::rwx
		0x20, 0x00, 0x04, 0x00, 0xff, 0xff, 0xff, 0xff, // other::r--
	}
)

func TestParseACLFixtures(t *testing.T) {
	a, err := ParseACL(fixNamed)
	if err != nil {
		t.Fatal(err)
	}
	want := ACL{{TagUserObj, 7, u}, {TagUser, 4, 1000}, {TagGroupObj, 5, u}, {TagGroup, 6, 50}, {TagMask, 7, u}, {TagOther, 4, u}}
	if !slices.Equal(a, want) {
		t.Fatalf("parsed %v, want %v", a, want)
	}
	if !bytes.Equal(a.Encode(), fixNamed) {
		t.Fatalf("encode: % x", a.Encode())
	}
	m, err := ParseACL(fixMinimal)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m, ACLFromMode(0o755)) || !bytes.Equal(ACLFromMode(0o755).Encode(), fixMinimal) {
		t.Fatalf("minimal ACL of 0755: %v", m)
	}
}

func TestParseACLRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":           nil,
		"header only":     {2, 0, 0, 0},
		"version 1":       append([]byte{1, 0, 0, 0}, fixMinimal[4:]...),
		"truncated entry": fixMinimal[:len(fixMinimal)-1],
		"unknown tag":     enc([3]uint32{1, 7, u}, [3]uint32{4, 5, u}, [3]uint32{0x40, 0, u}, [3]uint32{0x20, 5, u}),
		"perm beyond rwx": enc([3]uint32{1, 8, u}, [3]uint32{4, 5, u}, [3]uint32{0x20, 5, u}),
		"unsorted tags":   enc([3]uint32{4, 5, u}, [3]uint32{1, 7, u}, [3]uint32{0x20, 5, u}),
		"unsorted ids":    enc([3]uint32{1, 7, u}, [3]uint32{2, 4, 9}, [3]uint32{2, 4, 3}, [3]uint32{4, 5, u}, [3]uint32{0x10, 7, u}, [3]uint32{0x20, 5, u}),
		"duplicate id":    enc([3]uint32{1, 7, u}, [3]uint32{8, 4, 9}, [3]uint32{8, 4, 9}, [3]uint32{4, 5, u}, [3]uint32{0x10, 7, u}, [3]uint32{0x20, 5, u}),
		"two user_obj":    enc([3]uint32{1, 7, u}, [3]uint32{1, 7, u}, [3]uint32{4, 5, u}, [3]uint32{0x20, 5, u}),
		"no other":        enc([3]uint32{1, 7, u}, [3]uint32{4, 5, u}),
		"no group_obj":    enc([3]uint32{1, 7, u}, [3]uint32{0x20, 5, u}),
		"named, no mask":  enc([3]uint32{1, 7, u}, [3]uint32{4, 5, u}, [3]uint32{8, 0, 9}, [3]uint32{0x20, 5, u}),
		"id on user_obj":  enc([3]uint32{1, 7, 0}, [3]uint32{4, 5, u}, [3]uint32{0x20, 5, u}),
	} {
		if _, err := ParseACL(b); !errors.Is(err, ErrMalformedACL) {
			t.Errorf("%s: got %v, want ErrMalformedACL", name, err)
		}
	}
}

func TestWithGroupDenied(t *testing.T) {
	const gid = 23000
	for _, tc := range []struct {
		name    string
		in      ACL
		want    ACL
		changed bool
	}{{
		// The mask a new named entry needs is group_obj's permissions, so
		// the mode's group bits (the mask, once there is an ACL) stay r-x.
		name:    "minimal",
		in:      ACLFromMode(0o4751),
		want:    ACL{{TagUserObj, 7, u}, {TagGroupObj, 5, u}, {TagGroup, 0, gid}, {TagMask, 5, u}, {TagOther, 1, u}},
		changed: true,
	}, {
		name:    "named entries and a mask: kept, mask untouched",
		in:      mustParse(t, fixNamed),
		want:    ACL{{TagUserObj, 7, u}, {TagUser, 4, 1000}, {TagGroupObj, 5, u}, {TagGroup, 6, 50}, {TagGroup, 0, gid}, {TagMask, 7, u}, {TagOther, 4, u}},
		changed: true,
	}, {
		name:    "entry for gid with rwx: emptied, mask untouched",
		in:      ACL{{TagUserObj, 7, u}, {TagGroupObj, 0, u}, {TagGroup, 7, gid}, {TagMask, 7, u}, {TagOther, 0, u}},
		want:    ACL{{TagUserObj, 7, u}, {TagGroupObj, 0, u}, {TagGroup, 0, gid}, {TagMask, 7, u}, {TagOther, 0, u}},
		changed: true,
	}, {
		name:    "inserted in id order",
		in:      ACL{{TagUserObj, 7, u}, {TagGroupObj, 5, u}, {TagGroup, 1, 10}, {TagGroup, 2, 30000}, {TagMask, 7, u}, {TagOther, 5, u}},
		want:    ACL{{TagUserObj, 7, u}, {TagGroupObj, 5, u}, {TagGroup, 1, 10}, {TagGroup, 0, gid}, {TagGroup, 2, 30000}, {TagMask, 7, u}, {TagOther, 5, u}},
		changed: true,
	}, {
		name:    "a mask without named entries",
		in:      ACL{{TagUserObj, 6, u}, {TagGroupObj, 6, u}, {TagMask, 4, u}, {TagOther, 4, u}},
		want:    ACL{{TagUserObj, 6, u}, {TagGroupObj, 6, u}, {TagGroup, 0, gid}, {TagMask, 4, u}, {TagOther, 4, u}},
		changed: true,
	}, {
		name: "already denied",
		in:   ACL{{TagUserObj, 7, u}, {TagGroupObj, 5, u}, {TagGroup, 0, gid}, {TagMask, 5, u}, {TagOther, 5, u}},
		want: ACL{{TagUserObj, 7, u}, {TagGroupObj, 5, u}, {TagGroup, 0, gid}, {TagMask, 5, u}, {TagOther, 5, u}},
	}} {
		got, changed := tc.in.WithGroupDenied(gid)
		if !slices.Equal(got, tc.want) || changed != tc.changed {
			t.Errorf("%s:\n got %v changed=%v\nwant %v changed=%v", tc.name, got, changed, tc.want, tc.changed)
		}
		if err := got.Valid(); err != nil {
			t.Errorf("%s: result invalid: %v", tc.name, err)
		}
		if !got.DeniesGroup(gid) {
			t.Errorf("%s: result does not deny", tc.name)
		}
		if tc.in.DeniesGroup(gid) == tc.changed {
			t.Errorf("%s: input DeniesGroup=%v but changed=%v", tc.name, tc.in.DeniesGroup(gid), tc.changed)
		}
	}
}

// TestWithGroupDeniedKeepsAccess checks the property the entry exists
// for, over every minimal ACL and a set of named ones: the effective
// permissions of everyone (owner, owning group, named users and groups,
// others) are unchanged, and a process whose only group is gid gets none.
func TestWithGroupDeniedKeepsAccess(t *testing.T) {
	const gid, owner, ownerGroup = 23000, 0, 0
	var acls []ACL
	for m := fs.FileMode(0); m <= 0o777; m++ {
		acls = append(acls, ACLFromMode(m))
	}
	acls = append(acls, mustParse(t, fixNamed),
		ACL{{TagUserObj, 7, u}, {TagGroupObj, 1, u}, {TagGroup, 7, gid}, {TagMask, 7, u}, {TagOther, 5, u}})
	type who struct {
		uid    uint32
		groups []uint32
	}
	probes := []who{{owner, nil}, {1000, nil}, {2000, []uint32{ownerGroup}}, {2000, []uint32{50}}, {2000, []uint32{7}}}
	for _, a := range acls {
		d, _ := a.WithGroupDenied(gid)
		for _, p := range probes {
			if slices.Contains(p.groups, gid) {
				continue // a member of the group being denied
			}
			if before, after := access(a, p.uid, p.groups), access(d, p.uid, p.groups); before != after {
				t.Errorf("%v: uid %d groups %v: %o before, %o after", a, p.uid, p.groups, before, after)
			}
		}
		if got := access(d, 2000, []uint32{gid}); got != 0 {
			t.Errorf("%v: the denied group still gets %o", d, got)
		}
		if mask(d) != groupClass(a) {
			t.Errorf("%v: mode group bits would become %o, were %o", a, mask(d), groupClass(a))
		}
	}
}

// access is the kernel's permission check (posix_acl_permission) for a
// file owned by uid 0, gid 0: the bits a process gets.
func access(a ACL, uid uint32, groups []uint32) uint16 {
	m := uint16(7)
	for _, e := range a {
		if e.Tag == TagMask {
			m = e.Perm
		}
	}
	found, granted := false, uint16(0)
	for _, e := range a {
		switch e.Tag {
		case TagUserObj:
			if uid == 0 {
				return e.Perm
			}
		case TagUser:
			if e.ID == uid {
				return e.Perm & m
			}
		case TagGroupObj:
			if slices.Contains(groups, 0) {
				found, granted = true, granted|e.Perm&m
			}
		case TagGroup:
			if slices.Contains(groups, e.ID) {
				found, granted = true, granted|e.Perm&m
			}
		case TagOther:
			if found {
				return granted
			}
			return e.Perm
		}
	}
	return 0
}

// mask is what the mode's group bits show: the mask, or group_obj.
func mask(a ACL) uint16 {
	for _, e := range a {
		if e.Tag == TagMask {
			return e.Perm
		}
	}
	return groupClass(a)
}

func groupClass(a ACL) uint16 {
	g := uint16(0)
	for _, e := range a {
		switch e.Tag {
		case TagMask:
			return e.Perm
		case TagGroupObj:
			g = e.Perm
		}
	}
	return g
}

func mustParse(t testing.TB, b []byte) ACL {
	t.Helper()
	a, err := ParseACL(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func FuzzACLXattr(f *testing.F) {
	f.Add(fixMinimal)
	f.Add(fixNamed)
	f.Add(ACLFromMode(0o4751).Encode())
	d, _ := mustParse(f, fixNamed).WithGroupDenied(23000)
	f.Add(d.Encode())
	f.Add([]byte{2, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseACL(b)
		if err != nil {
			if !errors.Is(err, ErrMalformedACL) {
				t.Fatalf("error %v is not ErrMalformedACL", err)
			}
			return
		}
		if got := a.Encode(); !bytes.Equal(got, b) {
			t.Fatalf("round trip:\n in % x\nout % x", b, got)
		}
		// Whatever parses can be denied, and the result is valid and
		// parses back to itself.
		gid := uint32(len(b)) * 977
		d, _ := a.WithGroupDenied(gid)
		if err := d.Valid(); err != nil {
			t.Fatalf("WithGroupDenied(%v) = %v: %v", a, d, err)
		}
		if !d.DeniesGroup(gid) {
			t.Fatalf("WithGroupDenied(%v) = %v does not deny %d", a, d, gid)
		}
		again, err := ParseACL(d.Encode())
		if err != nil || !slices.Equal(again, d) {
			t.Fatalf("re-parse of %v: %v %v", d, again, err)
		}
	})
}
