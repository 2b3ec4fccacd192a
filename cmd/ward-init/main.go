// Command ward-init is the stage between the ward agent's clone of an
// instance's first process and the instance's program (package nsinit).
// Only the agent runs it; it lives next to the ward binary.
//
// It is on every start's path and lives for a millisecond: the runtime
// need not watch for the cgroup's CPU limit changing.
//
//go:debug updatemaxprocs=0
package main

import "github.com/hostward/ward/nsinit"

func main() { nsinit.Main() }
