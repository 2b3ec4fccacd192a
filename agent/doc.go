// Package agent owns the lifecycle of app instances on one host: it
// implements api.API (what both transports serve), validates every
// request, keeps the crash-safe instance records, and reconciles the host
// with those records after any crash.
//
// Three shapes carry everything else:
//
//   - Resources (resource.go, resources.go). Everything an instance holds
//     on the host — its leases, its record, its cgroup with the OOM watch
//     on it, its directory, its processes, the exit watch, the start's
//     announcement, the health check, the route — is a resource in one
//     ordered list (defaultSteps). A start creates them forwards and, on a
//     failure,
//     releases exactly those it made, in reverse; an ended instance
//     releases them all in reverse; a restarted agent adopts them
//     forwards; a limit change updates them forwards and puts them back in
//     reverse when one refuses; the leak scan asks each for its leftovers.
//
//   - States (state.go). One transition table; every change of state goes
//     through record.move, which refuses a move the table does not list.
//
//   - Commits (commit.go). A change that is announced — started,
//     limit_changed, an OOM notice, an instance's end — is written to the
//     record together with the number of the event announcing it, and the
//     event is stored right behind it in the outbox, so that a restarted
//     agent learns from the record alone whether its announcement was made
//     (its number is at or below the outbox's last) and makes it if not.
//
// Every side effect is preceded by a record of the intent to make it (an
// instance is written as "starting" before its cgroup exists, "stopping"
// before its first signal), so a restarted agent can finish or undo whatever
// it was doing. Instances do not depend on the agent to live: they are not
// its children after a restart, their output goes straight to files, and a
// restarted agent re-adopts them by pid and start time.
//
// Every goroutine the agent starts (exit watchers, OOM kills, log
// rotation) is joined: Run waits for its own before it returns, Close for
// the rest.
package agent
