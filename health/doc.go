// Package health probes instances' ports and owns their health status:
// "unknown" until the first verdict, then "healthy" or "unhealthy". It knows
// nothing of instances beyond an id and an address; whoever adds a check
// (the agent) learns of every transition through one callback and decides
// what it means — an event, a route withdrawn.
//
// Probes:
//   - tcp: a connect to the address succeeds within the timeout (the kernel
//     completes the handshake for a listening socket, so this tells "something
//     listens", not "the app answers").
//   - http: GET http://<addr><path> answers 2xx or 3xx within the timeout.
//     Redirects are not followed (a 302 to a login page means the app is up),
//     and every probe opens a fresh connection: keep-alive would let a probe
//     pass on a connection the app accepted long ago while it no longer
//     accepts new ones, and 1,000 idle connections cost the apps more than
//     1,000 handshakes on loopback cost anyone.
//
// Thresholds: one success makes an instance healthy; FailureThreshold
// consecutive failures make it unhealthy. A single lost probe on a busy
// host thus never withdraws a route, while a dead instance is noticed within
// FailureThreshold intervals (plus one timeout).
//
// Cost: one goroutine per checked instance, sleeping on a timer between
// probes (a few KiB each; 1,000 instances cost a few MiB and no CPU while
// idle). Each instance's first probe comes at a random point of its first
// interval, so instances added together — an agent re-adopting 1,000 of
// them — do not probe in lockstep, and they keep their spread afterwards.
package health
