// Package oom detects, for many control groups at once, that the kernel
// OOM-killed a process in a group, that a group is under memory pressure,
// that a v2 group became empty, and that a group was removed, and reports
// each of these to one handler exactly once. It owns the notification file
// descriptors it registers and nothing else: it never kills, never creates or
// removes groups and never writes a limit; the caller owns the kill policy.
//
// # One event loop
//
// A [Watcher] runs one goroutine blocked in epoll_wait on a single epoll set
// that holds every group's notification descriptors. Thousands of idle groups
// therefore cost one sleeping thread and no CPU at all: nothing is polled,
// and no goroutine or thread exists per group. The kernel wakes the loop, the
// loop reads the group's counter, and the verdict is queued to a second
// goroutine that calls the handler, in order and never concurrently, so a
// slow handler delays delivery but never detection.
//
// # cgroup v1
//
// OOM: an eventfd is bound to memory.oom_control through cgroup.event_control.
// The kernel signals it in three cases: an OOM in the group, an OOM in an
// ancestor (which notifies the whole subtree), and the group's removal; the
// group's oom_kill counter tells them apart. The OOM signal comes from
// memcg1_oom_prepare, before the OOM killer has picked a victim, so at
// wakeup the counter has often not risen yet (measured here: about half of
// the wakeups; the rise follows 0.4–1.2 ms later, up to ~0.1 s with 50 groups
// OOMing at once). Every wakeup therefore reads oom_kill and re-reads it a
// bounded number of times on a backoff schedule (0.2 ms up to 1 s, about 2 s
// in all, on one timerfd shared by all groups); an OOM event is reported
// once for each rise. A read that fails with ENODEV (the counter file is kept
// open, so a new group at the same path is never mistaken for the old one)
// means the group is gone: Removed.
//
// Pressure: memory.pressure_level is registered per level in "local" mode.
// vmpressure events originate in the group whose limit is being reclaimed
// and travel towards the root; "local" delivers only the group's own
// reclaim, which is what an instance's pressure is, and does not swallow the
// event for a listener an operator may have on an ancestor in "hierarchy"
// mode (the "default" mode stops propagation at the first listener, and on
// this kernel a default-mode "low" listener also starved the group's own
// medium and critical listeners). Host-wide (global) reclaim is accounted to
// the root group and is not an instance's pressure in any mode.
//
// # cgroup v2
//
// One inotify descriptor in the epoll set watches, per group, memory.events
// (IN_MODIFY: an OOM event when oom_kill or oom_group_kill rose) and
// cgroup.events (IN_MODIFY: Empty when populated went from 1 to 0), and
// the group's parent directory (IN_DELETE of the group's name: Removed).
// cgroupfs sends nothing to a watch on a removed group or on its files —
// no IN_DELETE_SELF, no IN_IGNORED — so the parent's watch, shared by all
// groups there, is what sees an rmdir. Each group's directory is held open
// (O_PATH) and its files are opened relative to it, so a read never
// reaches another group created later at the same path, and an IN_DELETE
// counts only when the held directory has really lost its files.
//
// The kernel notifies a cgroup file on every change, but at most once per
// 20 ms (CGROUP_FILE_NOTIFY_MIN_INTV): a change within that interval of
// the previous notification is notified by a timer at its end, and rmdir
// cancels the timer. An OOM usually comes within 20 ms of the group
// reaching memory.max, which notifies memory.events too, so the kill's own
// notification is often held back, and may reach the loop after the
// exit's cgroup.events notification — or, once the group is deleted,
// never. (Measured on the 6.1 kernel of the cgroup v2 stage: the OOM came
// after the Empty in 2 of 10 kills, and with every group deleted on its
// Empty, 4 and 5 of 20 OOMs were never reported.) The OOM killer raises
// oom_kill before it sends SIGKILL, so the counter is final by the time a
// kill has emptied the group: every cgroup.events notification therefore
// reads memory.events first, and an OOM that emptied a group is reported
// before its Empty. No re-reads as on v1 are needed: a held-back
// notification does come while the group exists, and a group cannot be
// deleted before it is empty. A caller that deletes one without waiting
// for its Empty (say, as soon as it reaped the last process) can cancel
// both notifications, and reads OOMKills first (see [Watcher.Remove]).
//
// cgroup.events changes only when populated or frozen does; a notification
// that shows neither changed is a process that came and went between two
// reads, and counts as an exit too. A full inotify queue (IN_Q_OVERFLOW)
// makes the loop read every group. Pressure uses PSI triggers:
// memory.pressure is opened read-write, the trigger ("some 150000 1000000")
// written to it and the descriptor added to the epoll set for EPOLLPRI;
// EPOLLERR or EPOLLHUP on it means the group went away. PSI triggers need a
// real v2 kernel; the rest of the v2 path runs against any directory holding
// those files.
//
// # Exactly once
//
// Every group carries the oom_kill count already accounted for: the caller's
// baseline ([WithBaseline], 0 by default, which fits a group registered
// before its first process enters it). All reads of the counter — by Add,
// by the loop and by the re-reads — happen under one lock and compare against
// that count, so a kill is reported once however many wakeups it causes, and
// a kill that happened before or during Add is reported by Add itself: it
// registers first and reads the counter afterwards (and on v1 starts the
// re-reads, for a kill already under way). Pressure events are rate-limited
// per group and level ([PressureConfig].MinInterval); notifications inside
// the interval are dropped, not queued.
package oom
