package accounts

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckPasswd(t *testing.T) {
	p := NewUIDPool(20000, 29999, "ward", 20000)
	ok := "root:x:0:0:root:/root:/bin/bash\n" +
		"alice:x:1000:1000::/home/alice:/bin/bash\n" +
		"ward-20000:x:20000:20000::/nonexistent:/usr/sbin/nologin\n" +
		"bob:x:30000:30000::/home/bob:/bin/sh\n"
	if err := p.checkPasswd(strings.NewReader(ok), "passwd"); err != nil {
		t.Fatalf("clean passwd: %v", err)
	}
	bad := ok + "mallory:x:25000:100::/home/m:/bin/sh\n" +
		"ward-20001:x:20001:100::/:/bin/sh\n" // pool name but foreign gid
	err := p.checkPasswd(strings.NewReader(bad), "passwd")
	if !errors.Is(err, ErrPoolOverlap) {
		t.Fatalf("overlap not reported: %v", err)
	}
	for _, want := range []string{"mallory (uid 25000", "ward-20001 (uid 20001", "users.uid_min"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestIsLeased(t *testing.T) {
	p := NewUIDPool(20000, 20009, "ward", 20000)
	uid, err := p.Acquire("a")
	if err != nil {
		t.Fatal(err)
	}
	if !p.IsLeased(uint32(uid)) {
		t.Errorf("uid %d leased to a: IsLeased false", uid)
	}
	for _, free := range []uint32{uint32(uid) + 1, 0, 1 << 31, 1<<32 - 1} {
		if p.IsLeased(free) {
			t.Errorf("uid %d: IsLeased true", free)
		}
	}
	p.Release(uid, "a")
	if p.IsLeased(uint32(uid)) {
		t.Errorf("uid %d released: IsLeased true", uid)
	}
}
