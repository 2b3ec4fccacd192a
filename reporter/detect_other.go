//go:build !linux

package reporter

import "github.com/hostward/ward/cgroup"

// detectMode has no cgroups to detect outside Linux; v2 is the layout a
// fake cgroupfs directory is most likely to mimic.
func detectMode() cgroup.Mode { return cgroup.V2 }
