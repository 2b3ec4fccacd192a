package agent

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/spawn"
)

// endFacts is what the cgroup knew about an instance as it ended. It is read
// before the group is removed: afterwards the kernel's counters are gone.
type endFacts struct {
	known    bool   // the group could be read
	oomKills uint64 // tasks the kernel killed for the memory limit
	reported uint64 // of those, the ones already reported (policy notify)
	peak     uint64 // bytes; 0 when the kernel keeps no peak
	limit    int64  // bytes, the memory limit in force
}

// facts reads the OOM counter and memory peak of in's group. Caller holds
// in.opMu.
func (a *Agent) facts(in *instance) endFacts {
	in.mu.Lock()
	g, limit, reported := in.group, *in.rec.Limits.MemoryBytes, in.rec.OOMKills
	in.mu.Unlock()
	if g == nil {
		return endFacts{limit: limit, reported: reported}
	}
	st, err := g.Stats()
	if err != nil {
		return endFacts{limit: limit, reported: reported}
	}
	return endFacts{known: true, oomKills: st.OOMKills, reported: reported, peak: st.MemoryPeak, limit: limit}
}

// classifyEnd names the terminal state of an instance whose main process
// ended on its own. The group is new with the instance, so an OOM kill on
// its counter beyond those already reported (policy notify) is this
// instance's and unreported. The end is oom_killed when the agent killed
// the instance for memory; or, with such a fresh kill, under policy kill
// (whatever the main process died of: its children's OOM ends it), or when
// the main process died by SIGKILL — the kernel's OOM killer — or in a way
// nobody saw (it was re-adopted). Under notify, a main process that outlived
// a child's OOM and then exited is an ordinary exit or crash.
func classifyEnd(e spawn.Exit, f endFacts, killedForOOM, policyKill bool) (api.State, string) {
	fresh := f.oomKills > f.reported
	if killedForOOM || fresh && (policyKill || !e.Known || e.Signal == unix.SIGKILL) {
		return api.StateOOMKilled, oomReason(f)
	}
	return classifyExit(e)
}

// oomReason says in words why an instance was killed for memory.
func oomReason(f endFacts) string {
	kills := "1 OOM kill"
	if f.oomKills != 1 {
		kills = fmt.Sprintf("%d OOM kills", f.oomKills)
	}
	if f.peak > 0 {
		return fmt.Sprintf("out of memory: %d byte limit, peak %d bytes, %s", f.limit, f.peak, kills)
	}
	return fmt.Sprintf("out of memory: %d byte limit, %s", f.limit, kills)
}

// stderrTailBytes and stderrTailLines bound what of an instance's stderr is
// kept with its end: enough for a stack trace's last lines, small enough for
// an event.
const (
	stderrTailBytes = 2048
	stderrTailLines = 10
)

// stderrTail returns the last lines of the instance's stderr log. The logs
// directory belongs to the instance, so the file is opened the way rotate
// opens it: no symlinks followed, nothing but a regular file of its uid.
func stderrTail(dir string, uid int) string {
	const dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	dfd, err := unix.Open(dir, dirFlags, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(dfd)
	lfd, err := unix.Openat(dfd, "logs", dirFlags, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(lfd)
	fd, err := unix.Openat(lfd, "stderr.log", unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != uid || st.Size == 0 {
		return ""
	}
	buf := make([]byte, min(st.Size, stderrTailBytes))
	n, _ := unix.Pread(fd, buf, st.Size-int64(len(buf)))
	return lastLines(buf[:max(n, 0)], stderrTailLines, st.Size > int64(len(buf)))
}

// lastLines returns up to n trailing lines of b as valid UTF-8. When b is
// the end of a longer file (cut), its first line is a fragment and dropped.
func lastLines(b []byte, n int, cut bool) string {
	if cut {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	s := string(bytes.Join(lines, []byte("\n")))
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}
