package agent

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hostward/ward/api"
	"github.com/hostward/ward/config"
)

// Checking a log under its cap opens nothing. The descriptor-safe path
// opens the instance dir, its logs dir and the log: at 2,000 instances,
// every 2 s, that cost the agent as much CPU as sampling them all.
func TestLogCheckUnderCapOpensNothing(t *testing.T) {
	a := newTestAgent(t, func(c *config.Config) { c.Logs.MaxBytes = 4096; c.Logs.Keep = 1 })
	inst := mustStart(t, a, api.Request{Name: "quiet", Command: sh("echo hi; exec sleep 1000")})
	logs := filepath.Join(inst.Dir, "logs")
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, logs, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	a.rotateLogs()
	if n, _ := unix.Read(fd, buf); n > 0 {
		t.Fatalf("checking logs under their cap opened something in %s (%d bytes of inotify events)", logs, n)
	}
	// Over the cap the check looks closer, and the watch sees it: the
	// silence above was not a deaf watch.
	if err := os.Truncate(filepath.Join(logs, "stdout.log"), 8192); err != nil {
		t.Fatal(err)
	}
	a.rotateLogs()
	if n, _ := unix.Read(fd, buf); n <= 0 {
		t.Fatal("a rotation opened nothing the watch saw")
	}
	if st, err := os.Stat(filepath.Join(logs, "stdout.log")); err != nil || st.Size() != 0 {
		t.Fatalf("log over its cap not rotated: %v %v", st, err)
	}
}
