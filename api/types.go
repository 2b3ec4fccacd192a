package api

import "time"

// State is where an instance is in its life. Terminal states hold no
// resources: no process, cgroup, uid, port or directory.
type State string

const (
	StateStarting  State = "starting"
	StateRunning   State = "running"
	StateStopping  State = "stopping"
	StateStopped   State = "stopped"    // by a stop request
	StateExited    State = "exited"     // main process ended with 0
	StateCrashed   State = "crashed"    // ended non-zero or by a signal
	StateOOMKilled State = "oom_killed" // killed for running out of memory
)

// States lists every state, live ones first.
var States = []State{StateStarting, StateRunning, StateStopping, StateStopped, StateExited, StateCrashed, StateOOMKilled}

// Terminal reports whether the state is final.
func (s State) Terminal() bool {
	switch s {
	case StateStopped, StateExited, StateCrashed, StateOOMKilled:
		return true
	}
	return false
}

// Limits are an instance's resource limits. In a request a nil field takes
// the configured default (start) or stays as it is (limit); in an Instance
// every field is set.
type Limits struct {
	MemoryBytes   *int64 `json:"memory_bytes,omitempty"`
	SwapBytes     *int64 `json:"swap_bytes,omitempty"`
	CPUShares     *int64 `json:"cpu_shares,omitempty"`
	CPUMillicores *int64 `json:"cpu_millicores,omitempty"` // 0: no hard cap
	Pids          *int64 `json:"pids,omitempty"`
	DiskBytes     *int64 `json:"disk_bytes,omitempty"` // 0: no quota
}

// HealthCheck says how the agent probes an instance's port.
type HealthCheck struct {
	Type       string `json:"type"`           // tcp | http
	Path       string `json:"path,omitempty"` // http only
	IntervalMS int64  `json:"interval_ms,omitempty"`
	TimeoutMS  int64  `json:"timeout_ms,omitempty"`
}

// Request asks for an instance (bus `start`, socket `start`, `ward run`).
type Request struct {
	ID          string            `json:"id,omitempty"`
	Name        string            `json:"name"`
	Index       int               `json:"index"`
	Command     []string          `json:"command"`
	Env         map[string]string `json:"env,omitempty"`
	Limits      Limits            `json:"limits"`
	Port        *int              `json:"port,omitempty"` // nil: no port; 0: allocate
	Routes      []string          `json:"routes,omitempty"`
	HealthCheck *HealthCheck      `json:"health_check,omitempty"`
}

// StopRequest is the body of `stop`.
type StopRequest struct {
	ID        string `json:"id"`
	TimeoutMS *int64 `json:"timeout_ms,omitempty"` // nil: the configured stop.timeout
}

// LimitRequest is the body of `limit`: only the limits given change.
type LimitRequest struct {
	ID     string `json:"id"`
	Limits Limits `json:"limits"`
}

// InfoRequest is the body of `info`.
type InfoRequest struct {
	ID string `json:"id"`
}

// Usage is what an instance consumes now. A figure the agent cannot know is
// nil (JSON null), never a guess.
type Usage struct {
	MemoryBytes *uint64  `json:"memory_bytes"`
	CPUPct      *float64 `json:"cpu_pct"` // 100 = one core busy
	Pids        *uint64  `json:"pids"`
	DiskBytes   *uint64  `json:"disk_bytes"`
}

// Instance is everything known about one instance (the reply to start,
// stop, limit and info).
type Instance struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Index       int          `json:"index"`
	State       State        `json:"state"`
	PID         *int         `json:"pid"`
	UID         *int         `json:"uid"`
	Port        *int         `json:"port"`
	Cgroup      string       `json:"cgroup"`
	Dir         string       `json:"dir"`
	Command     []string     `json:"command"`
	Routes      []string     `json:"routes,omitempty"`
	HealthCheck *HealthCheck `json:"health_check,omitempty"`
	Limits      Limits       `json:"limits"`
	Usage       Usage        `json:"usage"`
	Health      *string      `json:"health"`
	CreatedAt   time.Time    `json:"created_at"`
	StartedAt   *time.Time   `json:"started_at"`
	ExitedAt    *time.Time   `json:"exited_at"`
	ExitCode    *int         `json:"exit_code"`
	ExitSignal  string       `json:"exit_signal,omitempty"` // e.g. "SIGKILL" when a signal ended it
	Reason      string       `json:"reason"`
	// Set once the instance has ended: its memory high-water mark, the
	// tasks the kernel killed for its memory limit, and the last lines of
	// its stderr (crashes and OOM kills only).
	MemoryPeakBytes *uint64 `json:"memory_peak_bytes,omitempty"`
	OOMKills        uint64  `json:"oom_kills,omitempty"`
	StderrTail      string  `json:"stderr_tail,omitempty"`
}

// ListRequest is the body of `list`. The empty request asks for every
// instance; Limit asks for a page, and After for the page after the one
// whose Next it is. A host's whole list can outgrow what one bus message
// may carry (about 600 bytes an instance against NATS's default 1 MB).
type ListRequest struct {
	After string `json:"after,omitempty"`
	Limit int    `json:"limit,omitempty"` // 0: no limit
}

// List is the reply to `list`: instances ordered by name, index and id.
type List struct {
	Instances []Instance `json:"instances"`
	// Next is set when Limit left instances out: the After of the next
	// page. It is a position, not an instance, so a page boundary
	// survives the instance it names being forgotten in between.
	Next string `json:"next,omitempty"`
}

// EventSubject is the bus subject of an event kind on a host.
func EventSubject(host, kind string) string { return "ward." + host + ".events." + kind }

// Event kinds: the contract's, plus "crashed" (the main process ended
// non-zero or by a signal; "exited" is a clean exit) and "memory_pressure"
// (the kernel reports reclaim pressure in the instance's memory cgroup).
const (
	EventStarted        = "started"
	EventExited         = "exited"
	EventCrashed        = "crashed"
	EventOOMKilled      = "oom_killed"
	EventStopped        = "stopped"
	EventLimitChanged   = "limit_changed"
	EventMemoryPressure = "memory_pressure"
	EventHealthChanged  = "health_changed"
)

// EventKinds lists every event kind.
var EventKinds = []string{
	EventStarted, EventExited, EventCrashed, EventOOMKilled, EventStopped,
	EventLimitChanged, EventMemoryPressure, EventHealthChanged,
}

// EndEvent is the kind of the event announcing an instance's end in the
// terminal state s.
func EndEvent(s State) string {
	switch s {
	case StateStopped:
		return EventStopped
	case StateOOMKilled:
		return EventOOMKilled
	case StateCrashed:
		return EventCrashed
	}
	return EventExited
}

// Codes lists every error code.
var Codes = []Code{CodeInvalidArgument, CodeNotFound, CodeConflict, CodeResourceExhausted, CodeUnavailable, CodeInternal}

// Event is something that happened to an instance.
type Event struct {
	Seq             uint64    `json:"seq,omitempty"` // per-host sequence number, set by the event path
	Time            time.Time `json:"time"`
	Host            string    `json:"host"`
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	Index           int       `json:"index"`
	Kind            string    `json:"kind"`
	State           State     `json:"state"`
	Reason          string    `json:"reason"`
	ExitCode        *int      `json:"exit_code"`
	MemoryPeakBytes *uint64   `json:"memory_peak_bytes"`
	OOMKills        uint64    `json:"oom_kills,omitempty"`
	StderrTail      string    `json:"stderr_tail,omitempty"`
	Level           string    `json:"level,omitempty"`  // memory_pressure: the kernel's level
	Health          string    `json:"health,omitempty"` // health_changed: the new health
	Limits          *Limits   `json:"limits,omitempty"`
}
