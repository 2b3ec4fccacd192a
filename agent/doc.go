// Package agent owns the lifecycle of app instances on one host: the API
// both transports (the local socket and the bus) serve, the validation of
// every request, the crash-safe instance records, and the reconciliation
// that makes the host match those records after any crash.
//
// Every side effect is preceded by a record of the intent to make it (an
// instance is written as "starting" before its cgroup exists, "stopping"
// before its first signal), so a restarted agent can finish or undo whatever
// it was doing. Instances do not depend on the agent to live: they are not
// its children after a restart, their output goes straight to files, and a
// restarted agent re-adopts them by pid and start time.
package agent
