#include "activator/controller.hpp"

#include <boost/json.hpp>
#include <cmath>

#include "core/backoff.hpp"
#include "core/duration.hpp"
#include "core/log.hpp"
#include "core/spawn.hpp"

namespace va::activator {
namespace {

std::chrono::milliseconds ceil_ms(Clock::duration d) {
  return std::max(0ms, std::chrono::ceil<std::chrono::milliseconds>(d));
}

bool idle_state(State s) { return s == State::asleep || s == State::failed; }

}  // namespace

Controller::Controller(Shared& shared, Executor ex, std::unique_ptr<scaler::Scaler> scaler,
                       Probe probe, upstream::Pool& pool)
    : s_(shared),
      ex_(ex),
      scaler_(std::move(scaler)),
      probe_(std::move(probe)),
      pool_(pool),
      signal_(ex),
      done_(ex) {
  want_ = s_.settings.replicas;
  scaler_->on_change([this] { poke(); });
  done_.expires_at(Clock::time_point::max());
}

void Controller::start() { spawn(ex_, run(), "backend controller"); }

void Controller::poke() {
  poked_ = true;
  net::post(ex_, [this] { signal_.cancel(); });
}

task<void> Controller::wait_poke(Clock::duration d) {
  if (poked_.exchange(false) || d <= Clock::duration::zero()) {
    co_return;
  }
  s_.time.arm_after(signal_, d);
  co_await signal_.async_wait(use_nothrow);
  s_.time.disarm(signal_);
  poked_ = false;
}

task<bool> Controller::wait_until(Clock::time_point until) {
  while (!stop_requested_ && s_.time.now() < until) {
    co_await wait_poke(until - s_.time.now());
  }
  co_return !stop_requested_;
}

task<void> Controller::shutdown() {
  co_await net::co_spawn(
      ex_,
      [this]() -> task<void> {
        stop_requested_ = true;
        signal_.cancel();
        if (!stopped_) {
          co_await done_.async_wait(use_nothrow);
        }
        co_await scaler_->shutdown();
      },
      use_task);
}

// An exception here is a bug; the backend must not stop being managed for it (a ready backend
// would never stop again): the controller starts over, after a backoff, with the state as it is.
task<void> Controller::run() {
  for (int failures = 0; !stop_requested_;) {
    bool failed = false;
    try {
      co_await control();
    } catch (const std::exception& e) {
      failed = true;
      ++failures;
      log::error("backend controller failed; restarting",
                 {{"backend", s_.settings.name}, {"error", e.what()}, {"restarts", failures}});
      s_.metrics.controller_restarts_total.with({s_.settings.name}).inc();
    }
    if (failed) {
      look_now_ = true;
      co_await wait_until(s_.time.now() + backoff(failures, 1s, 30s));
    }
  }
  stopped_ = true;
  done_.cancel();
}

task<void> Controller::control() {
  while (!stop_requested_) {
    State s;
    {
      std::lock_guard lock(s_.mu);
      s = s_.state;
    }
    switch (s) {
      case State::asleep:
      case State::failed:
        co_await run_idle();
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

// --- the scaler and the probe -----------------------------------------------------------------

task<outcome<scaler::Observed>> Controller::observe() {
  auto o = co_await scaler_->observe();
  std::lock_guard lock(s_.mu);
  if (!o) {
    s_.last_error = o.error().message;
    co_return o;
  }
  s_.observed = *o;
  if (!o->fatal && o->desired > 0) {
    want_ = o->desired;  // adopted, or sized by another replica: what is there now
  }
  s_.metrics.desired_replicas.with({s_.settings.name}).set(o->desired);
  s_.metrics.ready_replicas.with({s_.settings.name}).set(o->ready);
  if (!o->fatal) {
    const bool sighted = !up_ && o->desired > 0;
    up_ = o->desired > 0;
    if (sighted && idle_state(s_.state)) {
      // Someone else started it (kubectl scale, a proxy restart): it gets idle_timeout from now.
      s_.activity.touch(s_.time.now());
      grace_ = s_.settings.idle_timeout;
      after_stop_ = State::asleep;
    }
  }
  co_return o;
}

task<bool> Controller::healthy() {
  const int status = static_cast<int>((co_await probe_(s_.settings.health.path)).status);
  if (status != 200 && status != 0) {
    std::lock_guard lock(s_.mu);
    s_.last_error =
        "health probe " + s_.settings.health.path + " answered " + std::to_string(status);
  }
  co_return status == 200;
}

task<outcome<void>> Controller::scale(int replicas, std::string cause) {
  const bool was_up = up_;
  up_ = true;  // until it is known to have failed: a call that timed out may have been applied
  auto r = co_await scaler_->scale_to(replicas, std::move(cause));
  if (r) {
    up_ = replicas > 0;
    want_ = replicas > 0 ? replicas : want_;
    stop_unsure_ = false;
  } else if (r.error().code != errc::scaler_unavailable) {
    up_ = was_up;  // refused: nothing changed
  } else if (replicas == 0) {
    stop_unsure_ = true;
  }
  co_return r;
}

task<bool> Controller::resize(int replicas, std::string cause, std::chrono::milliseconds first,
                              std::chrono::milliseconds most) {
  if (s_.time.now() < resize_at_) {
    co_return false;
  }
  auto r = co_await scale(replicas, std::move(cause));
  if (r) {
    resize_failures_ = 0;
    resize_at_ = Clock::time_point::min();
    co_return true;
  }
  const auto pause = backoff(++resize_failures_, first, most);
  resize_at_ = s_.time.now() + pause;
  log::warn("scaling failed; trying again later", {{"backend", s_.settings.name},
                                                   {"replicas", replicas},
                                                   {"error", r.error().message},
                                                   {"retry_in_ms", pause.count()}});
  co_return false;
}

bool Controller::become_ready(std::string_view why, std::optional<Clock::time_point> started) {
  std::lock_guard lock(s_.mu);
  const bool waking = s_.state == State::waking;
  if (!waking && !idle_state(s_.state)) {
    return false;  // an admin sleep took over
  }
  if (waking) {
    s_.failed_wakes = 0;
    s_.last_error.clear();
  }
  if (started) {
    const auto took = to_seconds(s_.time.now() - *started);
    s_.last_wake_seconds = took;
    s_.metrics.wakes_total.with({s_.settings.name, "success"}).inc();
    s_.metrics.wake_duration_seconds.with({s_.settings.name}).observe(took);
    s_.activity.touch(s_.time.now());
    s_.ramp_until = s_.time.now() + std::min<Clock::duration>(30s, s_.settings.wake_timeout / 2);
  }
  if (s_.settings.autoscale) {
    desired_.emplace(*s_.settings.autoscale);  // the load of this awake period only
  }
  s_.set_state(State::ready, why);
  s_.release_waiters();
  models_due_ = true;
  return true;
}

task<void> Controller::learn_models() {
  auto r = co_await probe_("/v1/models");
  error_code ec;
  const auto doc = r.status == 200 ? boost::json::parse(r.body, ec) : boost::json::value();
  const auto* data = doc.is_object() ? doc.as_object().if_contains("data") : nullptr;
  if (ec || data == nullptr || !data->is_array()) {
    co_return;  // not an OpenAI server, or not now: keep what was learnt before
  }
  std::vector<std::string> models;
  for (const auto& m : data->as_array()) {
    const auto* id = m.is_object() ? m.as_object().if_contains("id") : nullptr;
    if (id != nullptr && id->is_string()) {
      models.emplace_back(id->as_string());
    }
  }
  std::lock_guard lock(s_.mu);
  s_.reported_models = std::move(models);
}

// --- asleep and failed ------------------------------------------------------------------------

Clock::duration Controller::idle_wait() const {
  Clock::duration wait = s_.settings.health.interval;
  if (up_) {
    std::lock_guard lock(s_.mu);
    const auto due =
        std::max({s_.activity.stop_due(s_.queue.size(), grace_), stop_retry_at_, ask_peers_at_});
    if (due != Clock::time_point::max()) {
      wait = std::min(wait, due - s_.time.now());
    }
  }
  // Never a wait of nothing: a scaler that answers without suspending would spin this thread.
  return std::max<Clock::duration>(wait, 100ms);
}

task<void> Controller::run_idle() {
  if (!std::exchange(look_now_, false)) {
    co_await wait_poke(idle_wait());
  }
  {
    std::lock_guard lock(s_.mu);
    if (stop_requested_ || !idle_state(s_.state)) {
      co_return;
    }
  }
  auto observed = co_await observe();
  if (observed && !observed->fatal && observed->desired > 0 && observed->ready > 0 &&
      co_await healthy() && become_ready("adopted a running backend", std::nullopt)) {
    co_return;
  }
  co_await stop_if_owed();
}

task<void> Controller::stop_if_owed() {
  const auto owed = [this] {
    return up_ && idle_state(s_.state) && !stop_requested_ &&
           s_.time.now() >= s_.activity.stop_due(s_.queue.size(), grace_);  // unused, long enough
  };
  {
    std::lock_guard lock(s_.mu);
    if (!owed()) {
      co_return;
    }
  }
  const bool agreed = co_await peers_agree(grace_);
  bool stopping = false;
  {
    std::lock_guard lock(s_.mu);
    stopping = agreed && owed();
    if (stopping) {
      after_stop_ = s_.state;
      const bool failed = s_.state == State::failed;
      s_.metrics.scale_downs_total.with({s_.settings.name, failed ? "failed" : "idle"}).inc();
      s_.set_state(State::stopping,
                   failed ? "the wake failed and nobody waits"
                          : "up with nobody using it for " + format_duration(ceil_ms(grace_)));
    }
  }
  if (peers_ != nullptr && agreed) {
    peers_->stop_decided(s_.settings.name, stopping);  // not under the lock: it fences
  }
}

// --- waking -----------------------------------------------------------------------------------

task<void> Controller::run_waking() {
  if (!co_await pause_after_failed_wakes()) {
    co_return;
  }
  const auto started = s_.time.now();
  // Look before scaling: a backend we left up (a stop that failed, a readiness blip) that is
  // serving is used as it is, even when the scaler cannot tell (its API is down).
  auto before = co_await observe();
  const bool running = before ? !before->fatal && before->desired > 0 && before->ready > 0 : up_;
  if (running && co_await healthy() && become_ready("health probe answered 200", started)) {
    co_return;
  }
  // Already asked for (by this controller before it restarted, by someone else, or left up
  // after a readiness blip): the same call again would change nothing. Wait for it.
  const bool asked = before && !before->fatal && before->desired >= wake_replicas();
  if (!asked && !co_await scale_up(started)) {
    co_return;
  }
  // A replica still up when the wake began (it failed its health probe before its exit was
  // observed) may die now: that is no failed start, so it gets one more scale call.
  co_await await_ready(started, before && before->ready > 0);
}

int Controller::wake_replicas() const {
  const auto& a = s_.settings.autoscale;
  if (!a) {
    return s_.settings.replicas;
  }
  std::lock_guard lock(s_.mu);
  const auto load = static_cast<double>(s_.queue.size() + s_.activity.in_flight());
  return std::clamp(static_cast<int>(std::ceil(load / a->target_in_flight - 1e-9)), a->min_replicas,
                    a->max_replicas);
}

task<bool> Controller::pause_after_failed_wakes() {
  int failed_wakes = 0;
  {
    std::lock_guard lock(s_.mu);
    failed_wakes = s_.failed_wakes;
  }
  if (failed_wakes == 0) {
    co_return true;
  }
  // 1 s, 2 s, 4 s … 30 s: a backend that cannot start must not be restarted by every request.
  // Held requests keep their own deadline.
  const auto pause = backoff(failed_wakes, 1s, 30s);
  log::info("backing off before the next wake",
            {{"backend", s_.settings.name}, {"seconds", to_seconds(pause)}});
  const auto until = s_.time.now() + pause;
  while (s_.time.now() < until && !stop_requested_) {
    co_await wait_poke(until - s_.time.now());
    std::lock_guard lock(s_.mu);
    if (s_.state != State::waking) {
      co_return false;
    }
  }
  co_return !stop_requested_;
}

task<void> Controller::await_ready(Clock::time_point started, bool replica_was_up) {
  // vLLM refuses connections until the model is loaded, so probing often costs nothing and
  // shortens the gap between "ready" and the first forwarded byte.
  const auto period = std::min<Clock::duration>(s_.settings.health.interval, 25ms);
  for (;;) {
    {
      std::lock_guard lock(s_.mu);
      if (stop_requested_ || s_.state != State::waking) {
        co_return;
      }
    }
    auto observed = co_await observe();
    const bool died = observed && observed->fatal && std::exchange(replica_was_up, false);
    if (died || (observed && !observed->fatal && observed->desired < 1)) {
      // The replica that was up died, or someone scaled it down during the wake (kubectl scale
      // --replicas=0): requests still wait.
      log::info("backend gone during the wake; scaling up again",
                {{"backend", s_.settings.name},
                 {"reason", died ? observed->reason : "scaled to 0 by someone else"}});
      if (!co_await scale_up(started)) {
        co_return;
      }
      continue;
    }
    if (observed && observed->fatal) {
      std::lock_guard lock(s_.mu);
      if (s_.fail_wake(observed->reason)) {
        wake_failed();
      }
      co_return;
    }
    if (observed && s_.settings.autoscale && wake_replicas() > std::max(want_, observed->desired) &&
        s_.time.now() >= resize_at_) {
      // More requests held since the wake began: their pods load now, not after the first.
      std::string cause;
      {
        std::lock_guard lock(s_.mu);
        cause = s_.scale_cause();
      }
      co_await resize(wake_replicas(), std::move(cause), 250ms, 5s);
    }
    // With the scaler's API unreadable, the probe alone says whether what we asked for serves.
    const bool up = observed ? observed->ready > 0 : up_;
    if (up && co_await healthy()) {
      become_ready("health probe answered 200", started);
      co_return;  // or an admin sleep took over while the probe ran
    }
    if (observed && !observed->reason.empty()) {
      std::lock_guard lock(s_.mu);
      s_.last_error = observed->reason;
    }
    if (gave_up(started)) {
      co_return;
    }
    co_await wait_poke(period);
  }
}

bool Controller::gave_up(Clock::time_point started) {
  std::lock_guard lock(s_.mu);
  // Held requests time out on their own; the wake goes on while anyone still waits.
  if (s_.time.now() - started < s_.settings.wake_timeout || !s_.queue.empty() ||
      s_.state != State::waking) {
    return false;
  }
  s_.last_error = "not ready within wake_timeout " + format_duration(s_.settings.wake_timeout) +
                  (s_.last_error.empty() ? "" : " (" + s_.last_error + ")");
  s_.metrics.wakes_total.with({s_.settings.name, "timeout"}).inc();
  ++s_.failed_wakes;
  s_.set_state(State::failed, s_.last_error);
  wake_failed();
  return true;
}

void Controller::wake_failed() {
  // Nobody waits any more: what was started goes back as soon as nothing is in flight (a
  // readiness blip may have moved a serving backend to waking: its streams finish first).
  grace_ = Clock::duration::zero();
  look_now_ = true;
}

task<bool> Controller::scale_up(Clock::time_point started) {
  for (int attempt = 1;; ++attempt) {
    std::string cause;
    {
      std::lock_guard lock(s_.mu);
      if (s_.state != State::waking || stop_requested_ || s_.shutting_down) {
        co_return false;  // nobody needs the backend up any more
      }
      cause = s_.scale_cause();
    }
    auto scaled = co_await scale(wake_replicas(), std::move(cause));
    if (scaled) {
      co_return true;
    }
    const auto& failure = scaled.error();
    const auto pause = backoff(attempt, 250ms, 5s);
    {
      std::lock_guard lock(s_.mu);
      if (failure.code != errc::scaler_unavailable) {
        if (s_.fail_wake(failure.message)) {
          wake_failed();
        }
        co_return false;
      }
      // The API is down or overloaded: held requests wait (and get this error in their 503 at
      // wake_timeout); the scale is tried again, with backoff, while anyone waits.
      s_.last_error = failure.message;
      if (s_.time.now() - started >= s_.settings.wake_timeout && s_.queue.empty()) {
        if (s_.state == State::waking) {
          ++s_.failed_wakes;
          s_.metrics.wakes_total.with({s_.settings.name, "failed"}).inc();
          s_.set_state(State::failed, failure.message);
          wake_failed();
        }
        co_return false;
      }
    }
    log::warn("scale-up failed; retrying", {{"backend", s_.settings.name},
                                            {"error", failure.message},
                                            {"retry_in_seconds", to_seconds(pause)}});
    co_await wait_poke(pause);
  }
}

}  // namespace va::activator
