#pragma once
// One public client connection (docs/life-of-a-request.md): parse with limits, auth, route,
// hold/wake, forward, account. A session is one coroutine; its state lives in its frame.
#include <atomic>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "core/deadline.hpp"
#include "core/net.hpp"
#include "http/connections.hpp"
#include "http/router.hpp"
#include "metrics/metrics.hpp"

namespace va::front {

// What public sessions share. Owned by App; outlives every session.
struct Frontend {
  const config::Limits& limits;
  const std::vector<std::string>& api_keys;
  const Router& router;
  metrics::Metrics& metrics;
  std::atomic<bool> shutting_down{false};
  Connections connections{};
  std::atomic<std::size_t> requests_active{0};  // requests between head and last byte
};

task<void> serve_public(Socket socket, Frontend& fe);

// Writes `res` (within 30 s, by the connection's `deadline`) and, when it says close, shuts the
// connection down gracefully.
task<void> send(Socket& socket, MovingDeadline& deadline, http::response<http::string_body> res);

}  // namespace va::front
