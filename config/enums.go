package config

import (
	"slices"
	"strings"
)

// The keys that take one of a fixed set of words are typed: code compares
// against the constants, so a misspelt value is a compile error rather than
// a branch never taken, and Validate checks the word against the same list
// the constants are declared in. The YAML is the plain word.

// QuotaBackend is quota.backend: how instance disk limits are enforced
// (see package quota).
type QuotaBackend string

const (
	QuotaNone    QuotaBackend = "none"    // plain directories, no limit
	QuotaBtrfs   QuotaBackend = "btrfs"   // a subvolume and qgroup per instance
	QuotaProject QuotaBackend = "project" // ext4/XFS project quota, id = uid
	QuotaUser    QuotaBackend = "user"    // ext4/XFS user quota on the uid
)

// QuotaBackends lists the values quota.backend accepts.
var QuotaBackends = []QuotaBackend{QuotaNone, QuotaBtrfs, QuotaProject, QuotaUser}

// Valid reports whether b is one of QuotaBackends.
func (b QuotaBackend) Valid() bool { return slices.Contains(QuotaBackends, b) }

// OOMPolicy is oom.policy: what happens when an instance hits its memory
// limit.
type OOMPolicy string

const (
	// OOMKill ends the instance (oom_killed) at its first OOM kill.
	OOMKill OOMPolicy = "kill"
	// OOMNotify reports each OOM kill and leaves the instance running as
	// long as its main process lives.
	OOMNotify OOMPolicy = "notify"
)

// OOMPolicies lists the values oom.policy accepts.
var OOMPolicies = []OOMPolicy{OOMKill, OOMNotify}

// Valid reports whether p is one of OOMPolicies.
func (p OOMPolicy) Valid() bool { return slices.Contains(OOMPolicies, p) }

// IsolationMode is isolation.mode: the walls around an instance besides its
// cgroup and pool user.
type IsolationMode string

const (
	// IsolationNamespaces gives every instance its own PID, IPC, UTS, mount
	// and cgroup namespaces, a read-only host filesystem, private /tmp, a
	// seccomp filter and no capabilities.
	IsolationNamespaces IsolationMode = "namespaces"
	// IsolationUID is the original model: pooled user, ACL deny list, the
	// host's namespaces.
	IsolationUID IsolationMode = "uid"
)

// IsolationModes lists the values isolation.mode accepts.
var IsolationModes = []IsolationMode{IsolationNamespaces, IsolationUID}

// Valid reports whether m is one of IsolationModes.
func (m IsolationMode) Valid() bool { return slices.Contains(IsolationModes, m) }

// oneOf is the "must be one of" list of an enum's values, for errors.
func oneOf[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}
