package oom

import (
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
	wdDir
)

// addV2 sets up g's inotify watches and PSI triggers, then reads its
// counters. On error the caller drops g, which undoes what was set up.
func (w *Watcher) addV2(g *group, p *PressureConfig) error {
	// IN_MASK_CREATE refuses an inode this instance already watches (the
	// same group under another path): the kernel would otherwise hand back
	// the other group's watch descriptor.
	for _, wt := range []struct {
		path string
		mask uint32
	}{
		{filepath.Join(g.dir, "memory.events"), unix.IN_MODIFY},
		{filepath.Join(g.dir, "cgroup.events"), unix.IN_MODIFY},
		{g.dir, unix.IN_DELETE_SELF | unix.IN_ONLYDIR},
	} {
		wd, err := unix.InotifyAddWatch(w.ino, wt.path, wt.mask|unix.IN_MASK_CREATE)
		if err == unix.EEXIST {
			return fmt.Errorf("inotify %s: %w", wt.path, ErrExist)
		}
		if err != nil {
			return &os.PathError{Op: "inotify_add_watch", Path: wt.path, Err: err}
		}
		g.wds = append(g.wds, int32(wd))
		w.wds[int32(wd)] = g
	}
	if p != nil {
		for _, trig := range p.V2Triggers {
			if err := w.bindPSI(g, trig); err != nil {
				return err
			}
		}
	}
	b, err := w.readFile(filepath.Join(g.dir, "memory.events"))
	if err != nil {
		return err
	}
	kills, ok := keyed(b, "oom_kill")
	if !ok {
		return fmt.Errorf("%s: no oom_kill counter", filepath.Join(g.dir, "memory.events"))
	}
	g.groupKills, _ = keyed(b, "oom_group_kill")
	if b, err = w.readFile(filepath.Join(g.dir, "cgroup.events")); err != nil {
		return err
	}
	pop, ok := keyed(b, "populated")
	if !ok {
		return fmt.Errorf("%s: no populated field", filepath.Join(g.dir, "cgroup.events"))
	}
	g.populated = pop != 0
	return w.baseline(g, kills)
}

// bindPSI opens memory.pressure with one trigger and adds it to the epoll
// set for EPOLLPRI.
func (w *Watcher) bindPSI(g *group, trigger string) error {
	kind, err := parseTrigger(trigger)
	if err != nil {
		return err
	}
	fd, err := openFile(g.dir, "memory.pressure", unix.O_RDWR|unix.O_NONBLOCK)
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
			off += unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
			if mask&unix.IN_Q_OVERFLOW != 0 {
				overflow = true
				continue
			}
			g, ok := w.wds[wd]
			if !ok {
				continue // a watch already dropped
			}
			switch {
			case mask&(unix.IN_DELETE_SELF|unix.IN_IGNORED) != 0:
				w.removed(g, now)
			case wd == g.wds[wdMemoryEvents]:
				w.checkV2(g, now)
			case wd == g.wds[wdCgroupEvents]:
				w.checkPopulated(g, now)
			}
		}
	}
	if overflow {
		// Notifications were lost: read every group's files instead.
		for _, g := range w.groups {
			if w.checkV2(g, now) {
				w.checkPopulated(g, now)
			}
		}
	}
}

// checkV2 reads memory.events and reports a rise of oom_kill or
// oom_group_kill, or reports g removed. It returns false if g was dropped.
func (w *Watcher) checkV2(g *group, now time.Time) bool {
	b, err := w.readFile(filepath.Join(g.dir, "memory.events"))
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

// checkPopulated reads cgroup.events and reports the group becoming empty.
func (w *Watcher) checkPopulated(g *group, now time.Time) {
	b, err := w.readFile(filepath.Join(g.dir, "cgroup.events"))
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
	if g.populated && pop == 0 {
		w.q.push(Event{Key: g.key, Kind: Empty, Time: now})
	}
	g.populated = pop != 0
}
