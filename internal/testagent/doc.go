// Package testagent gives tests outside package agent a real agent over a
// throwaway slice of the host: its own state dir, cgroup parent, uid and
// port ranges, removed (and checked for leaks) when the test ends.
package testagent
