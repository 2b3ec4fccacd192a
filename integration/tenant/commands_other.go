//go:build !linux

package main

// What the tenant exercises — pids limits, /proc, ptrace, CPU affinity — is
// Linux's: elsewhere it has no subcommands.
var subcommands = map[string]subcommand{}
