//go:build !linux

package agent

import "github.com/hostward/ward/api"

// spawnError: nothing is spawned outside Linux, so nothing is the
// request's fault.
func spawnError(err error) error { return api.Internal(err) }
