#pragma once
// How many pods a backend that is awake should have, from its concurrency (requests in flight plus
// held, summed over every proxy replica): the way Knative's KPA decides, written down.
//
// - Two time-weighted averages of the concurrency: over the stable window (default 60 s) and over
//   the panic window (default 6 s). Each wants ceil(average / target_in_flight) pods.
// - Panic: when the panic window's average reaches twice the target for the pods there are, the
//   panic window decides, and nothing is scaled down until the concurrency has stayed below that
//   for a whole stable window. Otherwise the stable window decides.
// - A scale-down at most halves the pods, and comes at least `scale_down_every` (60 s) after the
//   pods last changed (a wake, a scale-up, a scale-down, anyone's): a burst's end is not followed
//   by a cliff, and pods just woken are not halved on their first look.
// - Always within [min_replicas, max_replicas]: 0 is the idle stop's business (activity.hpp), not
//   this one's.
//
// Plain data with no lock and no clock of its own: the caller passes the times (its TimeSource's),
// so it is tested in virtual time.
#include <deque>
#include <string>

#include "core/net.hpp"

namespace va::activity {

class DesiredReplicas {
 public:
  struct Settings {
    int min_replicas = 1;
    int max_replicas = 1;
    double target_in_flight = 1;  // requests per pod (in flight plus held)
    Clock::duration stable_window = std::chrono::seconds(60);
    Clock::duration panic_window = std::chrono::seconds(6);
    Clock::duration scale_down_every = std::chrono::seconds(60);
  };

  struct Decision {
    int replicas = 1;  // what the Deployment should have
    bool panic = false;
    double stable_average = 0;
    double panic_average = 0;
    // Why, for the log and the Event: "in flight 37 over 3 pods, target 8 → 5 (panic)".
    std::string reason;
  };

  explicit DesiredReplicas(Settings settings);

  // The concurrency from `at` on, until the next observation (a step function). Times do not go
  // back; one older than the last observation is taken as at the last one.
  void observe(Clock::time_point at, double concurrency);

  // The pods the backend should have at `now`, given the `current` it has (spec.replicas; ready
  // or not). Remembers when `current` changed and any scale-down it decides, for the pace of the
  // next one.
  Decision decide(Clock::time_point now, int current);

  const Settings& settings() const { return settings_; }

 private:
  struct Sample {
    Clock::time_point at;
    double concurrency;
  };
  // The time-weighted average over [now - window, now] of what was observed (counting only since
  // the first observation).
  double average(Clock::time_point now, Clock::duration window) const;
  int pods_for(double concurrency) const;
  int clamp(int replicas) const;
  void forget_before(Clock::time_point t);

  Settings settings_;
  std::deque<Sample> samples_;
  bool panic_ = false;
  Clock::time_point calm_since_;  // the panic condition last held (panicking: since then calm)
  int last_current_ = -1;         // `current` at the last decision (-1: none yet)
  Clock::time_point changed_at_;  // when the pods last changed, or a scale-down was decided
};

}  // namespace va::activity
