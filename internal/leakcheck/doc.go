// Package leakcheck is the tests' leak scanner: it looks at the host the
// way an operator would — cgroupfs, the state dir, /proc — and lists
// anything an agent holds that no live instance justifies.
package leakcheck
