#include "core/errors.hpp"

#include <stdexcept>

namespace va {
namespace {
class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "vllm-autoscaler"; }
  std::string message(int ev) const override { return std::string(va::name(errc(ev))); }
};
}  // namespace

const boost::system::error_category& va_category() noexcept {
  static const Category c;
  return c;
}

std::string_view name(errc e) noexcept {
  switch (e) {
    case errc::ok:
      return "ok";
    case errc::unauthorized:
      return "unauthorized";
    case errc::unknown_model:
      return "unknown_model";
    case errc::not_found:
      return "not_found";
    case errc::bad_request:
      return "bad_request";
    case errc::header_timeout:
      return "header_timeout";
    case errc::body_too_large:
      return "body_too_large";
    case errc::header_too_large:
      return "header_too_large";
    case errc::queue_full:
      return "queue_full";
    case errc::wake_timeout:
      return "wake_timeout";
    case errc::backend_failed:
      return "backend_failed";
    case errc::shutting_down:
      return "shutting_down";
    case errc::upstream_failed:
      return "upstream_failed";
    case errc::upstream_timeout:
      return "upstream_timeout";
    case errc::scaler_error:
      return "scaler_error";
    case errc::scaler_unavailable:
      return "scaler_unavailable";
    case errc::client_gone:
      return "client_gone";
  }
  return "unknown";
}

void throw_exception_from_error(const Failure& f, const boost::source_location&) {
  throw std::runtime_error(std::string(name(f.code)) + ": " + f.message);
}

}  // namespace va
