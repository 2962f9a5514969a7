#include "metrics/metrics.hpp"

#include "core/spawn.hpp"

namespace va::metrics {
namespace {
const std::vector<double> kRequestBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                            2.5,   5,    10,    30,   60,  120,  300};
const std::vector<double> kWakeBounds = {0.1, 0.5, 1,  2.5, 5,   10,  20, 30,
                                         45,  60,  90, 120, 180, 300, 600};
}  // namespace

Metrics::Metrics()
    : requests_total(registry.counter("vllm_autoscaler_requests_total",
                                      "Routed requests answered, by backend and status code.",
                                      {"backend", "code"})),
      request_duration_seconds(registry.histogram(
          "vllm_autoscaler_request_duration_seconds",
          "Time from request head to last response byte, including any wait for a wake.",
          {"backend"}, kRequestBounds)),
      in_flight_requests(registry.gauge("vllm_autoscaler_in_flight_requests",
                                        "Requests being forwarded to the backend.", {"backend"})),
      pending_requests(registry.gauge("vllm_autoscaler_pending_requests",
                                      "Requests held while the backend wakes.", {"backend"})),
      backend_state(registry.gauge("vllm_autoscaler_backend_state",
                                   "1 for the backend's current state, 0 for the others.",
                                   {"backend", "state"})),
      wakes_total(registry.counter("vllm_autoscaler_wakes_total", "Wakes, by result.",
                                   {"backend", "result"})),
      wake_duration_seconds(registry.histogram("vllm_autoscaler_wake_duration_seconds",
                                               "Time from wake to ready.", {"backend"},
                                               kWakeBounds)),
      scale_downs_total(registry.counter("vllm_autoscaler_scale_downs_total",
                                         "Scale-downs, by reason.", {"backend", "reason"})),
      rejected_requests_total(registry.counter("vllm_autoscaler_rejected_requests_total",
                                               "Requests answered by the proxy with an error.",
                                               {"backend", "reason"})),
      client_send_timeouts_total(registry.counter(
          "vllm_autoscaler_client_send_timeouts_total",
          "Responses cut because the client took no byte for limits.send_timeout.", {"backend"})),
      backend_awake_seconds_total(registry.counter(
          "vllm_autoscaler_backend_awake_seconds_total",
          "Seconds the backend was not asleep (waking, ready or stopping): GPU time spent.",
          {"backend"})),
      open_connections(registry.gauge("vllm_autoscaler_open_connections",
                                      "Client connections open on the public port.", {})),
      coroutine_failures_total(
          registry.counter("vllm_autoscaler_coroutine_failures_total",
                           "Detached coroutines that ended with an exception (a bug).", {})),
      controller_restarts_total(registry.counter(
          "vllm_autoscaler_controller_restarts_total",
          "Backend controllers restarted after an exception (a bug; the backend keeps working).",
          {"backend"})),
      setup_problems(registry.gauge(
          "vllm_autoscaler_setup_problems",
          "What stops the backend's scaler from working as configured (a permission its Role "
          "lacks, a Deployment not found); the proxy is not ready while any is above 0.",
          {"backend"})),
      desired_replicas(registry.gauge(
          "vllm_autoscaler_desired_replicas",
          "Replicas the backend's scaler was asked for (the Deployment's spec.replicas).",
          {"backend"})),
      ready_replicas(registry.gauge("vllm_autoscaler_ready_replicas",
                                    "Replicas the backend's scaler reports ready.", {"backend"})),
      autoscale_panic(registry.gauge(
          "vllm_autoscaler_autoscale_panic",
          "1 while the load over the panic window is at twice target_in_flight per pod or more "
          "(pods are added from the panic window's load, and none is removed).",
          {"backend"})),
      pod_in_flight_requests(registry.sampled_gauge(
          "vllm_autoscaler_pod_in_flight_requests",
          "Requests this proxy has in flight on each pod of the backend (routing).",
          {"backend", "pod"})),
      coordination_leader(registry.gauge(
          "vllm_autoscaler_coordination_leader",
          "1 on the proxy replica that holds the leader Lease (the only one that scales down).",
          {})),
      coordination_members(
          registry.gauge("vllm_autoscaler_coordination_members",
                         "Proxy replicas whose member Lease is live, this one included.", {})),
      coordination_fences_total(registry.counter(
          "vllm_autoscaler_coordination_fences_total",
          "Scale-downs put to every live replica by the leader, by result: agreed, busy (a "
          "replica had requests or recent activity), unanswered, lost (leadership lost).",
          {"backend", "result"})),
      coordination_lease_writes_total(registry.counter(
          "vllm_autoscaler_coordination_lease_writes_total",
          "Writes of this replica's Leases to the API, by result: ok, conflict, failed.",
          {"result"})) {
  coroutine_failures_total.with({});
  open_connections.with({});
}

std::string Metrics::render() {
  auto& failures = coroutine_failures_total.with({});
  failures.inc(static_cast<double>(g_coroutine_failures.load()) - failures.value());
  return registry.render();
}

}  // namespace va::metrics
