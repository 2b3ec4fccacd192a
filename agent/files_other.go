//go:build !linux

package agent

// raiseFileLimit: no instance runs outside Linux, and no pool needs room.
func (a *Agent) raiseFileLimit() {}

func instanceFileLimit(n uint64) (uint64, bool) { return n, false }
