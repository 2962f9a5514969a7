#include "activator/backend.hpp"

#include <boost/json.hpp>

#include "config/duration.hpp"
#include "core/log.hpp"
#include "core/socket.hpp"
#include "core/spawn.hpp"
#include "upstream/probe.hpp"

namespace va::activator {
namespace {

using namespace net::experimental::awaitable_operators;

constexpr State kStates[] = {State::asleep, State::waking, State::ready, State::stopping,
                             State::failed};

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Between retries of a scale call the scaler reported as unavailable: 250 ms doubling to 5 s.
std::chrono::milliseconds retry_backoff(int attempt) {
  return std::min<std::chrono::milliseconds>(250ms * (1 << std::min(attempt - 1, 5)), 5s);
}

}  // namespace

std::string_view name(State s) {
  switch (s) {
    case State::asleep:
      return "asleep";
    case State::waking:
      return "waking";
    case State::ready:
      return "ready";
    case State::stopping:
      return "stopping";
    case State::failed:
      return "failed";
  }
  return "unknown";
}

bool PendingBudget::try_add(std::size_t n) {
  auto used = used_.load();
  do {
    if (used + n > limit_) {
      return false;
    }
  } while (!used_.compare_exchange_weak(used, used + n));
  return true;
}

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

struct Backend::Waiter {
  explicit Waiter(Executor ex) : timer(ex) {}
  Timer timer;        // cancelled (on its own executor) when `done` is set
  bool done = false;  // guarded by Backend::mu_
  bool granted = false;
  Failure failure;
};

Backend::Backend(Settings settings, Executor ex, const ScalerFactory& make_scaler,
                 upstream::Pool& pool, metrics::Metrics& metrics, PendingBudget& budget)
    : settings_(std::move(settings)),
      control_(ex),
      scaler_(make_scaler(control_)),
      pool_(pool),
      metrics_(metrics),
      budget_(budget),
      signal_(control_),
      done_(control_),
      in_flight_gauge_(&metrics.in_flight_requests.with({settings_.name})),
      pending_gauge_(&metrics.pending_requests.with({settings_.name})) {
  scaler_->on_change([this] { poke(); });
  done_.expires_at(Clock::time_point::max());
  std::lock_guard lock(mu_);
  update_gauges_locked();
  metrics_.backend_awake_seconds_total.with({settings_.name});
  for (const char* result : {"success", "failed", "timeout"}) {
    metrics_.wakes_total.with({settings_.name, result});
  }
  metrics_.scale_downs_total.with({settings_.name, "idle"});
  metrics_.client_send_timeouts_total.with({settings_.name});
}

Backend::~Backend() = default;

void Backend::start() { spawn(control_, run(), "backend controller"); }

void Backend::poke() {
  poked_ = true;
  net::post(control_, [this] { signal_.cancel(); });
}

task<void> Backend::wait_poke(std::chrono::milliseconds d) {
  if (poked_.exchange(false) || d <= 0ms) {
    co_return;
  }
  signal_.expires_after(d);
  co_await signal_.async_wait(use_nothrow);
  poked_ = false;
}

// --- the request side -------------------------------------------------------------------------

task<outcome<Acquired>> Backend::acquire(std::size_t body_bytes, Socket& client) {
  auto ex = co_await net::this_coro::executor;
  std::shared_ptr<Waiter> w;
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) {
      co_return Failure{errc::shutting_down, "the proxy is shutting down"};
    }
    if (auto lease = lease_if_ready_locked()) {
      co_return Acquired{std::move(*lease), std::nullopt};
    }
    if (pending_.size() >= settings_.max_pending) {
      co_return Failure{errc::queue_full,
                        "backend '" + settings_.name + "' is waking and already holds " +
                            std::to_string(settings_.max_pending) + " requests (max_pending)"};
    }
    if (!budget_.try_add(body_bytes)) {
      co_return Failure{errc::queue_full, "held request bodies reached limits.max_pending_bytes"};
    }
    w = std::make_shared<Waiter>(ex);
    pending_.push_back(w);
    if (state_ == State::asleep || state_ == State::failed) {
      set_state_locked(State::waking, "request");
    }
    update_gauges_locked();
  }
  poke();

  const auto start = Clock::now();
  const auto deadline = start + settings_.wake_timeout;
  w->timer.expires_at(deadline);
  bool watch_client = true;
  bool client_left = false;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (w->done) {
        break;
      }
    }
    if (Clock::now() >= deadline) {
      break;
    }
    if (watch_client) {
      auto r = co_await (w->timer.async_wait(use_nothrow_task) ||
                         client.async_wait(Socket::wait_read, use_nothrow_task));
      if (r.index() == 1) {
        if (peek_peer(client.native_handle()) == Peer::closed) {
          client_left = true;
          break;
        }
        watch_client = false;  // pipelined bytes: only the timer is left to wait on
      }
    } else {
      co_await w->timer.async_wait(use_nothrow);
    }
  }
  budget_.sub(body_bytes);

  std::lock_guard lock(mu_);
  if (!w->done) {
    std::erase(pending_, w);
    update_gauges_locked();
    if (client_left) {
      co_return Failure{errc::client_gone, "client disconnected while held"};
    }
    std::string why = last_error_.empty() ? "" : " (last: " + last_error_ + ")";
    co_return Failure{errc::wake_timeout,
                      "backend '" + settings_.name + "' did not become ready within " +
                          config::format_duration(settings_.wake_timeout) + why};
  }
  if (!w->granted) {
    co_return w->failure;
  }
  co_return Acquired{Lease(this),
                     std::chrono::duration<double, std::milli>(Clock::now() - start).count()};
}

std::optional<Lease> Backend::try_acquire() {
  std::lock_guard lock(mu_);
  if (shutting_down_) {
    return std::nullopt;
  }
  return lease_if_ready_locked();
}

std::optional<Lease> Backend::lease_if_ready_locked() {
  if (state_ != State::ready || suspect_) {
    return std::nullopt;
  }
  ++in_flight_;
  update_gauges_locked();
  return Lease(this);
}

void Backend::end_request() {
  bool idle = false;
  {
    std::lock_guard lock(mu_);
    VA_CHECK(in_flight_ > 0);
    --in_flight_;
    last_activity_ = Clock::now();
    idle = in_flight_ == 0 &&
           (state_ != State::ready || last_activity_ + settings_.idle_timeout < ready_wakes_at_);
    update_gauges_locked();
  }
  if (idle) {
    poke();
  }
}

void Backend::suspect() {
  {
    std::lock_guard lock(mu_);
    suspect_ = true;
  }
  poke();
}

void Backend::wake(std::string_view cause) {
  {
    std::lock_guard lock(mu_);
    if (state_ == State::asleep || state_ == State::failed) {
      set_state_locked(State::waking, cause);
    }
  }
  poke();
}

bool Backend::sleep(std::string_view cause) {
  {
    std::lock_guard lock(mu_);
    if (in_flight_ > 0 || !pending_.empty()) {
      return false;
    }
    if (state_ == State::ready || state_ == State::waking) {
      set_state_locked(State::stopping, cause);
      metrics_.scale_downs_total.with({settings_.name, "admin"}).inc();
    }
  }
  poke();
  return true;
}

std::size_t Backend::in_flight() const {
  std::lock_guard lock(mu_);
  return in_flight_;
}

void Backend::begin_shutdown() {
  std::lock_guard lock(mu_);
  shutting_down_ = true;
  fail_waiters_locked(errc::shutting_down, "the proxy is shutting down");
}

task<void> Backend::shutdown() {
  co_await net::co_spawn(
      control_,
      [this]() -> task<void> {
        stop_requested_ = true;
        signal_.cancel();
        if (!stopped_) {
          co_await done_.async_wait(use_nothrow);
        }
        co_await scaler_->shutdown();
      },
      use_task);
  pool_.clear();  // idle upstream connections, and their deadlines' waits, end with the proxy
}

// --- the controller ---------------------------------------------------------------------------

task<void> Backend::run() {
  try {
    co_await control();
  } catch (const std::exception& e) {
    log::error("backend controller failed", {{"backend", settings_.name}, {"error", e.what()}});
    std::lock_guard lock(mu_);
    fail_waiters_locked(errc::backend_failed, "internal error: " + std::string(e.what()));
  }
  stopped_ = true;
  done_.cancel();
}

task<void> Backend::control() {
  // Adopt what is already running (a proxy restart, someone scaled it up by hand).
  auto observed = co_await scaler_->observe();
  if (observed && observed->ready > 0 && co_await healthy()) {
    std::lock_guard lock(mu_);
    if (state_ == State::asleep) {
      last_activity_ = Clock::now();
      set_state_locked(State::ready, "adopted a running backend");
    }
  }
  while (!stop_requested_) {
    State s;
    {
      std::lock_guard lock(mu_);
      s = state_;
    }
    switch (s) {
      case State::asleep:
      case State::failed:
        co_await run_asleep();
        break;
      case State::waking:
        co_await run_waking();
        break;
      case State::ready:
        co_await run_ready();
        break;
      case State::stopping:
        co_await run_stopping();
        break;
    }
  }
}

task<bool> Backend::healthy() {
  const auto timeout = std::clamp<std::chrono::milliseconds>(settings_.health.interval * 2, 1s, 5s);
  auto r = co_await upstream::probe(control_, pool_.target(), settings_.health.path,
                                    settings_.health.headers, timeout);
  if (r.status != 200 && r.status != 0) {
    std::lock_guard lock(mu_);
    last_error_ = "health probe " + settings_.health.path + " answered " + std::to_string(r.status);
  }
  co_return r.status == 200;
}

task<void> Backend::run_asleep() {
  co_await wait_poke(settings_.health.interval);
  {
    std::lock_guard lock(mu_);
    if (state_ != State::asleep && state_ != State::failed) {
      co_return;
    }
  }
  if (stop_requested_) {
    co_return;
  }
  // Someone else may have started it (kubectl scale, a static upstream that came back).
  auto observed = co_await scaler_->observe();
  if (observed && observed->ready > 0 && observed->desired > 0 && co_await healthy()) {
    std::lock_guard lock(mu_);
    if (state_ == State::asleep || state_ == State::failed) {
      last_activity_ = Clock::now();
      set_state_locked(State::ready, "adopted a running backend");
    }
  }
}

task<void> Backend::run_waking() {
  {
    std::lock_guard lock(mu_);
    wake_started_ = Clock::now();
  }
  // After failed wakes, wait before the next start (1 s, 2 s, 4 s … 30 s): a backend that cannot
  // start must not be restarted by every request. Held requests keep their own deadline.
  if (failed_wakes_ > 0) {
    const auto backoff = std::min<std::chrono::milliseconds>(
        std::chrono::seconds(1) * (1 << std::min(failed_wakes_ - 1, 5)), 30s);
    log::info("backing off before the next wake",
              {{"backend", settings_.name}, {"seconds", seconds(backoff)}});
    const auto until = Clock::now() + backoff;
    while (Clock::now() < until && !stop_requested_) {
      co_await wait_poke(std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now()));
      std::lock_guard lock(mu_);
      if (state_ != State::waking) {
        co_return;
      }
    }
  }
  const auto started = Clock::now();
  // A replica still up when the wake begins (it failed its health probe before its exit was
  // observed) may die now: that is no failed start, so it gets one more scale_to().
  auto before = co_await scaler_->observe();
  bool adopted = before && before->ready > 0;
  if (!co_await scale_up(started)) {
    co_return;
  }
  // vLLM refuses connections until the model is loaded, so probing often costs nothing and
  // shortens the gap between "ready" and the first forwarded byte.
  const auto period = std::min<std::chrono::milliseconds>(settings_.health.interval, 25ms);
  for (;;) {
    if (stop_requested_) {
      co_return;
    }
    {
      std::lock_guard lock(mu_);
      if (state_ != State::waking) {
        co_return;
      }
    }
    auto observed = co_await scaler_->observe();
    if (observed && observed->fatal && std::exchange(adopted, false)) {
      log::info("backend replica died during the wake; starting again",
                {{"backend", settings_.name}, {"reason", observed->reason}});
      if (co_await scale_up(started)) {
        continue;
      }
      co_return;
    }
    if (observed && !observed->fatal && observed->desired < 1) {
      // Someone scaled it down during the wake (kubectl scale --replicas=0): requests still wait.
      log::info("backend scaled down by someone else during the wake; scaling up again",
                {{"backend", settings_.name}});
      if (!co_await scale_up(started)) {
        co_return;
      }
      continue;
    }
    if (observed && observed->fatal) {
      bool failed = false;
      {
        std::lock_guard lock(mu_);
        failed = fail_wake_locked(observed->reason);
      }
      if (failed) {
        co_await scaler_->scale_to(0, "the wake failed: " + observed->reason);
      }
      co_return;
    }
    if (observed && observed->ready > 0 && co_await healthy()) {
      std::lock_guard lock(mu_);
      if (state_ != State::waking) {
        co_return;  // an admin sleep took over while the probe ran
      }
      failed_wakes_ = 0;
      const auto took = Clock::now() - started;
      last_wake_seconds_ = seconds(took);
      metrics_.wakes_total.with({settings_.name, "success"}).inc();
      metrics_.wake_duration_seconds.with({settings_.name}).observe(seconds(took));
      last_activity_ = Clock::now();
      last_error_.clear();
      set_state_locked(State::ready, "health probe answered 200");
      release_waiters_locked();
      co_return;
    }
    {
      std::lock_guard lock(mu_);
      if (!observed) {
        last_error_ = observed.error().message;
      } else if (!observed->reason.empty()) {
        last_error_ = observed->reason;
      }
    }
    bool give_up = false;
    if (Clock::now() - started >= settings_.wake_timeout) {
      std::lock_guard lock(mu_);
      // Held requests time out on their own; the wake goes on while anyone still waits.
      if (pending_.empty() && state_ == State::waking) {
        give_up = true;
        last_error_ = "not ready within wake_timeout " +
                      config::format_duration(settings_.wake_timeout) +
                      (last_error_.empty() ? "" : " (" + last_error_ + ")");
        metrics_.wakes_total.with({settings_.name, "timeout"}).inc();
        ++failed_wakes_;
        set_state_locked(State::failed, last_error_);
      }
    }
    if (give_up) {
      // Nobody waits: give the GPU back.
      co_await scaler_->scale_to(0, "not ready within wake_timeout and nobody waits");
      co_return;
    }
    co_await wait_poke(period);
  }
}

task<bool> Backend::scale_up(Clock::time_point started) {
  for (int attempt = 1;; ++attempt) {
    std::string cause;
    {
      std::lock_guard lock(mu_);
      if (state_ != State::waking || stop_requested_ || shutting_down_) {
        co_return false;  // nobody needs the backend up any more
      }
      cause = scale_cause_locked();
    }
    auto scaled = co_await scaler_->scale_to(settings_.replicas, std::move(cause));
    if (scaled) {
      co_return true;
    }
    const auto& failure = scaled.error();
    const auto backoff = retry_backoff(attempt);
    {
      std::lock_guard lock(mu_);
      if (failure.code != errc::scaler_unavailable) {
        fail_wake_locked(failure.message);
        co_return false;
      }
      // The API is down or overloaded: held requests wait (and get this error in their 503 at
      // wake_timeout); the scale is tried again, with backoff, while anyone waits.
      last_error_ = failure.message;
      if (Clock::now() - started >= settings_.wake_timeout && pending_.empty()) {
        if (state_ == State::waking) {
          ++failed_wakes_;
          metrics_.wakes_total.with({settings_.name, "failed"}).inc();
          set_state_locked(State::failed, failure.message);
        }
        co_return false;
      }
    }
    log::warn("scale-up failed; retrying", {{"backend", settings_.name},
                                            {"error", failure.message},
                                            {"retry_in_seconds", seconds(backoff)}});
    co_await wait_poke(backoff);
  }
}

std::string Backend::scale_cause_locked() const {
  if (pending_.empty()) {
    return cause_;
  }
  return std::to_string(pending_.size()) +
         (pending_.size() == 1 ? " request held" : " requests held");
}

task<void> Backend::run_ready() {
  for (;;) {
    auto now = Clock::now();
    Clock::time_point next;
    {
      std::lock_guard lock(mu_);
      if (stop_requested_ || state_ != State::ready) {
        co_return;
      }
      const bool idle = in_flight_ == 0 && pending_.empty() && !suspect_;
      if (idle && now - last_activity_ >= settings_.idle_timeout) {
        metrics_.scale_downs_total.with({settings_.name, "idle"}).inc();
        set_state_locked(State::stopping,
                         "idle for " + config::format_duration(settings_.idle_timeout));
        co_return;
      }
      next = now + settings_.health.interval;
      if (idle) {
        next = std::min(next, last_activity_ + settings_.idle_timeout);
      }
      ready_wakes_at_ = next;
    }
    co_await wait_poke(std::chrono::ceil<std::chrono::milliseconds>(next - now));
    bool suspect = false;
    {
      std::lock_guard lock(mu_);
      suspect = suspect_;
    }
    auto observed = co_await scaler_->observe();
    bool dead = observed && observed->ready == 0;
    if (!dead && suspect) {
      dead = !co_await healthy();
    }
    std::lock_guard lock(mu_);
    suspect_ = false;
    if (state_ != State::ready) {
      co_return;
    }
    if (dead) {
      pool_.clear();
      const std::string why =
          observed && !observed->reason.empty() ? observed->reason : "health probe failed";
      last_error_ = why;
      set_state_locked(pending_.empty() ? State::asleep : State::waking,
                       "backend went away: " + why);
      co_return;
    }
    release_waiters_locked();
  }
}

task<void> Backend::run_stopping() {
  std::string cause;
  {
    std::lock_guard lock(mu_);
    cause = cause_;
  }
  auto r = co_await scaler_->scale_to(0, cause);
  pool_.clear();
  if (!r && r.error().code == errc::scaler_unavailable) {
    // The GPU must not stay on because the API was down when the idle timer fired: try again.
    const auto backoff = retry_backoff(++stop_attempts_);
    {
      std::lock_guard lock(mu_);
      last_error_ = r.error().message;
      if (pending_.empty()) {
        log::warn("scale-down failed; retrying", {{"backend", settings_.name},
                                                  {"error", last_error_},
                                                  {"retry_in_seconds", seconds(backoff)}});
      } else {
        set_state_locked(State::waking, "requests arrived while stopping");
        stop_attempts_ = 0;
        co_return;
      }
    }
    co_await wait_poke(backoff);
    co_return;  // still stopping: run_stopping() runs again
  }
  stop_attempts_ = 0;
  std::lock_guard lock(mu_);
  if (!r) {
    last_error_ = r.error().message;
  }
  if (pending_.empty()) {
    set_state_locked(State::asleep, r ? "stopped" : "stop failed: " + last_error_);
  } else {
    set_state_locked(State::waking, "requests arrived while stopping");
  }
}

// --- state, waiters, metrics (mu_ held) -------------------------------------------------------

void Backend::set_state_locked(State to, std::string_view cause) {
  const auto now = Clock::now();
  account_awake_locked(now);
  const State from = state_;
  state_ = to;
  cause_ = cause;
  if (to == State::waking && from != State::waking) {
    ++wakes_;  // counted with the transition, so /status never shows a wake not yet counted
  }
  log::info("backend state", {{"backend", settings_.name},
                              {"from", activator::name(from)},
                              {"to", activator::name(to)},
                              {"cause", cause}});
  update_gauges_locked();
}

void Backend::release_waiters_locked() { finish_waiters_locked(nullptr); }

void Backend::fail_waiters_locked(errc code, const std::string& message) {
  const Failure failure{code, message};
  finish_waiters_locked(&failure);
}

void Backend::finish_waiters_locked(const Failure* failure) {
  if (pending_.empty()) {
    return;
  }
  auto woken = std::make_shared<std::vector<std::shared_ptr<Waiter>>>();
  woken->reserve(pending_.size());
  // In arrival order.
  while (!pending_.empty()) {
    auto w = std::move(pending_.front());
    pending_.pop_front();
    w->done = true;
    w->granted = failure == nullptr;
    if (w->granted) {
      ++in_flight_;
    } else {
      w->failure = *failure;
    }
    woken->push_back(std::move(w));
  }
  update_gauges_locked();
  wake_waiters(std::move(woken), 0);
}

void Backend::wake_waiters(std::shared_ptr<std::vector<std::shared_ptr<Waiter>>> woken,
                           std::size_t from) {
  // Each session is woken on its own executor, a batch at a time, the next batch queued behind
  // the sessions of this one: with 1000 held requests the first answers reach their clients
  // while later sessions are still being woken, not after all of them have connected upstream.
  constexpr std::size_t kBatch = 16;
  const auto to = std::min(woken->size(), from + kBatch);
  for (auto i = from; i < to; ++i) {
    auto w = (*woken)[i];
    net::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
  }
  if (to < woken->size()) {
    auto ex = (*woken)[to]->timer.get_executor();
    net::post(ex, [woken = std::move(woken), to]() mutable { wake_waiters(std::move(woken), to); });
  }
}

bool Backend::fail_wake_locked(const std::string& reason) {
  if (state_ != State::waking) {
    return false;  // an admin sleep or shutdown took over meanwhile
  }
  ++failed_wakes_;
  last_error_ = reason;
  fail_waiters_locked(errc::backend_failed,
                      "backend '" + settings_.name + "' failed to start: " + reason);
  metrics_.wakes_total.with({settings_.name, "failed"}).inc();
  set_state_locked(State::failed, reason);
  return true;
}

void Backend::update_gauges_locked() {
  // Called twice per request: the gauges were looked up once, in the constructor.
  in_flight_gauge_->set(static_cast<double>(in_flight_));
  pending_gauge_->set(static_cast<double>(pending_.size()));
  if (state_gauges_shown_ != state_) {
    for (State s : kStates) {
      metrics_.backend_state.with({settings_.name, std::string(activator::name(s))})
          .set(s == state_ ? 1 : 0);
    }
    state_gauges_shown_ = state_;
  }
}

void Backend::account_awake_locked(Clock::time_point now) {
  if (state_ == State::waking || state_ == State::ready || state_ == State::stopping) {
    metrics_.backend_awake_seconds_total.with({settings_.name})
        .inc(seconds(now - awake_accounted_));
  }
  awake_accounted_ = now;
}

void Backend::account_awake() {
  std::lock_guard lock(mu_);
  account_awake_locked(Clock::now());
}

boost::json::object Backend::status() const {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  boost::json::object o;
  o["name"] = settings_.name;
  o["state"] = activator::name(state_);
  o["replicas"] = state_ == State::ready ? settings_.replicas : 0;
  o["in_flight"] = in_flight_;
  o["pending"] = pending_.size();
  const bool idle = in_flight_ == 0 && pending_.empty();
  o["idle_seconds"] = idle ? seconds(now - last_activity_) : 0.0;
  if (state_ == State::ready && idle) {
    o["seconds_until_scale_down"] =
        std::max(0.0, seconds(last_activity_ + settings_.idle_timeout - now));
  } else {
    o["seconds_until_scale_down"] = nullptr;
  }
  if (last_wake_seconds_) {
    o["last_wake_seconds"] = *last_wake_seconds_;
  } else {
    o["last_wake_seconds"] = nullptr;
  }
  o["wakes"] = wakes_;
  if (last_error_.empty()) {
    o["last_error"] = nullptr;
  } else {
    o["last_error"] = last_error_;
  }
  boost::json::array problems;
  for (auto& p : setup_problems()) {
    problems.emplace_back(std::move(p));
  }
  o["setup_problems"] = std::move(problems);
  return o;
}

}  // namespace va::activator
