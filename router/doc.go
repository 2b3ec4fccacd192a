// Package router keeps a host's routable instances registered with Cloud
// Foundry gorouters over NATS. It owns the set of registered routes and the
// gorouter protocol: router.register / router.unregister messages in
// gorouter's JSON, router.greet at start, router.start from routers, and the
// periodic re-registration that keeps routes from being pruned. Which
// instances deserve a route (a port, routes, healthy) is the caller's
// decision; the registrar announces what it is given until told otherwise.
//
// The wire format follows gorouter's own subscriber
// (cloudfoundry/gorouter mbus/subscriber.go, RegistryMessage; the same file
// lives on in cloudfoundry/routing-release under
// src/code.cloudfoundry.org/gorouter/mbus): "host" string, "port" uint16,
// "uris" []string, "app", "private_instance_id", "private_instance_index"
// (a string), "availability_zone", "stale_threshold_in_seconds" (int) and
// "tags" (map of string to string; a number there makes json.Unmarshal, and
// so gorouter, drop the whole message). gorouter unregisters by host:port
// for each uri in the message (registry.Unregister → EndpointPool.Remove,
// keyed by CanonicalAddr), so an unregister repeats the host, port and uris
// that were registered.
//
// Timing: gorouter publishes router.start — {"id", "hosts",
// "minimumRegisterIntervalInSeconds", "pruneThresholdInSeconds"} — when it
// starts or reconnects to NATS, and answers router.greet requests with the
// same payload (mbus/subscriber.go: sendStartMessage,
// subscribeToGreetMessage; common.RouterStart). Its defaults are a 5 s
// interval (start_response_delay_interval) and a 120 s prune threshold
// (droplet_stale_threshold). The registrar greets when it starts, re-sends
// every route at once on each router.start or greet reply, and re-sends
// them all every interval: the smallest one the routers it heard from asked
// for, or DefaultInterval (20 s) while none has spoken.
//
// stale_threshold_in_seconds is max(3 × interval, the largest prune
// threshold a router announced, or 120 s when none did). gorouter lowers a
// per-route threshold to its own prune threshold (registry.Register) but
// uses a smaller one as is, and a route outlives the agent by exactly that
// long; so asking for less than the router's own threshold would only make
// routes vanish during a NATS failover that the router itself is sized to
// ride out, and three intervals are the least that survives two lost
// re-registrations.
//
// Close does not unregister: instances outlive an agent restart, and the
// next agent registers them again well within the stale threshold, so the
// restart costs no request. UnregisterAll is there for taking a host out of
// service.
package router
