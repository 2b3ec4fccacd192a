// Package integration holds black-box tests of the real ward binary: the
// agent as a separate process, driven over its socket and through the CLI,
// killed and restarted the way a host would. Its containment tests run the
// tenant program (integration/tenant) as instances of an agent and check,
// from inside an instance, that the limits and walls between instances hold.
package integration
