#include "core/spawn.hpp"

#include <exception>

#include "core/log.hpp"

namespace va {

std::atomic<unsigned long> g_coroutine_failures{0};

void log_coroutine_failure(std::string_view what, std::exception_ptr e) {
  ++g_coroutine_failures;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    log::error("coroutine failed", {{"coroutine", what}, {"error", ex.what()}});
  } catch (...) {
    log::error("coroutine failed", {{"coroutine", what}, {"error", "unknown exception"}});
  }
}

}  // namespace va
