package agent

import (
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// memTotal is the host's physical memory in bytes.
func memTotal() (int64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, err
	}
	return int64(si.Totalram) * int64(si.Unit), nil
}

// mountsUnder lists the mount points of the agent's mount namespace below
// dir, deepest first (the order they can be detached in).
func mountsUnder(dir string) ([]string, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		m := unescapeMountinfo(f[4])
		if strings.HasPrefix(m, dir+"/") {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, nil
}

// unescapeMountinfo undoes mountinfo's octal escapes of space, tab,
// newline and backslash.
func unescapeMountinfo(s string) string {
	for _, r := range [][2]string{{`\040`, " "}, {`\011`, "\t"}, {`\012`, "\n"}, {`\134`, `\`}} {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}

// detachMount unmounts m lazily: whoever still uses it keeps it until done.
func detachMount(m string) error { return unix.Unmount(m, unix.MNT_DETACH) }
