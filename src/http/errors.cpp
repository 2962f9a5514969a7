#include "http/errors.hpp"

#include <boost/json.hpp>

namespace va::front {
namespace {
std::string_view type_for(unsigned status) {
  switch (status) {
    case 400:
      return "BadRequestError";
    case 401:
      return "AuthenticationError";
    case 404:
      return "NotFoundError";
    case 408:
      return "RequestTimeoutError";
    case 409:
      return "ConflictError";
    case 413:
      return "RequestTooLargeError";
    case 431:
      return "RequestHeaderFieldsTooLargeError";
    case 502:
      return "BadGatewayError";
    case 503:
      return "ServiceUnavailableError";
    case 504:
      return "GatewayTimeoutError";
    default:
      return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

std::string_view retry_after(std::string_view reason) {
  if (reason == "backend_failed") {
    return "10";
  }
  if (reason == "wake_timeout") {
    return "5";
  }
  return "1";
}
}  // namespace

unsigned status_for(errc e) {
  switch (e) {
    case errc::ok:
      return 200;
    case errc::unauthorized:
      return 401;
    case errc::unknown_model:
    case errc::not_found:
      return 404;
    case errc::bad_request:
      return 400;
    case errc::header_timeout:
      return 408;
    case errc::body_too_large:
      return 413;
    case errc::header_too_large:
      return 431;
    case errc::queue_full:
    case errc::wake_timeout:
    case errc::backend_failed:
    case errc::shutting_down:
    case errc::scaler_error:
    case errc::scaler_unavailable:
      return 503;
    case errc::upstream_failed:
    case errc::client_gone:
      return 502;
    case errc::upstream_timeout:
      return 504;
  }
  return 500;
}

Response json_response(unsigned status, std::string body, bool keep_alive, unsigned version) {
  Response res{static_cast<http::status>(status), version};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::server, "vllm-autoscaler");
  res.body() = std::move(body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

Response error_response(unsigned status, std::string_view message, bool keep_alive,
                        unsigned version) {
  boost::json::object err;
  err["message"] = boost::json::string_view(message.data(), message.size());
  err["type"] = type_for(status);
  err["param"] = nullptr;
  err["code"] = status;
  auto res = json_response(status, boost::json::serialize(boost::json::object{{"error", err}}),
                           keep_alive, version);
  if (status == 503) {
    res.set(http::field::retry_after, "1");
  }
  return res;
}

Response error_response(const Failure& f, bool keep_alive, unsigned version) {
  auto res = error_response(status_for(f.code), f.message, keep_alive, version);
  if (res.result_int() == 503) {
    res.set(http::field::retry_after, retry_after(name(f.code)));
  }
  return res;
}

}  // namespace va::front
