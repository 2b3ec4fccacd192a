// Package spawn starts an instance's main process already inside its cgroup,
// as its pooled user, and watches it until it exits — or re-attaches to one
// that an earlier agent started.
//
// The process's first instruction runs in its cgroup. On cgroup v2 the child
// is cloned straight into the group (clone3 with CLONE_INTO_CGROUP). cgroup v1
// has no such flag, and the usual answer — start the child blocked, move it,
// release it — costs a helper exec per start. v1 lets a single thread belong
// to a group, so spawn moves one locked OS thread into the instance's groups,
// forks from it (a child inherits the forking thread's groups, and its memory
// is charged to the group from its first page) and then lets that thread exit,
// so the agent itself is never left inside an instance. The Go runtime
// cannot end the main thread, so it must never be the one that moves: a
// spawning goroutine that lands on it holds it and lets another go again
// (this used to be a LockOSThread in the package's init, which pinned the
// main goroutine of every binary importing spawn, the CLI included, to the
// main thread, so that each time it blocked or woke a thread was handed off).
//
// Exit is observed through a pidfd parked on the Go netpoller: no thread and
// no polling per instance. For a process the agent started the exit status is
// read with wait4; for an adopted one (started by an earlier agent, now
// reparented) the kernel no longer tells anyone its status, and Exit.Known is
// false rather than a guess.
package spawn
