// Package integration holds black-box tests of the real ward binary: the
// agent as a separate process, driven over its socket and through the CLI,
// killed and restarted the way a host would.
package integration
