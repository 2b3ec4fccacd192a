package accounts

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// KillUID SIGKILLs every process whose real or effective uid is uid. It is
// for a uid about to go back to the pool with processes that escaped their
// cgroup (a group that vanished): the next holder must not inherit them.
func KillUID(uid int) (killed int) {
	ents, _ := os.ReadDir("/proc")
	want := strconv.Itoa(uid)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "Uid:" && (f[1] == want || f[2] == want) {
				if unix.Kill(pid, unix.SIGKILL) == nil {
					killed++
				}
				break
			}
		}
	}
	return killed
}
