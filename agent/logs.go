package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
)

// logCheckInterval is how often instance logs are checked against
// logs.max_bytes. A log can overshoot the cap by what the instance writes in
// one interval; the disk quota bounds it whatever happens.
const logCheckInterval = 2 * time.Second

// The instance writes its logs itself, through O_APPEND descriptors it
// inherited, so its output never depends on the agent being alive. That
// rules out rotating by rename (the instance would keep writing to the old
// file); instead a full log is copied to <log>.1 (older ones shifting up to
// logs.keep) and truncated in place, and the instance's next append lands at
// the new end. A line written between the copy and the truncate is lost: the
// price of not standing between an instance and its output.
func (a *Agent) rotateLogs() {
	for _, in := range a.all() {
		in.mu.Lock()
		running := in.rec.State == api.StateRunning
		dir, uid := in.rec.Dir, in.rec.UID
		in.mu.Unlock()
		if !running {
			continue
		}
		for _, name := range []string{"stdout.log", "stderr.log"} {
			if err := rotate(dir, name, uid, a.cfg.Logs.MaxBytes, a.cfg.Logs.Keep); err != nil && !errors.Is(err, unix.ENOENT) {
				a.log.Warn("log rotation", "id", in.id, "file", name, "err", err)
			}
		}
	}
}

// rotate rotates <dir>/logs/<name> when it is larger than limit; see
// rotateLogs. The logs directory belongs to the instance, which could swap
// in symlinks to make a root process truncate any file: every step goes
// through descriptors opened with O_NOFOLLOW, and only a regular file owned
// by the instance's uid is touched.
func rotate(dir, name string, uid int, limit int64, keep int) error {
	// A log under its cap — nearly always — is seen with one stat. The
	// descriptor-safe way below costs three opens and closes, which at
	// 2,000 instances every 2 s took as much CPU as sampling them. The
	// stat may follow a symlink the instance planted in its directory; it
	// only decides whether to look closer, never what is touched.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "logs", name), &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size <= limit {
		return nil
	}
	const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	dfd, err := unix.Open(dir, dirFlags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	lfd, err := unix.Openat(dfd, "logs", dirFlags, 0)
	if err != nil {
		return err
	}
	defer unix.Close(lfd)
	fd, err := unix.Openat(lfd, name, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	src := os.NewFile(uintptr(fd), name)
	defer src.Close()
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != uid {
		return fmt.Errorf("%s is not a regular file owned by uid %d: left alone", name, uid)
	}
	if st.Size <= limit {
		return nil
	}
	if keep > 0 {
		for i := keep - 1; i >= 1; i-- {
			unix.Renameat(lfd, name+"."+strconv.Itoa(i), lfd, name+"."+strconv.Itoa(i+1))
		}
		// Whatever the instance put at .1 — a FIFO whose open would block
		// forever, a hard link to a root file — is unlinked, and a fresh
		// file made in its place.
		if err := unix.Unlinkat(lfd, name+".1", 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return err
		}
		dfd, err := unix.Openat(lfd, name+".1", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		dst := os.NewFile(uintptr(dfd), name+".1")
		// At most the last 4×limit bytes — more than a log overshoots by
		// between checks — so that a log grown sparse to a terabyte with
		// ftruncate does not make root copy a terabyte of zeros.
		off := max(0, st.Size-4*limit)
		_, err = io.Copy(dst, io.NewSectionReader(src, off, st.Size-off))
		if err == nil {
			err = dst.Chown(uid, int(st.Gid))
		}
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return unix.Ftruncate(fd, 0)
}
