package oom

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Indexes into group.wds.
const (
	wdMemoryEvents = iota
	wdCgroupEvents
)

// addV2 opens g's directory, sets up its inotify watches and PSI triggers,
// then reads its counters. On error the caller drops g, which undoes what
// was set up.
func (w *Watcher) addV2(g *group, p *PressureConfig) error {
	fd, err := unix.Open(g.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: g.dir, Err: err}
	}
	g.dirfd = fd
	// IN_MASK_CREATE refuses an inode this instance already watches (the
	// same group under another path): the kernel would otherwise hand back
	// the other group's watch descriptor.
	for _, name := range []string{"memory.events", "cgroup.events"} {
		path := filepath.Join(g.dir, name)
		wd, err := unix.InotifyAddWatch(w.ino, path, unix.IN_MODIFY|unix.IN_MASK_CREATE)
		if err == unix.EEXIST {
			return fmt.Errorf("inotify %s: %w", path, ErrExist)
		}
		if err != nil {
			return &os.PathError{Op: "inotify_add_watch", Path: path, Err: err}
		}
		g.wds = append(g.wds, int32(wd))
		w.wds[int32(wd)] = g
	}
	if err := w.watchParent(g); err != nil {
		return err
	}
	if p != nil {
		for _, trig := range p.V2Triggers {
			if err := w.bindPSI(g, trig); err != nil {
				return err
			}
		}
	}
	b, err := w.readAt(g, "memory.events")
	if err != nil {
		return err
	}
	kills, ok := keyed(b, "oom_kill")
	if !ok {
		return fmt.Errorf("%s: no oom_kill counter", filepath.Join(g.dir, "memory.events"))
	}
	g.groupKills, _ = keyed(b, "oom_group_kill")
	if b, err = w.readAt(g, "cgroup.events"); err != nil {
		return err
	}
	pop, ok := keyed(b, "populated")
	if !ok {
		return fmt.Errorf("%s: no populated field", filepath.Join(g.dir, "cgroup.events"))
	}
	g.populated = pop != 0
	g.frozen, _ = keyed(b, "frozen")
	return w.baseline(g, kills)
}

// watchParent adds g to the watch on its parent directory, shared by all
// groups there: the kernel reports a group's removal only as IN_DELETE of
// its name in the parent (cgroupfs sends no IN_DELETE_SELF or IN_IGNORED
// to watches on a removed group or its files).
func (w *Watcher) watchParent(g *group) error {
	parent, name := filepath.Dir(g.dir), filepath.Base(g.dir)
	wd, err := unix.InotifyAddWatch(w.ino, parent, unix.IN_DELETE|unix.IN_ONLYDIR)
	if err != nil {
		return &os.PathError{Op: "inotify_add_watch", Path: parent, Err: err}
	}
	children := w.parents[int32(wd)]
	if children == nil {
		children = map[string]*group{}
		w.parents[int32(wd)] = children
	}
	children[name] = g
	g.parent = int32(wd)
	return nil
}

// unwatchParent takes g off its parent's watch, removing the watch with
// its last group.
func (w *Watcher) unwatchParent(g *group) {
	children := w.parents[g.parent]
	if name := filepath.Base(g.dir); children[name] == g {
		delete(children, name)
	}
	if len(children) == 0 {
		unix.InotifyRmWatch(w.ino, uint32(g.parent))
		delete(w.parents, g.parent)
	}
	g.parent = 0
}

// openAt opens a file of g's directory (v2).
func openAt(g *group, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(g.dirfd, name, flags|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: filepath.Join(g.dir, name), Err: err}
		}
		return fd, nil
	}
}

// bindPSI opens memory.pressure with one trigger and adds it to the epoll
// set for EPOLLPRI.
func (w *Watcher) bindPSI(g *group, trigger string) error {
	kind, err := parseTrigger(trigger)
	if err != nil {
		return err
	}
	fd, err := openAt(g, "memory.pressure", unix.O_RDWR|unix.O_NONBLOCK)
	if err != nil {
		return err
	}
	_, tok := w.addSource(g, srcPSI, fd, kind)
	// The kernel replaces the last byte written with a NUL: send one.
	if _, err := unix.Write(fd, append([]byte(trigger), 0)); err != nil {
		return &os.PathError{Op: "write trigger", Path: filepath.Join(g.dir, "memory.pressure"), Err: err}
	}
	if err := w.epollAdd(fd, tok, unix.EPOLLPRI); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(g.dir, "memory.pressure"), err)
	}
	return nil
}

// readInotify handles everything queued on the inotify descriptor.
func (w *Watcher) readInotify(buf []byte, now time.Time) {
	overflow := false
	for {
		n, err := unix.Read(w.ino, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+nameLen]
			off += unix.SizeofInotifyEvent + nameLen
			if mask&unix.IN_Q_OVERFLOW != 0 {
				overflow = true
				continue
			}
			if children, ok := w.parents[wd]; ok {
				if mask&unix.IN_DELETE != 0 {
					if i := bytes.IndexByte(name, 0); i >= 0 {
						name = name[:i]
					}
					if g, ok := children[string(name)]; ok {
						w.checkGone(g, now)
					}
				}
				continue
			}
			g, ok := w.wds[wd]
			if !ok {
				continue // a watch already dropped
			}
			switch {
			case mask&unix.IN_IGNORED != 0:
				// The file is gone. Never from cgroupfs, which keeps
				// a removed group's files to itself; from another
				// filesystem holding such files, deleting them.
				w.removed(g, now)
			case wd == g.wds[wdMemoryEvents]:
				w.checkV2(g, now)
			case wd == g.wds[wdCgroupEvents]:
				w.checkCgroupEvents(g, now, true)
			}
		}
	}
	if overflow {
		// Notifications were lost: read every group's files instead (a
		// removed group has none left to read).
		for _, g := range w.groups {
			w.checkCgroupEvents(g, now, false)
		}
	}
}

// checkGone reports g removed if its directory has gone: an IN_DELETE of
// its name may also be a late one for an older group at the same path.
func (w *Watcher) checkGone(g *group, now time.Time) {
	var st unix.Stat_t
	err := unix.Fstatat(g.dirfd, "cgroup.events", &st, unix.AT_SYMLINK_NOFOLLOW)
	if err != nil && gone(err) {
		w.removed(g, now)
	}
}

// checkV2 reads memory.events and reports a rise of oom_kill or
// oom_group_kill, or reports g removed. It returns false if g was dropped.
func (w *Watcher) checkV2(g *group, now time.Time) bool {
	b, err := w.readAt(g, "memory.events")
	if err != nil {
		if gone(err) {
			w.removed(g, now)
			return false
		}
		return true
	}
	kills, _ := keyed(b, "oom_kill")
	groupKills, _ := keyed(b, "oom_group_kill")
	if kills > g.reported || groupKills > g.groupKills {
		g.reported = max(g.reported, kills)
		g.groupKills = groupKills
		w.q.push(Event{Key: g.key, Kind: OOM, OOMKills: kills, Time: now})
	}
	return true
}

// checkCgroupEvents handles a change of cgroup.events: it reads
// memory.events first, so that a kill that emptied the group is reported
// before the Empty (the OOM killer raises oom_kill before it sends
// SIGKILL, so the counter is final by the time the group is empty, while
// the kernel may still hold back the kill's own memory.events
// notification — and drops it if the group is removed meanwhile). Then it
// reports the group becoming empty. notified says a notification of
// cgroup.events prompted the read.
func (w *Watcher) checkCgroupEvents(g *group, now time.Time, notified bool) {
	if !w.checkV2(g, now) {
		return
	}
	b, err := w.readAt(g, "cgroup.events")
	if err != nil {
		if gone(err) {
			w.removed(g, now)
		}
		return
	}
	pop, ok := keyed(b, "populated")
	if !ok {
		return
	}
	frozen, _ := keyed(b, "frozen")
	if pop != 0 {
		g.populated, g.emptySent = true, false
		g.frozen = frozen
		return
	}
	// cgroup.events changes only with populated or frozen. Populated
	// going 1 → 0 is an exit; a notified change to neither is a process
	// that came and went between two reads.
	if !g.emptySent && (g.populated || notified && frozen == g.frozen) {
		g.emptySent = true
		w.q.push(Event{Key: g.key, Kind: Empty, Time: now})
	}
	g.populated = false
	g.frozen = frozen
}
