package oom

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hostward/ward/cgroup"
)

// Kind says what happened to a group.
type Kind int

const (
	// OOM: the group's oom_kill counter rose; the kernel killed a process.
	OOM Kind = iota + 1
	// Pressure: the group is under memory pressure at Event.Level.
	Pressure
	// Empty: the last process of a v2 group exited (populated 1 → 0, or a
	// process came and went between two reads); once each time the group
	// had processes, and after the OOM event of a kill that emptied it.
	// Never reported on v1, which has no such notification.
	Empty
	// Removed: the group's directory went away. The key is dropped: no
	// further events, and it may be added again.
	Removed
)

func (k Kind) String() string {
	switch k {
	case OOM:
		return "oom"
	case Pressure:
		return "pressure"
	case Empty:
		return "empty"
	case Removed:
		return "removed"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Event is one report about one group.
type Event struct {
	Key  string // the key the group was added under
	Kind Kind
	// OOMKills is, for an OOM event, the group's oom_kill counter after the
	// rise (v1 memory.oom_control, v2 memory.events); 0 for other kinds.
	OOMKills uint64
	// Level is, for a Pressure event, the v1 level ("low", "medium",
	// "critical") or the v2 PSI trigger's kind ("some", "full").
	Level string
	// Time is when the event loop read the notification (for an event found
	// by Add, when Add read the counter).
	Time time.Time
}

var (
	// ErrClosed is returned by Add on a closed Watcher.
	ErrClosed = errors.New("oom: watcher closed")
	// ErrExist is returned by Add for a key, or a directory, that is already
	// watched.
	ErrExist = errors.New("oom: already watched")
	// ErrUnsupported is returned by NewWatcher outside Linux.
	ErrUnsupported = errors.New("oom: cgroup notifications are only supported on Linux")
)

// DefaultMinInterval is the least time between two Pressure events of one
// group and level unless PressureConfig.MinInterval says otherwise.
const DefaultMinInterval = 10 * time.Second

// PressureConfig enables memory-pressure events for a group. Both versions'
// settings may be given; a Watcher uses the one of its mode, and validates
// both.
type PressureConfig struct {
	// V1Levels are the memory.pressure_level levels registered, each one of
	// "low", "medium", "critical". Default: medium and critical. A group at
	// critical pressure also signals the lower levels registered.
	V1Levels []string
	// V2Triggers are PSI triggers written to memory.pressure, each
	// "<some|full> <stall µs> <window µs>" with a window of 0.5–10 s and a
	// stall of at most the window. Default: "some 150000 1000000".
	V2Triggers []string
	// MinInterval is the least time between two Pressure events of the
	// group at one level; notifications inside it are dropped. 0 means
	// DefaultMinInterval.
	MinInterval time.Duration
}

// Option configures one group's watch.
type Option func(*options)

type options struct {
	baseline uint64
	pressure *PressureConfig
}

// WithBaseline sets the oom_kill count the caller has already accounted
// for: only kills beyond it are reported. The default, 0, fits a group
// added before its first process enters it. A caller adopting a running
// group reads OOMKills first, handles those kills, and passes the count
// here; any kill after that read is reported, including one racing Add.
func WithBaseline(kills uint64) Option {
	return func(o *options) { o.baseline = kills }
}

// WithPressure turns pressure events on for the group.
func WithPressure(p PressureConfig) Option {
	return func(o *options) { c := p; o.pressure = &c }
}

var v1Levels = []string{"low", "medium", "critical"}

// validate checks p and fills in its defaults.
func (p PressureConfig) validate() (PressureConfig, error) {
	if p.MinInterval < 0 {
		return p, fmt.Errorf("oom: pressure.MinInterval %v is negative", p.MinInterval)
	}
	if p.MinInterval == 0 {
		p.MinInterval = DefaultMinInterval
	}
	if len(p.V1Levels) == 0 {
		p.V1Levels = []string{"medium", "critical"}
	}
	for i, l := range p.V1Levels {
		if !slices.Contains(v1Levels, l) {
			return p, fmt.Errorf("oom: pressure.V1Levels[%d] %q: want one of %s", i, l, strings.Join(v1Levels, ", "))
		}
		if slices.Index(p.V1Levels, l) != i {
			return p, fmt.Errorf("oom: pressure.V1Levels[%d] %q: given twice", i, l)
		}
	}
	if len(p.V2Triggers) == 0 {
		p.V2Triggers = []string{"some 150000 1000000"}
	}
	for i, t := range p.V2Triggers {
		if _, err := parseTrigger(t); err != nil {
			return p, fmt.Errorf("oom: pressure.V2Triggers[%d] %q: %w", i, t, err)
		}
	}
	return p, nil
}

// parseTrigger checks a PSI trigger the way the kernel will (psi_trigger_create)
// so that a bad one is refused with its field named, and returns its kind.
func parseTrigger(t string) (string, error) {
	f := strings.Fields(t)
	if len(f) != 3 {
		return "", errors.New(`want "<some|full> <stall µs> <window µs>"`)
	}
	if f[0] != "some" && f[0] != "full" {
		return "", errors.New(`kind must be "some" or "full"`)
	}
	stall, err1 := strconv.ParseUint(f[1], 10, 32)
	window, err2 := strconv.ParseUint(f[2], 10, 32)
	switch {
	case err1 != nil || err2 != nil:
		return "", errors.New("stall and window must be whole microseconds")
	case window < 500000 || window > 10000000:
		return "", errors.New("window must be 500000–10000000 µs")
	case stall == 0 || stall > window:
		return "", errors.New("stall must be 1 µs up to the window")
	}
	return f[0], nil
}

// checkKey and checkDir validate Add's arguments; dir comes back clean.
func checkKey(key string) error {
	if key == "" {
		return errors.New("oom: key is empty")
	}
	return nil
}

func checkDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("oom: dir %q is not absolute", dir)
	}
	return filepath.Clean(dir), nil
}

// counterFile is the file holding a group's oom_kill counter.
func counterFile(mode cgroup.Mode) (string, error) {
	switch mode {
	case cgroup.V1:
		return "memory.oom_control", nil
	case cgroup.V2:
		return "memory.events", nil
	}
	return "", fmt.Errorf("oom: mode %v: want cgroup.V1 or cgroup.V2", mode)
}

// OOMKills reads the oom_kill counter of the group at dir (v1: the
// memory-hierarchy directory's memory.oom_control; v2: memory.events). The
// agent uses it when adopting a group, to learn of kills while it was down.
func OOMKills(mode cgroup.Mode, dir string) (uint64, error) {
	name, err := counterFile(mode)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return 0, fmt.Errorf("oom: %w", err)
	}
	n, ok := keyed(b, "oom_kill")
	if !ok {
		return 0, fmt.Errorf("oom: %s: no oom_kill counter", filepath.Join(dir, name))
	}
	return n, nil
}

// keyed returns the value of the "key value" line for key in a flat-keyed
// cgroup file (memory.oom_control, memory.events, cgroup.events).
func keyed(b []byte, key string) (uint64, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		k, v, ok := bytes.Cut(line, []byte{' '})
		if !ok || string(k) != key {
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		return n, err == nil
	}
	return 0, false
}

// limiter rate-limits one group's Pressure events per level.
type limiter struct {
	every time.Duration
	last  map[string]time.Time
}

// allow reports whether an event at level may be sent at now, and if so
// records it.
func (l *limiter) allow(level string, now time.Time) bool {
	if t, ok := l.last[level]; ok && now.Sub(t) < l.every {
		return false
	}
	if l.last == nil {
		l.last = map[string]time.Time{}
	}
	l.last[level] = now
	return true
}
