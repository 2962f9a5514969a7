#pragma once
// The one way to start a detached coroutine: an exception that escapes it is logged and counted,
// never lost.
#include <atomic>
#include <string_view>

#include "core/net.hpp"

namespace va {

// Number of detached coroutines that ended with an exception (exported as a metric and
// asserted to stay 0 in tests).
extern std::atomic<unsigned long> g_coroutine_failures;

void log_coroutine_failure(std::string_view what, std::exception_ptr e);

inline void spawn(const Executor& ex, task<void> t, std::string_view what) {
  net::co_spawn(ex, std::move(t), [what](std::exception_ptr e) {
    if (e) {
      log_coroutine_failure(what, e);
    }
  });
}

}  // namespace va
