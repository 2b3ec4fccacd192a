// Package nsinit is the helper stage between the agent's clone of an
// instance's first process and that process's program: ward-init
// (cmd/ward-init) runs it.
//
// A Go agent cannot do this work itself. Go's SysProcAttr creates
// namespaces and sets credentials, but has no mounts, no seccomp filter, no
// no_new_privs and no oom_score_adj, and a multithreaded process cannot
// enter a mount namespace made ahead of time. So the agent clones the child
// straight into the instance's cgroup and new PID, IPC, UTS, mount and
// cgroup namespaces, running ward-init as root; ward-init builds the
// instance's view of the filesystem inside its own mount namespace, sets
// its hostname, limits and oom_score_adj, takes the pool user's identity,
// gives up every capability, loads the seccomp filter and execs the
// program in its own place, so the program is the process the agent
// cloned (its pid, its pidfd, its exit status).
//
// Nothing ward-init makes lives outside the instance's namespaces: its
// mounts go when the last process of the instance goes, so there is no
// per-instance mount, holder process or file on the host to track, adopt
// after a crash or leak.
//
// ward-init is a program of its own, not a mode of the ward binary,
// because it is on every start's path: ward's package initialisation
// alone (NATS server, Prometheus, YAML) takes longer than this whole stage.
// It imports little more than the runtime and x/sys.
//
// In uid mode (Spec.Namespaces false) ward-init only resets what the
// instance must not inherit from the agent — oom_score_adj and the open
// file limit — and takes the pool user's identity.
//
// The agent learns how the stage went through a status pipe on fd 3,
// close-on-exec: end of file with nothing written means the program is
// running; otherwise ward-init writes one Failure and exits.
package nsinit
