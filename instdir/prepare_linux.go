package instdir

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// Prepare fills a new instance directory — made empty, root-owned and mode
// 0700 by the disk quota backend — with logs/stdout.log and
// logs/stderr.log, hands it to uid:gid (no other instance — all share gid —
// can read it), and returns the two log files open for appending. On
// failure the directory is left for the caller to remove with its quota.
//
// Everything is created by root and handed to the instance only at the
// end, directories last: a process of an earlier holder of the uid could
// otherwise plant a symlink in the directory between its chown and the
// opening of a log, and have root open (and chown) any file. For the same
// reason anything but a directory of root's is refused.
func Prepare(dir string, uid, gid int) (stdout, stderr *os.File, err error) {
	defer func() {
		if err != nil {
			if stdout != nil {
				stdout.Close()
			}
			if stderr != nil {
				stderr.Close()
			}
			stdout, stderr = nil, nil
			err = fmt.Errorf("instdir: %w", err)
		}
	}()
	var st unix.Stat_t
	if err = unix.Lstat(dir, &st); err != nil {
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() {
		return nil, nil, fmt.Errorf("%s is not a new directory of ours", dir)
	}
	logs := filepath.Join(dir, logsDir)
	if err = os.Mkdir(logs, 0o700); err != nil {
		return
	}
	if stdout, err = createLog(LogPath(dir, Stdout), uid, gid); err != nil {
		return
	}
	if stderr, err = createLog(LogPath(dir, Stderr), uid, gid); err != nil {
		return
	}
	if err = os.Chown(logs, uid, gid); err != nil {
		return
	}
	if err = os.Chown(dir, uid, gid); err != nil {
		return
	}
	// Whatever made it, the contract is 0700.
	err = os.Chmod(dir, 0o700)
	return
}

func createLog(path string, uid, gid int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Chown(uid, gid); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
