#include "activator/shared.hpp"

#include <cmath>
#include <limits>

#include "core/duration.hpp"
#include "core/log.hpp"

namespace va::activator {
namespace {

constexpr State kStates[] = {State::asleep, State::waking, State::ready, State::stopping,
                             State::failed};

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

Shared::Shared(Settings s, metrics::Metrics& m, TimeSource& t)
    : settings(std::move(s)),
      metrics(m),
      time(t),
      activity(t.now()),
      awake_accounted_(t.now()),
      in_flight_gauge_(&m.in_flight_requests.with({settings.name})),
      pending_gauge_(&m.pending_requests.with({settings.name})) {
  metrics.backend_awake_seconds_total.with({settings.name});
  for (const char* result : {"success", "failed", "timeout"}) {
    metrics.wakes_total.with({settings.name, result});
  }
  metrics.scale_downs_total.with({settings.name, "idle"});
  metrics.controller_restarts_total.with({settings.name});
  metrics.client_send_timeouts_total.with({settings.name});
  update_gauges();
}

void Shared::set_state(State to, std::string_view why) {
  account_awake(time.now());
  const State from = state;
  state = to;
  cause = why;
  fenced = fenced && to == State::ready;
  sleep_asked = sleep_asked && to == State::ready;
  if (to == State::waking && from != State::waking) {
    ++wakes;  // counted with the transition, so /status never shows a wake not yet counted
  }
  log::info("backend state", {{"backend", settings.name},
                              {"from", activator::name(from)},
                              {"to", activator::name(to)},
                              {"cause", why}});
  update_gauges();
}

void Shared::release_waiters() {
  if (fenced || suspect) {
    return;  // suspect: held until the controller has re-checked the backend
  }
  const auto in_flight = activity.in_flight();
  const auto limit = room();
  if (in_flight < limit) {
    activity.begin(queue.finish(nullptr, limit - in_flight));
  }
  update_gauges();
}

std::size_t Shared::room() const {
  const auto& a = settings.autoscale;
  if (!a || !observed || observed->ready >= observed->desired || time.now() >= ramp_until) {
    return std::numeric_limits<std::size_t>::max();
  }
  const auto per_pod = std::max(1.0, std::ceil(2 * a->target_in_flight));
  return static_cast<std::size_t>(per_pod) * static_cast<std::size_t>(std::max(observed->ready, 1));
}

void Shared::fail_waiters(errc code, const std::string& message) {
  const Failure failure{code, message};
  queue.finish(&failure);
  update_gauges();
}

bool Shared::fail_wake(const std::string& reason) {
  if (state != State::waking) {
    return false;  // an admin sleep or shutdown took over meanwhile
  }
  ++failed_wakes;
  last_error = reason;
  fail_waiters(errc::backend_failed, "backend '" + settings.name + "' failed to start: " + reason);
  metrics.wakes_total.with({settings.name, "failed"}).inc();
  set_state(State::failed, reason);
  return true;
}

std::string Shared::scale_cause() const {
  if (queue.empty()) {
    return cause;
  }
  return std::to_string(queue.size()) + (queue.size() == 1 ? " request held" : " requests held");
}

void Shared::update_gauges() {
  // Called twice per request: the gauges were looked up once, in the constructor.
  in_flight_gauge_->set(static_cast<double>(activity.in_flight()));
  pending_gauge_->set(static_cast<double>(queue.size()));
  if (state_gauges_shown_ != state) {
    for (State s : kStates) {
      metrics.backend_state.with({settings.name, std::string(activator::name(s))})
          .set(s == state ? 1 : 0);
    }
    state_gauges_shown_ = state;
  }
}

void Shared::account_awake(Clock::time_point now) {
  if (state == State::waking || state == State::ready || state == State::stopping) {
    metrics.backend_awake_seconds_total.with({settings.name})
        .inc(to_seconds(now - awake_accounted_));
  }
  awake_accounted_ = now;
}

}  // namespace va::activator
