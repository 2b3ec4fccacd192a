// Package seccomp owns the system call filter of namespaced instances:
// its policy, and the program the kernel runs, which ward-init installs
// (package nsinit) right before it execs the instance's program.
//
// The program is assembled here, in the agent, once, and handed to
// ward-init on its command line: ward-init is on every start's path, and
// the assembler's syscall tables alone take longer to build at its start
// than the filter takes to install.
package seccomp
