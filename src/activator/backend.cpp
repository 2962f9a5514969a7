#include "activator/backend.hpp"

#include <boost/json.hpp>

#include "core/duration.hpp"
#include "core/socket.hpp"
#include "k8s/endpoint_slices.hpp"
#include "upstream/probe.hpp"

namespace va::activator {
namespace {

using namespace net::experimental::awaitable_operators;

// GET a path on the pool's target, bounded by twice the probe interval (1–5 s), with the backend's
// upstream_headers (an API key vLLM asks for) and health.headers.
Controller::Probe default_probe(Executor ex, upstream::Pool& pool, const config::Health& health) {
  std::map<std::string, std::string> headers(pool.target().headers.begin(),
                                             pool.target().headers.end());
  for (const auto& [name, value] : health.headers) {
    headers[name] = value;
  }
  return [ex, &pool, &health, headers](const std::string& path) -> task<upstream::ProbeResult> {
    const auto timeout = std::clamp<std::chrono::milliseconds>(health.interval * 2, 1s, 5s);
    co_return co_await upstream::probe(ex, pool.target(), path, headers, timeout);
  };
}

}  // namespace

Lease& Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    if (backend_ != nullptr) {
      backend_->end_request();
    }
    backend_ = std::exchange(o.backend_, nullptr);
  }
  return *this;
}

Lease::~Lease() {
  if (backend_ != nullptr) {
    backend_->end_request();
  }
}

Backend::Backend(Settings settings, Executor ex, const ScalerFactory& make_scaler,
                 upstream::Pool& pool, metrics::Metrics& metrics, PendingBudget& budget,
                 Seams seams)
    : shared_(std::move(settings), metrics, seams.time ? *seams.time : steady_time()),
      pool_(pool),
      pods_(routing::Pods::Settings{
          .policy = shared_.settings.routing,
          .pool = pool.settings(),
          .bound = 1.25,
          .avoid_for = std::max<Clock::duration>(2s, pool.settings().connect_timeout)}),
      budget_(budget) {
  auto probe =
      seams.probe ? std::move(seams.probe) : default_probe(ex, pool_, shared_.settings.health);
  controller_ = std::make_unique<Controller>(shared_, ex, make_scaler(ex), std::move(probe), pool_);
  pods_metric_ = metrics.pod_in_flight_requests.add([this](metrics::SampledGauge::Samples& out) {
    for (const auto& p : pods_.status()) {
      const auto& pod = p.as_object();
      out.push_back({{name(), std::string(pod.at("pod").as_string())},
                     pod.at("in_flight").to_number<double>()});
    }
  });
}

Backend::~Backend() { shared_.metrics.pod_in_flight_requests.remove(pods_metric_); }

// --- the request side -------------------------------------------------------------------------

task<outcome<Acquired>> Backend::acquire(std::size_t body_bytes, Socket& client) {
  auto ex = co_await net::this_coro::executor;
  std::shared_ptr<Waiter> w;
  {
    std::lock_guard lock(shared_.mu);
    if (shared_.shutting_down) {
      co_return Failure{errc::shutting_down, "the proxy is shutting down"};
    }
    if (auto lease = lease_if_ready_locked()) {
      co_return Acquired{std::move(*lease), std::nullopt};
    }
    if (shared_.queue.size() >= shared_.settings.max_pending) {
      co_return Failure{errc::queue_full, "backend '" + name() + "' is waking and already holds " +
                                              std::to_string(shared_.settings.max_pending) +
                                              " requests (max_pending)"};
    }
    if (!budget_.try_add(body_bytes)) {
      co_return Failure{errc::queue_full, "held request bodies reached limits.max_pending_bytes"};
    }
    w = std::make_shared<Waiter>(ex);
    shared_.queue.push(w);
    if (shared_.state == State::asleep || shared_.state == State::failed) {
      shared_.set_state(State::waking, "request");
    }
    shared_.update_gauges();
  }
  controller_->poke();

  auto& time = shared_.time;
  const auto start = time.now();
  const bool client_left = co_await wait_held(*w, start + shared_.settings.wake_timeout, client);
  time.disarm(w->timer);
  budget_.sub(body_bytes);

  std::lock_guard lock(shared_.mu);
  if (!w->done) {
    shared_.queue.erase(w);
    shared_.update_gauges();
    if (client_left) {
      co_return Failure{errc::client_gone, "client disconnected while held"};
    }
    const auto& last = shared_.last_error;
    co_return Failure{errc::wake_timeout, "backend '" + name() + "' did not become ready within " +
                                              format_duration(shared_.settings.wake_timeout) +
                                              (last.empty() ? "" : " (last: " + last + ")")};
  }
  if (!w->granted) {
    co_return w->failure;
  }
  co_return Acquired{Lease(this),
                     std::chrono::duration<double, std::milli>(time.now() - start).count()};
}

task<bool> Backend::wait_held(Waiter& w, Clock::time_point deadline, Socket& client) {
  shared_.time.arm(w.timer, deadline);
  bool watch_client = true;
  for (;;) {
    {
      std::lock_guard lock(shared_.mu);
      if (w.done) {
        co_return false;
      }
    }
    if (shared_.time.now() >= deadline) {
      co_return false;
    }
    if (watch_client) {
      auto r = co_await (w.timer.async_wait(use_nothrow_task) ||
                         client.async_wait(Socket::wait_read, use_nothrow_task));
      if (r.index() == 1) {
        if (peek_peer(client.native_handle()) == Peer::closed) {
          co_return true;
        }
        watch_client = false;  // pipelined bytes: only the timer is left to wait on
      }
    } else {
      co_await w.timer.async_wait(use_nothrow);
    }
  }
}

std::optional<Lease> Backend::try_acquire() {
  std::lock_guard lock(shared_.mu);
  if (shared_.shutting_down) {
    return std::nullopt;
  }
  return lease_if_ready_locked();
}

std::optional<Lease> Backend::lease_if_ready_locked() {
  // Behind requests held for room (Shared::room()), in their order.
  if (shared_.state != State::ready || shared_.suspect || shared_.fenced ||
      !shared_.queue.empty() || shared_.activity.in_flight() >= shared_.room()) {
    return std::nullopt;
  }
  shared_.activity.begin();
  shared_.update_gauges();
  return Lease(this);
}

std::optional<std::uint64_t> Backend::route_key(std::string_view body) const {
  if (pods_.policy() != routing::Policy::prefix) {
    return std::nullopt;
  }
  return routing::prefix_key(body, shared_.settings.prefix_bytes);
}

Backend::Route Backend::route(std::optional<std::uint64_t> key) {
  auto pod = pods_.pick(key);
  if (!pod) {
    return Route{&pool_, std::nullopt};
  }
  auto* pool = &pod->pool();
  return Route{pool, std::move(pod)};
}

void Backend::end_request() {
  bool poke = false;
  {
    std::lock_guard lock(shared_.mu);
    shared_.activity.end(shared_.time.now());
    if (shared_.state == State::ready && !shared_.queue.empty()) {
      shared_.release_waiters();  // held for room: one more fits now
    }
    const auto& a = shared_.activity;
    poke =
        a.in_flight() == 0 && (shared_.state != State::ready ||
                               a.last() + shared_.settings.idle_timeout < shared_.ready_wakes_at);
    shared_.update_gauges();
  }
  if (poke) {
    controller_->poke();
  }
}

void Backend::suspect() {
  {
    std::lock_guard lock(shared_.mu);
    shared_.suspect = true;
  }
  controller_->poke();
}

void Backend::wake(std::string_view cause) {
  {
    std::lock_guard lock(shared_.mu);
    const auto s = shared_.state;
    if (s == State::asleep || s == State::failed || s == State::stopping) {
      shared_.set_state(State::waking, cause);
    }
  }
  controller_->poke();
}

std::optional<std::string> Backend::sleep(std::string_view cause) {
  {
    std::lock_guard lock(shared_.mu);
    if (!shared_.activity.idle(shared_.queue.size())) {
      std::string why = "backend '";
      return why.append(name()).append("' has requests in flight");
    }
    if (peers_ != nullptr && shared_.state == State::ready) {
      if (!peers_->leading()) {
        std::string why = "scale-downs are agreed by the proxy replicas: ask the leader";
        if (const auto leader = peers_->leader(); !leader.empty()) {
          why.append(" (").append(leader).append(")");
        }
        return why;
      }
      shared_.sleep_asked = true;  // proposed to the replicas by the controller
    } else if (shared_.state != State::stopping) {
      shared_.set_state(State::stopping, cause);
      shared_.metrics.scale_downs_total.with({name(), "admin"}).inc();
    }
  }
  controller_->poke();
  return std::nullopt;
}

std::size_t Backend::in_flight() const {
  std::lock_guard lock(shared_.mu);
  return shared_.activity.in_flight();
}

std::size_t Backend::pending() const {
  std::lock_guard lock(shared_.mu);
  return shared_.queue.size();
}

std::vector<std::string> Backend::reported_models() const {
  std::lock_guard lock(shared_.mu);
  return shared_.reported_models;
}

State Backend::state() const {
  std::lock_guard lock(shared_.mu);
  return shared_.state;
}

Backend::Report Backend::report() const {
  std::lock_guard lock(shared_.mu);
  const auto& a = shared_.activity;
  const bool idle = a.idle(shared_.queue.size());
  return Report{.state = shared_.state,
                .in_flight = a.in_flight(),
                .held = shared_.queue.size(),
                .idle_for = idle ? shared_.time.now() - a.last() : Clock::duration::zero(),
                .fenced = shared_.fenced};
}

void Backend::fence(bool on) {
  {
    std::lock_guard lock(shared_.mu);
    if (shared_.fenced == on || (on && shared_.state != State::ready)) {
      return;
    }
    shared_.fenced = on;
  }
  controller_->poke();  // lifted: the held requests go
}

void Backend::begin_shutdown() {
  std::lock_guard lock(shared_.mu);
  shared_.shutting_down = true;
  shared_.fail_waiters(errc::shutting_down, "the proxy is shutting down");
}

task<void> Backend::shutdown() {
  co_await controller_->shutdown();
  pool_.clear();  // idle upstream connections, and their deadlines' waits, end with the proxy
  pods_.clear_idle();
}

void Backend::account_awake() {
  std::lock_guard lock(shared_.mu);
  shared_.account_awake(shared_.time.now());
}

boost::json::object Backend::status() const {
  auto problems = setup_problems();
  // Read before the lock: the watch has a mutex of its own.
  auto endpoints = endpoints_ ? boost::json::value(endpoints_->status()) : nullptr;
  std::lock_guard lock(shared_.mu);
  const auto& s = shared_;
  const auto now = s.time.now();
  boost::json::object o;
  o["name"] = s.settings.name;
  o["state"] = activator::name(s.state);
  // As the scaler last saw them: a backend asleep can still have replicas (one going away).
  o["replicas"] = s.observed ? s.observed->ready : 0;
  o["desired_replicas"] = s.observed ? s.observed->desired : 0;
  if (const auto& a = s.settings.autoscale) {
    boost::json::object scaling{{"min_replicas", a->min_replicas},
                                {"max_replicas", a->max_replicas},
                                {"target_in_flight", a->target_in_flight}};
    if (const auto& d = s.decision) {
      scaling["panic"] = d->panic;
      scaling["stable_average"] = d->stable_average;
      scaling["panic_average"] = d->panic_average;
      scaling["decided"] = d->replicas;
      scaling["reason"] = d->reason;
    }
    o["autoscale"] = std::move(scaling);
  }
  o["routing"] = s.settings.routing == routing::Policy::prefix ? "prefix" : "least_outstanding";
  o["pods"] = pods_.status();  // empty: through the upstream URL
  o["in_flight"] = s.activity.in_flight();
  o["pending"] = s.queue.size();
  const bool idle = s.activity.idle(s.queue.size());
  o["idle_seconds"] = idle ? to_seconds(now - s.activity.last()) : 0.0;
  if (s.state == State::ready && idle) {
    o["seconds_until_scale_down"] =
        std::max(0.0, to_seconds(s.activity.last() + s.settings.idle_timeout - now));
  } else {
    o["seconds_until_scale_down"] = nullptr;
  }
  if (s.last_wake_seconds) {
    o["last_wake_seconds"] = *s.last_wake_seconds;
  } else {
    o["last_wake_seconds"] = nullptr;
  }
  o["wakes"] = s.wakes;
  if (s.last_error.empty()) {
    o["last_error"] = nullptr;
  } else {
    o["last_error"] = s.last_error;
  }
  boost::json::array list;
  for (auto& p : problems) {
    list.emplace_back(std::move(p));
  }
  o["setup_problems"] = std::move(list);
  if (endpoints_) {
    o["endpoints"] = std::move(endpoints);
  }
  return o;
}

}  // namespace va::activator
