package instdir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// openLogsDir opens <dir>/logs without following a symlink at either
// step: the directory is the instance's, and so is what it holds.
func openLogsDir(dir string) (int, error) {
	dfd, err := unix.Open(dir, dirFlags, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(dfd)
	return unix.Openat(dfd, logsDir, dirFlags, 0)
}

// Rotate rotates log l of the instance directory dir when it is larger
// than limit bytes, keeping keep copies; an instance without the log is an
// error wrapping unix.ENOENT.
//
// The instance writes its logs itself, through O_APPEND descriptors it
// inherited, so its output never depends on the agent being alive. That
// rules out rotating by rename (the instance would keep writing to the old
// file); instead a full log is copied to <log>.1 (older ones shifting up to
// keep) and truncated in place, and the instance's next append lands at
// the new end. A line written between the copy and the truncate is lost:
// the price of not standing between an instance and its output.
//
// The logs directory belongs to the instance, which could swap in symlinks
// to make a root process truncate any file: every step goes through
// descriptors opened with O_NOFOLLOW, and only a regular file owned by uid
// is touched.
func Rotate(dir string, l Log, uid int, limit int64, keep int) error {
	name := string(l)
	// A log under its cap — nearly always — is seen with one stat. The
	// descriptor-safe way below costs three opens and closes, which at
	// 2,000 instances every 2 s took as much CPU as sampling them. The
	// stat may follow a symlink the instance planted in its directory; it
	// only decides whether to look closer, never what is touched.
	var st unix.Stat_t
	if err := unix.Lstat(LogPath(dir, l), &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size <= limit {
		return nil
	}
	lfd, err := openLogsDir(dir)
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

// StderrTail returns the last lines (at most TailLines, from the last
// TailBytes) of the stderr log of instance directory dir, as valid UTF-8;
// "" when there is none to read. It is opened the way Rotate opens a log:
// no symlinks followed, nothing but a regular file of uid.
func StderrTail(dir string, uid int) string {
	lfd, err := openLogsDir(dir)
	if err != nil {
		return ""
	}
	defer unix.Close(lfd)
	fd, err := unix.Openat(lfd, string(Stderr), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != uid || st.Size == 0 {
		return ""
	}
	buf := make([]byte, min(st.Size, TailBytes))
	n, _ := unix.Pread(fd, buf, st.Size-int64(len(buf)))
	return lastLines(buf[:max(n, 0)], TailLines, st.Size > int64(len(buf)))
}
