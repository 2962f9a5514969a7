#pragma once
// The proxy's metric families (README.md, "Endpoints"), created once by App and shared by
// reference.
#include "metrics/registry.hpp"

namespace va::metrics {

struct Metrics {
  Metrics();
  Registry registry;
  Family<Counter>& requests_total;
  Family<Histogram>& request_duration_seconds;
  Family<Gauge>& in_flight_requests;
  Family<Gauge>& pending_requests;
  Family<Gauge>& backend_state;
  Family<Counter>& wakes_total;
  Family<Histogram>& wake_duration_seconds;
  Family<Counter>& scale_downs_total;
  Family<Counter>& rejected_requests_total;
  Family<Counter>& client_send_timeouts_total;
  Family<Counter>& backend_awake_seconds_total;
  Family<Gauge>& open_connections;
  Family<Counter>& coroutine_failures_total;
  Family<Counter>& controller_restarts_total;
  Family<Gauge>& setup_problems;
  // Pods (the kubernetes scaler; 1 or 0 for a process).
  Family<Gauge>& desired_replicas;
  Family<Gauge>& ready_replicas;
  Family<Gauge>& autoscale_panic;
  SampledGauge& pod_in_flight_requests;  // routing: our requests on each pod
  // Several proxy replicas (coordination:).
  Family<Gauge>& coordination_leader;
  Family<Gauge>& coordination_members;
  Family<Counter>& coordination_fences_total;
  Family<Counter>& coordination_lease_writes_total;

  // Rendered /metrics body; refreshes the values that are sampled rather than counted.
  std::string render();
};

}  // namespace va::metrics
