package oom

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// addV1 binds g's eventfds (OOM and, if asked, one per pressure level) and
// reads the counter afterwards. On error the caller drops g, which closes
// whatever was set up: closing a bound eventfd unbinds it.
func (w *Watcher) addV1(g *group, p *PressureConfig) error {
	var err error
	if g.counter, err = openFile(g.dir, "memory.oom_control", unix.O_RDONLY); err != nil {
		return err
	}
	oom, err := w.bindV1(g, srcV1OOM, "")
	if err != nil {
		return err
	}
	if err := writeEventControl(g.dir, strconv.Itoa(oom.fd)+" "+strconv.Itoa(g.counter)); err != nil {
		return err
	}
	if p != nil {
		for _, level := range p.V1Levels {
			if err := w.bindPressureV1(g, level); err != nil {
				return err
			}
		}
	}
	b, err := w.read(g.counter)
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(g.dir, "memory.oom_control"), err)
	}
	kills, ok := keyed(b, "oom_kill")
	if !ok {
		return fmt.Errorf("%s: no oom_kill counter", filepath.Join(g.dir, "memory.oom_control"))
	}
	return w.baseline(g, kills)
}

// bindV1 makes an eventfd source of g, in the epoll set.
func (w *Watcher) bindV1(g *group, kind srcKind, level string) (*source, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	s, tok := w.addSource(g, kind, efd, level)
	if err := w.epollAdd(efd, tok, unix.EPOLLIN); err != nil {
		return nil, err
	}
	return s, nil
}

// bindPressureV1 registers level in "local" mode (see the package
// documentation for why local).
func (w *Watcher) bindPressureV1(g *group, level string) error {
	s, err := w.bindV1(g, srcV1Pressure, level)
	if err != nil {
		return err
	}
	pfd, err := openFile(g.dir, "memory.pressure_level", unix.O_RDONLY)
	if err != nil {
		return err
	}
	// The registration holds the group itself; the file is not needed after.
	defer unix.Close(pfd)
	return writeEventControl(g.dir, strconv.Itoa(s.fd)+" "+strconv.Itoa(pfd)+" "+level+",local")
}

// checkV1 reads g's oom_kill counter and reports a rise, or reports g
// removed when the counter file is gone. It returns false if g was dropped.
func (w *Watcher) checkV1(g *group, now time.Time) bool {
	b, err := w.read(g.counter)
	if err != nil {
		if gone(err) {
			w.removed(g, now)
			return false
		}
		return true // a later step or wakeup reads again
	}
	if kills, ok := keyed(b, "oom_kill"); ok && kills > g.reported {
		g.reported = kills
		w.q.push(Event{Key: g.key, Kind: OOM, OOMKills: kills, Time: now})
	}
	return true
}

// openFile opens a file of the group at dir.
func openFile(dir, name string, flags int) (int, error) {
	path := filepath.Join(dir, name)
	for {
		fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: path, Err: err}
		}
		return fd, nil
	}
}

// writeEventControl binds an eventfd through the group's cgroup.event_control.
func writeEventControl(dir, line string) error {
	fd, err := openFile(dir, "cgroup.event_control", unix.O_WRONLY)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(line)); err != nil {
		return &os.PathError{Op: "write", Path: filepath.Join(dir, "cgroup.event_control"), Err: err}
	}
	return nil
}
