// Package api owns ward's wire contract: the requests and replies of
// start, stop, limit, info and list, the instance states and event kinds,
// the error codes, the strict request decoder, and the table of methods
// both transports (the bus and the local socket) serve. It holds no
// behaviour of its own: the agent implements API, the transports and the
// CLI speak these types, and metrics counts by these names, so none of
// them needs to import the agent to agree on what a state or a code is.
package api
