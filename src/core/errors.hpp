#pragma once
// Our own error codes. Each value doubles as a metric label (`name(errc)`), and
// http/errors.cpp is the one place that maps them to HTTP status codes.
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>
#include <string>
#include <string_view>
#include <type_traits>

namespace va {

enum class errc {
  ok = 0,
  unauthorized,        // 401: missing or wrong API key
  unknown_model,       // 404: the body names a model no backend serves
  not_found,           // 404: path not exposed
  bad_request,         // 400: malformed HTTP or body
  header_timeout,      // 408
  body_too_large,      // 413
  header_too_large,    // 431
  queue_full,          // 503: max_pending or max_pending_bytes reached
  wake_timeout,        // 503: held longer than wake_timeout
  backend_failed,      // 503: the backend failed to start (exit status, pod reason)
  shutting_down,       // 503
  upstream_failed,     // 502: upstream broke after the request was sent
  upstream_timeout,    // 504
  scaler_error,        // the scaler's call failed for good (API refusal, spawn error)
  scaler_unavailable,  // the scaler's API is down, overloaded or slow: worth retrying later
  client_gone,         // the client disconnected
};

const boost::system::error_category& va_category() noexcept;
inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), va_category()};
}
// snake_case name, used as metric label and in logs.
std::string_view name(errc e) noexcept;

// An error with a human-readable reason, for errors users must understand ("process exited
// with status 3: CUDA out of memory").
struct Failure {
  errc code = errc::ok;
  std::string message;
};
[[noreturn]] void throw_exception_from_error(const Failure& f, const boost::source_location& loc);

template <class T>
using outcome = boost::system::result<T, Failure>;

inline outcome<void> fail(errc code, std::string message) {
  return Failure{code, std::move(message)};
}

}  // namespace va

template <>
struct boost::system::is_error_code_enum<va::errc> : std::true_type {};
