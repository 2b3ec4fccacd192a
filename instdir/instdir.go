package instdir

import (
	"bytes"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Log names one of an instance's log files in <dir>/logs.
type Log string

const (
	Stdout Log = "stdout.log"
	Stderr Log = "stderr.log"
)

// Logs lists an instance's logs, in the order Prepare opens them.
var Logs = []Log{Stdout, Stderr}

// logsDir is the directory inside an instance directory holding its logs.
const logsDir = "logs"

// LogPath is the path of log l in instance directory dir. It is for
// reading by people and tests: root must not open it by path once the
// directory is the instance's (see the package comment).
func LogPath(dir string, l Log) string {
	return filepath.Join(dir, logsDir, string(l))
}

// TailBytes and TailLines bound what StderrTail returns: enough for a
// stack trace's last lines, small enough for an event.
const (
	TailBytes = 2048
	TailLines = 10
)

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
