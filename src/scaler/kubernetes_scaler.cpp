#include "scaler/kubernetes_scaler.hpp"

#include <algorithm>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "core/backoff.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"
#include "k8s/events.hpp"
#include "k8s/objects.hpp"
#include "k8s/watch.hpp"

namespace va::scaler {
namespace {

namespace json = boost::json;
using namespace net::experimental::awaitable_operators;
using k8s::child;
using k8s::list_of;
using k8s::number;
using k8s::text;

std::string query_escape(std::string_view s) {
  return boost::urls::encode(s, boost::urls::unreserved_chars);
}

// What a pod's waiting container says about a wake: these do not go away by waiting.
bool fatal_waiting_reason(std::string_view reason) {
  for (std::string_view r : {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
                             "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
                             "CreateContainerError", "RunContainerError"}) {
    if (reason == r) {
      return true;
    }
  }
  return false;
}

// 429, 409 (someone else's write in between), 5xx and transport errors are worth another try:
// answers here, within retry_for; transport errors by the caller.
bool retryable(const outcome<k8s::Response>& r) {
  return !r || r->status == 429 || r->status == 409 || r->status >= 500;
}

k8s::Reflector::Settings watch_settings(const KubernetesScaler::Settings& s, std::string what,
                                        std::string path, std::string query) {
  return {.what = std::move(what),
          .path = std::move(path),
          .query = std::move(query),
          .log_key = "backend",
          .log_value = s.backend,
          .timing = s.watch};
}

std::string deployment_what(const KubernetesScaler::Settings& s) {
  std::string out = "deployment ";
  out.append(s.namespace_).append("/").append(s.deployment);
  return out;
}

// The setup problem until the first check has answered.
std::string unchecked(const KubernetesScaler::Settings& s) {
  std::string out = "the scaler's permissions on deployment ";
  out.append(s.namespace_).append("/").append(s.deployment).append(" are not checked yet");
  return out;
}

}  // namespace

KubernetesScaler::KubernetesScaler(Settings settings, Executor ex)
    : settings_(std::move(settings)),
      ex_(ex),
      client_(settings_.cluster, ex, settings_.client),
      scale_path_("/apis/apps/v1/namespaces/" + settings_.namespace_ + "/deployments/" +
                  settings_.deployment + "/scale"),
      deployment_(
          watch_settings(settings_, deployment_what(settings_),
                         "/apis/apps/v1/namespaces/" + settings_.namespace_ + "/deployments",
                         "fieldSelector=" + query_escape("metadata.name=" + settings_.deployment)),
          client_, ex,
          {.listing = [this] { patches_at_list_ = patches_; },
           .listed = [this] { deployment_listed(); },
           .applied = [this](const k8s::WatchEvent& e) { deployment_event(e); },
           .changed = [this] { changed(); }}),
      pods_(watch_settings(settings_, "pods of " + deployment_what(settings_),
                           "/api/v1/namespaces/" + settings_.namespace_ + "/pods", ""),
            client_, ex, {.changed = [this] { changed(); }}),
      checks_({.key = "backend",
               .who = settings_.backend,
               .unchecked = unchecked(settings_),
               .all_well = "setup checked: the scaler may do all it needs",
               .interval = settings_.check_interval,
               .backoff_max = settings_.watch.backoff_max}),
      stop_(ex, Clock::time_point::max()),
      idle_(ex, Clock::time_point::max()),
      rng_(std::random_device{}()) {
  set_setup_problems(checks_.problems());
}

KubernetesScaler::~KubernetesScaler() = default;

void KubernetesScaler::start() {
  if (started_ || stopping_) {
    return;
  }
  started_ = true;
  running_ = 3;
  spawn(ex_, run_deployment(), "kubernetes deployment watch");
  spawn(ex_, run_pods(), "kubernetes pod watch");
  spawn(ex_, run_checks(), "kubernetes setup checks");
}

task<void> KubernetesScaler::shutdown() {
  stopping_ = true;
  stop_.expires_at(Clock::time_point::min());  // ends every pause()
  deployment_.stop();
  pods_.stop();
  if (running_ > 0) {
    co_await idle_.async_wait(use_nothrow);
  }
}

void KubernetesScaler::loop_done() {
  if (--running_ == 0) {
    idle_.expires_at(Clock::time_point::min());
  }
}

task<void> KubernetesScaler::pause(std::chrono::milliseconds d) {
  Timer t(ex_, d);
  co_await (t.async_wait(use_nothrow_task) || stop_.async_wait(use_nothrow_task));
}

std::chrono::milliseconds KubernetesScaler::backoff(int failures, std::chrono::milliseconds first) {
  return jittered(va::backoff(failures, first, settings_.watch.backoff_max), rng_);
}

// --- the watches ------------------------------------------------------------------------------

task<void> KubernetesScaler::run_deployment() {
  co_await deployment_.run();
  loop_done();
}

task<void> KubernetesScaler::run_pods() {
  // The pods to watch are the Scale's status.selector ("app=vllm,tier=x").
  pods_.set_query("labelSelector=" + query_escape(co_await pod_selector()));
  if (!stopping_) {
    co_await pods_.run();
  }
  loop_done();
}

// A LIST without resourceVersion is read from etcd with quorum: it holds every write answered
// before it was sent, but maybe not a PATCH answered while it was on its way.
void KubernetesScaler::deployment_listed() {
  if (patches_ == patches_at_list_ ||
      text(child(deployment(), "metadata"), "resourceVersion") == pending_rv_) {
    pending_rv_.clear();
  }
  recent_rvs_.clear();
}

void KubernetesScaler::deployment_event(const k8s::WatchEvent& e) {
  if (!pending_rv_.empty() && e.resource_version == pending_rv_) {
    pending_rv_.clear();  // the cache has caught up with our PATCH
  }
  // The event may come before the PATCH's own answer: remember the last few.
  recent_rvs_.push_back(e.resource_version);
  if (recent_rvs_.size() > 16) {
    recent_rvs_.pop_front();
  }
}

task<std::string> KubernetesScaler::pod_selector() {
  for (int failures = 1; !stopping_; ++failures) {
    auto got = co_await (client_.request(http::verb::get, scale_path_) ||
                         stop_.async_wait(use_nothrow_task));
    if (got.index() == 1) {
      break;  // stopping
    }
    auto& r = std::get<0>(got);
    if (r && r->status == 200) {
      ++patches_;
      error_code ec;
      const auto v = json::parse(r->body, ec);
      auto selector = text(child(v.if_object(), "status"), "selector");
      if (!ec && !selector.empty()) {
        selector_error_.clear();
        co_return selector;
      }
      selector_error_ = "GET " + scale_path_ + ": no status.selector in the answer";
    } else {
      selector_error_ =
          r ? k8s::api_failure(http::verb::get, scale_path_, *r).message : r.error().message;
    }
    log::warn("kubernetes: cannot read the pod selector; retrying",
              {{"backend", settings_.backend}, {"error", selector_error_}});
    co_await pause(backoff(failures));
  }
  co_return std::string();
}

// --- what the Backend asks --------------------------------------------------------------------

const boost::json::object* KubernetesScaler::deployment() const {
  auto it = deployment_.items().find(settings_.deployment);
  return it == deployment_.items().end() ? nullptr : &it->second;
}

task<outcome<Observed>> KubernetesScaler::observe() {
  start();
  // The first answer waits a little for the first list, so that a running backend is adopted at
  // start rather than a second later.
  for (int i = 0; i < 150 && !deployment_.synced() && deployment_.error().empty() && !stopping_;
       ++i) {
    co_await pause(20ms);
  }
  const auto& what = deployment_.settings().what;
  if (!deployment_.synced()) {
    co_return Failure{errc::scaler_unavailable, deployment_.error().empty()
                                                    ? "waiting for the first list of " + what
                                                    : deployment_.error()};
  }
  const auto* d = deployment();
  if (!d) {
    co_return Failure{errc::scaler_error, what + " not found"};
  }
  if (!pending_rv_.empty() && Clock::now() - pending_since_ > std::chrono::seconds(30)) {
    log::warn("kubernetes watch did not deliver our scale within 30 s; trusting it as it is",
              {{"backend", settings_.backend}, {"resource_version", pending_rv_}});
    pending_rv_.clear();
  }
  const auto* meta = child(d, "metadata");
  const auto* spec = child(d, "spec");
  const auto* status = child(d, "status");
  Observed o;
  o.desired = static_cast<int>(number(spec, "replicas"));
  const bool caught_up = number(status, "observedGeneration") >= number(meta, "generation");
  o.ready = static_cast<int>(number(status, "readyReplicas"));
  if (!pending_rv_.empty()) {
    o.desired = pending_replicas_;  // the cache is older than our PATCH
    o.ready = waking_ ? 0 : o.ready;
  } else if (waking_ && !caught_up) {
    o.ready = 0;  // the controllers have not seen the scale-up yet
  }
  if (o.ready > 0) {
    waking_ = false;
  }
  if (!o.ready && !deployment_.error().empty()) {
    o.reason = deployment_.error();
  }
  co_return judge_pods(std::move(o));
}

Observed KubernetesScaler::judge_pods(Observed o) const {
  for (const auto& [name, pod] : pods_.items()) {
    const auto* meta = child(&pod, "metadata");
    if (meta && meta->contains("deletionTimestamp")) {
      continue;  // terminating: its successor decides
    }
    const auto* status = child(&pod, "status");
    for (std::string_view key : {"initContainerStatuses", "containerStatuses"}) {
      const auto* statuses = list_of(status, key);
      if (!statuses) {
        continue;
      }
      for (const auto& cs : *statuses) {
        const auto* c = cs.if_object();
        const auto* waiting = child(child(c, "state"), "waiting");
        const auto reason = text(waiting, "reason");
        if (!fatal_waiting_reason(reason)) {
          continue;
        }
        o.fatal = true;
        o.reason = "pod " + name + ": container " + text(c, "name") + ": " + reason;
        if (const auto message = text(waiting, "message"); !message.empty()) {
          o.reason += ": " + message;
        }
        const auto* last = child(child(c, "lastState"), "terminated");
        if (last) {
          o.reason += " (last exit code " + std::to_string(number(last, "exitCode"));
          if (const auto message = text(last, "message"); !message.empty()) {
            o.reason += ": " + message;
          }
          o.reason += ")";
        }
        return o;
      }
    }
    if (const auto* conditions = list_of(status, "conditions")) {
      for (const auto& cv : *conditions) {
        const auto* c = cv.if_object();
        if (text(c, "type") == "PodScheduled" && text(c, "status") == "False" &&
            text(c, "reason") == "Unschedulable") {
          o.reason = "pod " + name + " is unschedulable: " + text(c, "message");
        }
      }
    }
  }
  const auto& pods_error = pods_.error().empty() ? selector_error_ : pods_.error();
  if (o.reason.empty() && !pods_error.empty() && o.ready == 0) {
    o.reason = pods_error;
  }
  return o;
}

task<outcome<void>> KubernetesScaler::scale_to(int replicas, std::string cause) {
  start();
  const auto* d = deployment();
  const int from = pending_rv_.empty()
                       ? (d ? static_cast<int>(number(child(d, "spec"), "replicas")) : -1)
                       : pending_replicas_;
  const std::string body = "{\"spec\":{\"replicas\":" + std::to_string(replicas) + "}}";
  const auto deadline = Clock::now() + settings_.retry_for;
  for (int attempt = 1;; ++attempt) {
    auto r = co_await client_.request(http::verb::patch, scale_path_, body,
                                      "application/merge-patch+json");
    if (r && r->status == 200) {
      ++patches_;
      error_code ec;
      const auto v = json::parse(r->body, ec);
      const auto rv = text(child(v.if_object(), "metadata"), "resourceVersion");
      // Wait for the watch to deliver this resourceVersion, unless it already has (or the
      // PATCH changed nothing and the cached Deployment is that version).
      const auto* now_cached = deployment();
      if (!rv.empty() && rv != text(child(now_cached, "metadata"), "resourceVersion") &&
          std::find(recent_rvs_.begin(), recent_rvs_.end(), rv) == recent_rvs_.end()) {
        pending_rv_ = rv;
        pending_replicas_ = replicas;
        pending_since_ = Clock::now();
      }
      waking_ = replicas > 0 && (from <= 0 || waking_);
      log::info("kubernetes scale", {{"backend", settings_.backend},
                                     {"deployment", deployment_.settings().what},
                                     {"from", from},
                                     {"to", replicas},
                                     {"cause", cause},
                                     {"resource_version", rv}});
      if (from != replicas) {
        co_await record_event(from, replicas, cause);
      }
      changed();
      co_return outcome<void>{};
    }
    auto failure = r ? k8s::api_failure(http::verb::patch, scale_path_, *r) : r.error();
    if (!retryable(r)) {
      co_return failure;  // 403, 404, 422: waiting changes nothing
    }
    failure.code = errc::scaler_unavailable;
    if (!r) {
      // Down or too slow: the Backend retries with its backoff and reports the error meanwhile.
      co_return failure;
    }
    auto wait = backoff(attempt, 100ms);
    if (!r->retry_after.empty()) {
      const int seconds = std::atoi(r->retry_after.c_str());
      wait = std::clamp<std::chrono::milliseconds>(std::chrono::seconds(seconds), 100ms, 10s);
    }
    if (stopping_ || Clock::now() + wait > deadline) {
      co_return failure;
    }
    log::warn("kubernetes scale failed; retrying", {{"backend", settings_.backend},
                                                    {"error", failure.message},
                                                    {"retry_in_ms", wait.count()}});
    co_await pause(wait);
  }
}

task<void> KubernetesScaler::record_event(int from, int to, const std::string& cause) {
  k8s::EventSpec event{.namespace_ = settings_.namespace_,
                       .involved = {{"apiVersion", "apps/v1"},
                                    {"kind", "Deployment"},
                                    {"namespace", settings_.namespace_},
                                    {"name", settings_.deployment}},
                       .reason = to == 0     ? "ScaledToZero"
                                 : to < from ? "ScaledDown"
                                             : "ScaledUp",
                       .message = to == 0 || to < from ? "Scaled down" : "Scaled up"};
  if (const auto uid = k8s::text(k8s::child(deployment(), "metadata"), "uid"); !uid.empty()) {
    event.involved["uid"] = uid;
  }
  event.message += from >= 0 ? " from " + std::to_string(from) : std::string();
  event.message += " to " + std::to_string(to) + (to == 1 ? " replica" : " replicas");
  event.message += cause.empty() ? "" : ": " + cause;
  if (auto r = co_await k8s::record_event(client_, event); !r) {
    // The scale happened; a missing record of it is worth a log line, not a failed wake.
    log::warn("kubernetes: could not record the scale event",
              {{"backend", settings_.backend}, {"error", r.error().message}});
  }
}

}  // namespace va::scaler
