// The controller's ready and stopping states (controller.hpp): the idle stop, agreed with the
// peers when there are any, and the scale-down with its retries.
#include "activator/controller.hpp"
#include "core/backoff.hpp"
#include "core/duration.hpp"
#include "core/log.hpp"

namespace va::activator {

// --- ready ------------------------------------------------------------------------------------

task<void> Controller::run_ready() {
  if (std::exchange(models_due_, false) && s_.settings.learn_models) {
    co_await learn_models();  // after the held requests were released, not before
  }
  for (;;) {
    auto now = s_.time.now();
    Clock::time_point next;
    bool due = false;
    {
      std::lock_guard lock(s_.mu);
      if (stop_requested_ || s_.state != State::ready) {
        co_return;
      }
      const bool idle = s_.activity.idle(s_.queue.size()) && !s_.suspect;
      const auto idle_until =
          s_.sleep_asked ? now
                         : std::max(s_.activity.last() + s_.settings.idle_timeout, ask_peers_at_);
      due = idle && now >= idle_until;
      next = now + s_.settings.health.interval;
      if (idle) {
        next = std::min(next, idle_until);
      }
      s_.ready_wakes_at = next;
    }
    if (due && co_await stop_when_idle()) {
      co_return;
    }
    if (!due) {
      co_await wait_poke(next - now);
    }
    bool suspect = false;
    {
      std::lock_guard lock(s_.mu);
      suspect = s_.suspect;
    }
    auto observed = co_await observe();
    if (observed && stop_unsure_) {
      // The API answers again: make sure the scale-down it could not confirm does not land now.
      co_await scale(want_, "kept for requests after a scale-down that timed out");
    }
    bool dead = observed && observed->ready == 0;
    if (!dead && suspect) {
      dead = !co_await healthy();
    }
    {
      std::lock_guard lock(s_.mu);
      s_.suspect = false;
      if (s_.state != State::ready) {
        co_return;
      }
      if (dead) {
        pool_.clear();
        const std::string why =
            observed && !observed->reason.empty() ? observed->reason : "health probe failed";
        s_.last_error = why;
        // Left up and unused, it is stopped idle_timeout after the last activity (stop_if_owed).
        grace_ = s_.settings.idle_timeout;
        look_now_ = true;
        s_.set_state(s_.queue.empty() ? State::asleep : State::waking, "backend went away: " + why);
        co_return;
      }
      s_.release_waiters();
    }
    if (observed && !observed->fatal) {
      co_await autoscale(*observed);
    }
  }
}

task<void> Controller::autoscale(const scaler::Observed& observed) {
  if (!desired_ || observed.desired < 1) {
    co_return;
  }
  double load = 0;
  {
    std::lock_guard lock(s_.mu);
    load = static_cast<double>(s_.activity.in_flight() + s_.queue.size());
  }
  if (peers_ != nullptr) {
    load += static_cast<double>(peers_->load_elsewhere(s_.settings.name));
  }
  const auto now = s_.time.now();
  desired_->observe(now, load);
  if (peers_ != nullptr && !peers_->leading()) {
    co_return;  // every replica keeps the averages; the leader decides
  }
  auto decision = desired_->decide(now, observed.desired);
  const int from = observed.desired, to = decision.replicas;
  {
    std::lock_guard lock(s_.mu);
    s_.metrics.autoscale_panic.with({s_.settings.name}).set(decision.panic ? 1 : 0);
    s_.decision = decision;
  }
  if (to == from || s_.time.now() < resize_at_) {
    co_return;
  }
  log::info(
      "autoscaling",
      {{"backend", s_.settings.name}, {"from", from}, {"to", to}, {"reason", decision.reason}});
  co_await resize(to, std::move(decision.reason), 1s, 30s);  // decided again at a later look
}

task<bool> Controller::peers_agree(Clock::duration idle_timeout, bool asked) {
  if (peers_ == nullptr) {
    co_return true;
  }
  if (!asked && s_.time.now() < ask_peers_at_) {
    co_return false;
  }
  const auto verdict = co_await peers_->agree_to_stop(s_.settings.name, idle_timeout);
  const auto now = s_.time.now();
  // Asked again at the latest after a probe interval, and never in a busy loop.
  ask_peers_at_ =
      verdict.agreed
          ? Clock::time_point::min()
          : std::clamp(verdict.ask_again, now + 100ms,
                       now + std::max<Clock::duration>(s_.settings.health.interval, 100ms));
  co_return verdict.agreed;
}

task<bool> Controller::stop_when_idle() {
  bool asked = false;
  {
    std::lock_guard lock(s_.mu);
    asked = std::exchange(s_.sleep_asked, false);  // one proposal per admin sleep
  }
  const bool agreed =
      co_await peers_agree(asked ? Clock::duration::zero() : s_.settings.idle_timeout, asked);
  bool stopping = false;
  {
    std::lock_guard lock(s_.mu);
    stopping = agreed && !stop_requested_ && s_.state == State::ready &&
               s_.activity.idle(s_.queue.size()) && !s_.suspect;
    if (stopping) {
      s_.metrics.scale_downs_total.with({s_.settings.name, asked ? "admin" : "idle"}).inc();
      after_stop_ = State::asleep;
      std::string why =
          asked ? "admin sleep" : "idle for " + format_duration(s_.settings.idle_timeout);
      if (peers_ != nullptr) {
        why.append(asked ? ", agreed by every proxy replica" : " on every proxy replica");
      }
      s_.set_state(State::stopping, why);
    }
  }
  if (peers_ != nullptr && agreed) {
    peers_->stop_decided(s_.settings.name, stopping);  // not under the lock: it fences
  }
  co_return stopping;
}

// --- stopping ---------------------------------------------------------------------------------

task<void> Controller::run_stopping() {
  std::string cause;
  {
    std::lock_guard lock(s_.mu);
    if (s_.state != State::stopping || stop_requested_) {
      co_return;
    }
    if (!s_.queue.empty()) {
      // Never stop what a request waits for; the wake looks before it scales.
      stop_failures_ = 0;
      stop_retry_at_ = Clock::time_point::min();
      after_stop_ = State::asleep;
      s_.set_state(State::waking, "requests arrived while stopping");
      co_return;
    }
    cause = s_.cause;
  }
  if (s_.time.now() < stop_retry_at_) {
    co_await wait_poke(stop_retry_at_ - s_.time.now());
    co_return;  // and look again: a request may have come
  }
  auto r = co_await scale(0, cause);
  pool_.clear();
  std::lock_guard lock(s_.mu);
  if (r) {
    stop_failures_ = 0;
    stop_retry_at_ = Clock::time_point::min();
  } else {
    // The GPU must not stay on because the API failed when the idle timer fired: again, with
    // backoff, for as long as nobody needs the backend.
    s_.last_error = r.error().message;
    ++stop_failures_;
    const auto pause =
        backoff(stop_failures_, r.error().code == errc::scaler_unavailable ? 250ms : 1s,
                r.error().code == errc::scaler_unavailable ? 5s : 30s);
    stop_retry_at_ = s_.time.now() + pause;
    log::warn("scale-down failed; retrying", {{"backend", s_.settings.name},
                                              {"error", s_.last_error},
                                              {"retry_in_seconds", to_seconds(pause)}});
  }
  if (s_.state != State::stopping) {
    after_stop_ = State::asleep;
    co_return;  // an admin wake took over during the call
  }
  if (!s_.queue.empty()) {
    stop_failures_ = 0;
    stop_retry_at_ = Clock::time_point::min();
    after_stop_ = State::asleep;
    s_.set_state(State::waking, "requests arrived while stopping");
  } else if (r) {
    s_.set_state(std::exchange(after_stop_, State::asleep), "stopped");
  }
}

}  // namespace va::activator
