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
