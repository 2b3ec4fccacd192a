package agent

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestFileLimit(t *testing.T) {
	const inf = ^uint64(0) // RLIM_INFINITY
	for _, c := range []struct {
		cur    unix.Rlimit
		pool   int
		nrOpen uint64
		want   unix.Rlimit
		short  bool
	}{
		// A host where the hard limit stops 2,200 instances short of a
		// 3,000-uid pool.
		{unix.Rlimit{Cur: 20000, Max: 20000}, 3000, 1 << 20, unix.Rlimit{Cur: 3000*FilesPerInstance + fileReserve, Max: 3000*FilesPerInstance + fileReserve}, true},
		// systemd's default: a low soft limit under a high hard one.
		{unix.Rlimit{Cur: 1024, Max: 524288}, 1000, 1 << 20, unix.Rlimit{Cur: 1000*FilesPerInstance + fileReserve, Max: 524288}, true},
		// The shipped unit's LimitNOFILE=1048576: enough.
		{unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}, 10000, 1 << 20, unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}, false},
		{unix.Rlimit{Cur: inf, Max: inf}, 10000, 0, unix.Rlimit{Cur: inf, Max: inf}, false},
		// The kernel's ceiling caps what is asked for.
		{unix.Rlimit{Cur: 4096, Max: 4096}, 1 << 20, 1 << 20, unix.Rlimit{Cur: 1 << 20, Max: 1 << 20}, true},
		// fs.nr_open unreadable: no cap.
		{unix.Rlimit{Cur: 4096, Max: 4096}, 1000, 0, unix.Rlimit{Cur: 1000*FilesPerInstance + fileReserve, Max: 1000*FilesPerInstance + fileReserve}, true},
	} {
		got, short := fileLimit(c.cur, c.pool, c.nrOpen)
		if got != c.want || short != c.short {
			t.Errorf("fileLimit(%+v, %d, %d) = %+v, %v; want %+v, %v", c.cur, c.pool, c.nrOpen, got, short, c.want, c.short)
		}
	}
}
