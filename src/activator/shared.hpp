#pragma once
// What a backend's two halves share: the request side (Backend: acquire, leases, admin, /status)
// and the controller (Controller: the state machine, the only caller of the scaler). Everything
// here is guarded by `mu`, and every member function expects it held.
#include <mutex>
#include <optional>
#include <string>

#include "activator/queue.hpp"
#include "activity/activity.hpp"
#include "activity/desired_replicas.hpp"
#include "config/config.hpp"
#include "core/time_source.hpp"
#include "metrics/metrics.hpp"
#include "routing/pods.hpp"
#include "scaler/scaler.hpp"

namespace va::activator {

enum class State { asleep, waking, ready, stopping, failed };
std::string_view name(State s);

struct Settings {
  std::string name;
  std::chrono::milliseconds idle_timeout;
  std::chrono::milliseconds wake_timeout;
  std::size_t max_pending;
  config::Health health;
  int replicas = 1;  // on a wake, when not autoscaled
  // Pods from load while awake (activity/desired_replicas.hpp); none: always `replicas`.
  std::optional<activity::DesiredReplicas::Settings> autoscale;
  // Which pod takes a request, once the pods are known (routing/pods.hpp); prefix: the first
  // `prefix_bytes` of the prompt are its key.
  routing::Policy routing = routing::Policy::least_outstanding;
  std::size_t prefix_bytes = 1024;
  // Ask the backend's /v1/models when it is up: it serves every model (the only backend, with
  // no `models` list), and the proxy's /v1/models lists what it has.
  bool learn_models = false;
};

class Shared {
 public:
  Shared(Settings settings, metrics::Metrics& metrics, TimeSource& time);

  const Settings settings;
  metrics::Metrics& metrics;
  TimeSource& time;
  mutable std::mutex mu;

  State state = State::asleep;
  std::string cause;       // of the last state change
  std::string last_error;  // shown in /status and in a wake_timeout's 503
  bool shutting_down = false;
  bool suspect = false;  // a connection to the ready backend failed: the controller re-checks
  // Several proxy replicas agree on a scale-down (activator/peers.hpp): while fenced, no lease is
  // granted; requests are held. Cleared when the backend leaves ready.
  bool fenced = false;
  // With peers, an admin sleep of a ready backend: the controller asks them (with an idle_timeout
  // of 0) once, and stops it if they agree.
  bool sleep_asked = false;
  activity::Activity activity;
  WaitQueue queue;
  // When the controller looks at a ready backend next by itself: a request that ends pokes it
  // only if the idle deadline comes sooner (a poke per request would cost a trip to it each).
  Clock::time_point ready_wakes_at = Clock::time_point::min();
  std::optional<double> last_wake_seconds;
  unsigned long wakes = 0;
  int failed_wakes = 0;                      // in a row; the backoff before the next wake
  std::optional<scaler::Observed> observed;  // the scaler's last answer that was not an error
  // Autoscaled: the controller's last decision (for /status).
  std::optional<activity::DesiredReplicas::Decision> decision;
  std::vector<std::string> reported_models;  // the backend's /v1/models when it was last up

  void set_state(State to, std::string_view why);
  // Held requests, in arrival order, granted (and counted in flight) as far as room() allows.
  // Not while fenced, nor while suspect (the controller clears it once it has re-checked).
  void release_waiters();
  // How many more requests may be in flight now: no bound, except just after a wake of an
  // autoscaled backend (until ramp_until) while it has fewer pods ready than asked for; then
  // target_in_flight × 2 per ready pod (one at least), so that the first pod up is not handed
  // every held request while the others start.
  std::size_t room() const;
  // A wake became ready: the held requests are handed out by room() until this (30 s, at most
  // half of wake_timeout); pods later than that get what is left, and nobody waits longer for
  // them.
  Clock::time_point ramp_until = Clock::time_point::min();
  void fail_waiters(errc code, const std::string& message);
  // waking → failed, held requests refused with `reason`; false if it was no longer waking.
  bool fail_wake(const std::string& reason);
  // Why the backend goes up or down now, for the scaler's record ("3 requests held").
  std::string scale_cause() const;
  void update_gauges();
  void account_awake(Clock::time_point now);

 private:
  Clock::time_point awake_accounted_;
  metrics::Gauge* in_flight_gauge_;
  metrics::Gauge* pending_gauge_;
  std::optional<State> state_gauges_shown_;
};

}  // namespace va::activator
