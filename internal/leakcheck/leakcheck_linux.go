package leakcheck

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hostward/ward/cgroup"
	"github.com/hostward/ward/config"
	"github.com/hostward/ward/internal/cgtest"
)

// V1Controllers are the hierarchies ward creates groups in on cgroup v1.
var V1Controllers = cgroup.V1Controllers()

// Find lists leaks: groups under the parent, instance dirs, records still
// holding a uid or port, and live (non-zombie) processes running as a pool
// uid. live names instance ids that are expected to exist; their group,
// dir, record and processes are not leaks.
func Find(cfg *config.Config, live map[string]bool) []string {
	var leaks []string
	// The parent's directory in every v1 hierarchy, or its one directory
	// under the cgroup2 mount.
	for _, dir := range cgtest.Dirs(cfg.Cgroup.Parent) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() && !live[idOfGroup(e.Name())] {
				leaks = append(leaks, "cgroup "+filepath.Join(dir, e.Name()))
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(cfg.StateDir, "instances"))
	for _, e := range ents {
		if !live[e.Name()] {
			leaks = append(leaks, "instance dir "+e.Name())
		}
	}
	liveUIDs := map[int]bool{}
	recDir := filepath.Join(cfg.StateDir, "records")
	ents, _ = os.ReadDir(recDir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(recDir, e.Name()))
		if err != nil {
			continue
		}
		var r struct {
			Spec     struct{ ID string }
			State    string
			UID      int
			Port     int
			Released bool
		}
		switch err := json.Unmarshal(b, &r); {
		case err != nil:
			leaks = append(leaks, fmt.Sprintf("record %s unreadable: %v", e.Name(), err))
		case live[r.Spec.ID]:
			liveUIDs[r.UID] = true
		case !r.Released:
			leaks = append(leaks, fmt.Sprintf("record %s in state %s holds uid %d port %d", r.Spec.ID, r.State, r.UID, r.Port))
		}
	}
	for _, p := range PoolProcesses(cfg.Users.UIDMin, cfg.Users.UIDMax) {
		if !liveUIDs[p.UID] {
			leaks = append(leaks, fmt.Sprintf("process %d runs as pool uid %d", p.PID, p.UID))
		}
	}
	// A namespaced instance's mounts live in its own namespace only: one
	// under ward's directories in the host's namespace means ward-init's
	// view propagated out, whoever is alive.
	for _, m := range hostMounts() {
		for _, d := range []string{cfg.StateDir, cfg.InstancesDir()} {
			if m == d || strings.HasPrefix(m, d+"/") {
				leaks = append(leaks, "host mount "+m)
			}
		}
	}
	return leaks
}

// hostMounts lists the mount points of this process's mount namespace.
func hostMounts() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes of space, tab, newline
// and backslash.
func unescapeMount(s string) string {
	for _, r := range [][2]string{{`\040`, " "}, {`\011`, "\t"}, {`\012`, "\n"}, {`\134`, `\`}} {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}

// idOfGroup returns the id part of a "<name>-<index>-<id>" group name. Ids
// may contain '-', names too; the index is the first all-digit element
// after the name, which is ambiguous in general, so the id is matched as a
// suffix by the callers' live set instead.
func idOfGroup(group string) string {
	parts := strings.Split(group, "-")
	for i := 1; i < len(parts)-1; i++ {
		if _, err := strconv.Atoi(parts[i]); err == nil {
			return strings.Join(parts[i+1:], "-")
		}
	}
	return group
}

// Process is a process running as a pool uid.
type Process struct{ PID, UID int }

// PoolProcesses lists live processes whose real uid is in [min, max].
// Zombies are left out: they hold no resources, and an orphan's zombie is
// its new parent's (pid 1's) to reap.
func PoolProcesses(min, max int) []Process {
	var out []Process
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		uid, live := ProcUID(pid)
		if !live {
			continue
		}
		if uid >= min && uid <= max {
			out = append(out, Process{PID: pid, UID: uid})
		}
	}
	return out
}

// Check fails t with every leak still present after a short grace (releases
// run right after an exit, asynchronously).
func Check(t testing.TB, cfg *config.Config, live map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(cgtest.Timeout(5 * time.Second))
	for {
		leaks := Find(cfg, live)
		if len(leaks) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, l := range leaks {
				t.Error("leak: " + l)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RemoveParent removes a test's cgroup parent in every hierarchy (or the
// one cgroup2 directory), with any groups left in it, killing what still
// runs there. For t.Cleanup.
func RemoveParent(parent string) {
	_ = cgtest.RemoveParent(parent)
}

// ProcUID returns the real uid of process pid, and whether it is live: it
// exists and is not a zombie.
func ProcUID(pid int) (uid int, live bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	uid, live = -1, true
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Uid:":
			uid, _ = strconv.Atoi(f[1])
		case "State:":
			live = f[1] != "Z"
		}
	}
	return uid, live && uid >= 0
}
