#pragma once
// The admin port (README.md, "Endpoints"): /healthz, /readyz, /metrics, /status,
// /admin/backends/{name}/…. Keep it off the Ingress. Calls here are never activity and never wake,
// except an explicit POST …/wake.
#include <atomic>
#include <boost/json/object.hpp>
#include <functional>
#include <vector>

#include "activator/backend.hpp"
#include "core/net.hpp"
#include "http/connections.hpp"
#include "metrics/metrics.hpp"

namespace va::admin {

struct Admin {
  metrics::Metrics& metrics;
  std::vector<activator::Backend*> backends;
  // /status's "coordination" (several proxy replicas); unset for a proxy alone.
  std::function<boost::json::object()> coordination;
  // The coordination's setup problems (a reason for /readyz to answer 503); unset for a proxy
  // alone.
  std::function<std::vector<std::string>()> coordination_problems;
  std::atomic<bool> ready{false};  // listening with a valid config and not shutting down
  front::Connections connections{};
};

task<void> serve_admin(Socket socket, Admin& admin);

}  // namespace va::admin
