package reporter

import (
	"github.com/containerd/cgroups/v3"

	"github.com/hostward/ward/cgroup"
)

// detectMode decides as package cgroup does: a unified host is v2; legacy
// and hybrid hosts are v1 (a hybrid host's cgroup2 mount has no useful
// controllers).
func detectMode() cgroup.Mode {
	if cgroups.Mode() == cgroups.Unified {
		return cgroup.V2
	}
	return cgroup.V1
}
