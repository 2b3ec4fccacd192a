// Package metrics owns the agent's Prometheus endpoint: the registry, the
// collector that turns the latest load sample into gauges, the agent's own
// counters, and the HTTP server on metrics.listen (/metrics, /healthz).
//
// The registry is the package's own, never the process-wide default. The
// host and instance gauges are built from reporter's latest sample at
// scrape time, so a scrape costs no cgroup read, an instance that stopped
// has no series on the next scrape, and a figure the sample leaves null is
// absent rather than 0. Per-instance series carry exactly the labels id,
// name and index; every other label takes values from a fixed list
// (unknown ones count as "other"), so the series count is bounded by the
// number of running instances.
//
// # Metrics
//
// From the latest sample (gauges; see package reporter for how each is
// measured):
//
//	ward_sample_timestamp_seconds                   unix time of the sample
//	ward_host_cpu_percent                           busy share of all CPUs, 0-100
//	ward_host_memory_percent                        memory in use, 0-100
//	ward_host_load_score                            host load score, 0-100
//	ward_host_loadavg{period="1"|"5"|"15"}          run-queue average over period minutes
//	ward_host_network_receive_bytes_per_second{interface}
//	ward_host_network_transmit_bytes_per_second{interface}
//	ward_instance_cpu_percent{id,name,index}        percent of ONE core (200 = two cores)
//	ward_instance_memory_bytes{...}                 working set, bytes
//	ward_instance_memory_limit_bytes{...}           limit memory_percent is of, bytes
//	ward_instance_memory_percent{...}               0-100
//	ward_instance_io_read_bytes_per_second{...}     block-device reads
//	ward_instance_io_write_bytes_per_second{...}    block-device writes
//	ward_instance_pids{...}                         tasks, threads included
//	ward_instance_disk_bytes{...}                   bytes on disk (quota)
//	ward_instance_load{...}                         instance load score, 0-100
//	ward_instance_weight{...}                       balancing weight, 1-100
//
// Rates are over the interval between the two samples the figure comes
// from, not over the scrape interval.
//
// The agent's own (Self):
//
//	ward_sample_duration_seconds                    histogram: one load sample
//	ward_events_published_total{kind}               events the bus confirmed
//	ward_events_pending                             outbox events not yet confirmed
//	ward_bus_reconnects_total                       bus connection re-established
//	ward_bus_connected                              1 up, 0 down
//	ward_oom_kills_total                            kernel OOM kills in instance cgroups
//	ward_instance_starts_total{result}              result: ok or the error code
//	ward_instance_stops_total{result}
//	ward_instances{state}                           instances the agent holds
//
// plus the Go runtime (go_*) and process (process_*) collectors and
// promhttp_metric_handler_* for the endpoint itself.
package metrics
