#include "k8s/reflector.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "core/backoff.hpp"
#include "core/log.hpp"
#include "k8s/objects.hpp"
#include "k8s/watch.hpp"

namespace va::k8s {
namespace {

namespace json = boost::json;
using namespace net::experimental::awaitable_operators;

}  // namespace

Reflector::Reflector(Settings settings, Client& client, Executor ex, Callbacks callbacks)
    : settings_(std::move(settings)),
      client_(client),
      ex_(ex),
      callbacks_(std::move(callbacks)),
      stop_(ex, Clock::time_point::max()),
      rng_(std::random_device{}()) {}

void Reflector::stop() {
  stopping_ = true;
  stop_.expires_at(Clock::time_point::min());  // ends the request or pause under way
}

void Reflector::clear_error() {
  error_.clear();
  error_status_ = 0;
  error_verb_ = {};
}

void Reflector::notify() const {
  if (callbacks_.changed) {
    callbacks_.changed();
  }
}

task<void> Reflector::pause(std::chrono::milliseconds d) {
  Timer t(ex_, d);
  co_await (t.async_wait(use_nothrow_task) || stop_.async_wait(use_nothrow_task));
}

task<void> Reflector::run() {
  int failures = 0;
  while (!stopping_) {
    // Not `?:` with a co_await in each arm: GCC 12 evaluates (and destroys) both.
    outcome<void> step;
    const bool listing = rv_.empty();
    if (listing) {
      step = co_await list();
    } else {
      step = co_await watch();
    }
    if (stopping_) {
      break;
    }
    if (step) {
      failures = 0;
      clear_error();
      continue;  // listed, or a watch that ended normally (timeoutSeconds): watch on
    }
    error_ = step.error().message;
    error_verb_ = listing ? "list" : "watch";
    ++failures;
    const auto wait = jittered(backoff(failures, 500ms, settings_.timing.backoff_max), rng_);
    log::warn("kubernetes watch failed; retrying", {{settings_.log_key, settings_.log_value},
                                                    {"what", settings_.what},
                                                    {"error", error_},
                                                    {"retry_in_ms", wait.count()}});
    notify();  // the owner now reports the error
    co_await pause(wait);
  }
}

task<outcome<void>> Reflector::list() {
  const std::string target = settings_.path + "?" + settings_.query;
  error_status_ = 0;
  if (callbacks_.listing) {
    callbacks_.listing();
  }
  auto got =
      co_await (client_.request(http::verb::get, target) || stop_.async_wait(use_nothrow_task));
  if (got.index() == 1) {
    co_return outcome<void>{};  // stopping
  }
  auto& res = std::get<0>(got);
  if (!res) {
    co_return res.error();
  }
  if (res->status != 200) {
    error_status_ = res->status;
    co_return api_failure(http::verb::get, target, *res);
  }
  error_code ec;
  auto v = json::parse(res->body, ec);
  auto* list = v.if_object();
  const auto* items = list_of(list, "items");
  const auto rv = text(child(list, "metadata"), "resourceVersion");
  if (ec || !items || rv.empty()) {
    co_return Failure{errc::scaler_unavailable,
                      "GET " + target + ": not a list with a resourceVersion"};
  }
  items_.clear();
  for (const auto& item : *items) {
    if (const auto* o = item.if_object()) {
      items_[text(child(o, "metadata"), "name")] = *o;
    }
  }
  rv_ = rv;
  synced_ = true;
  ++lists_;
  clear_error();
  if (callbacks_.listed) {
    callbacks_.listed();
  }
  log::info("kubernetes list", {{settings_.log_key, settings_.log_value},
                                {"what", settings_.what},
                                {"items", items_.size()},
                                {"resource_version", rv},
                                {"lists", lists_}});
  notify();
  co_return outcome<void>{};
}

task<outcome<void>> Reflector::watch() {
  // The server ends the watch cleanly at timeoutSeconds; one still open `grace` later is dead.
  std::uniform_int_distribution<long> timeout(settings_.timing.timeout_min.count(),
                                              settings_.timing.timeout_max.count());
  const std::chrono::seconds asked(timeout(rng_));
  std::string target = settings_.path + "?" + settings_.query;
  target.append("&watch=1&allowWatchBookmarks=true&resourceVersion=")
      .append(boost::urls::encode(rv_, boost::urls::unreserved_chars))
      .append("&timeoutSeconds=")
      .append(std::to_string(asked.count()));
  error_status_ = 0;
  bool expired = false;
  std::string error;
  int events = 0;
  const auto began = Clock::now();
  auto on_event = [this, &expired, &error, &events](WatchEvent&& e) {
    ++events;
    if (e.type == WatchEvent::Type::error) {
      expired = is_expired(e);
      error_status_ = static_cast<unsigned>(std::max(e.error_code, 0));
      error = "watch " + settings_.what + ": " + std::to_string(e.error_code) + " " +
              e.error_reason + ": " + e.error_message;
      return false;
    }
    apply(e);
    return true;
  };
  auto got = co_await (client_.watch(target, asked + settings_.timing.grace, on_event) ||
                       stop_.async_wait(use_nothrow_task));
  if (got.index() == 1) {
    co_return outcome<void>{};  // stopping
  }
  auto& res = std::get<0>(got);
  if (expired || (res && is_expired_response(*res))) {
    log::info("kubernetes watch expired; listing again", {{settings_.log_key, settings_.log_value},
                                                          {"what", settings_.what},
                                                          {"resource_version", rv_}});
    rv_.clear();
    error_status_ = 0;
    co_return outcome<void>{};
  }
  if (!error.empty()) {
    co_return Failure{errc::scaler_unavailable, error};
  }
  if (!res) {
    co_return res.error();
  }
  if (res->status != 200) {
    error_status_ = res->status;
    co_return api_failure(http::verb::get, target, *res);
  }
  if (events == 0 && Clock::now() - began < 1s) {
    // Something between us and the API ends every watch at once: back off instead of spinning.
    co_return Failure{errc::scaler_unavailable, "watch " + settings_.what + " ended at once"};
  }
  co_return outcome<void>{};
}

void Reflector::apply(WatchEvent& e) {
  if (!e.resource_version.empty()) {
    rv_ = e.resource_version;
  }
  // An event, even a bookmark: the watch works again.
  const bool recovered = !error_.empty();
  clear_error();
  if (e.type == WatchEvent::Type::bookmark) {
    if (recovered) {
      notify();
    }
    return;
  }
  const auto name = text(child(&e.object, "metadata"), "name");
  if (e.type == WatchEvent::Type::deleted) {
    items_.erase(name);
  } else {
    items_[name] = std::move(e.object);
  }
  if (callbacks_.applied) {
    callbacks_.applied(e);
  }
  notify();
}

}  // namespace va::k8s
