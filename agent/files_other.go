//go:build !linux

package agent

// raiseFileLimit: no instance runs outside Linux, and no pool needs room.
func (a *Agent) raiseFileLimit() {}
