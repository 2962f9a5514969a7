#include "activity/desired_replicas.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace va::activity {

namespace {

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

}  // namespace

DesiredReplicas::DesiredReplicas(Settings settings) : settings_(settings) {}

void DesiredReplicas::observe(Clock::time_point at, double concurrency) {
  if (!samples_.empty() && at <= samples_.back().at) {
    samples_.back().concurrency = concurrency;  // the same instant (or a clock that went back)
  } else {
    samples_.push_back(Sample{at, concurrency});
  }
  forget_before(samples_.back().at - std::max(settings_.stable_window, settings_.panic_window));
}

void DesiredReplicas::forget_before(Clock::time_point t) {
  // The last sample at or before t still covers [t, next sample): keep it.
  while (samples_.size() >= 2 && samples_[1].at <= t) {
    samples_.pop_front();
  }
}

double DesiredReplicas::average(Clock::time_point now, Clock::duration window) const {
  if (samples_.empty()) {
    return 0;
  }
  const auto from = std::max(now - window, samples_.front().at);
  if (now <= from) {
    return samples_.back().concurrency;  // nothing to weigh yet: what is there now
  }
  double area = 0;
  for (std::size_t i = 0; i < samples_.size(); ++i) {
    const auto start = std::max(samples_[i].at, from);
    const auto end = i + 1 < samples_.size() ? std::min(samples_[i + 1].at, now) : now;
    if (end > start) {
      area += samples_[i].concurrency * seconds_between(start, end);
    }
  }
  return area / seconds_between(from, now);
}

int DesiredReplicas::pods_for(double concurrency) const {
  if (concurrency <= 0) {
    return 0;
  }
  return static_cast<int>(std::ceil(concurrency / settings_.target_in_flight - 1e-9));
}

int DesiredReplicas::clamp(int replicas) const {
  return std::clamp(replicas, settings_.min_replicas, settings_.max_replicas);
}

DesiredReplicas::Decision DesiredReplicas::decide(Clock::time_point now, int current) {
  Decision d;
  d.stable_average = average(now, settings_.stable_window);
  d.panic_average = average(now, settings_.panic_window);
  // Panic at twice the target for the pods there are; it ends after a stable window without.
  const int pods = std::max(current, 1);
  if (d.panic_average >= 2 * settings_.target_in_flight * pods) {
    panic_ = true;
    calm_since_ = now;
  } else if (panic_ && now - calm_since_ >= settings_.stable_window) {
    panic_ = false;
  }
  d.panic = panic_;
  int want = panic_ ? std::max(pods_for(d.panic_average), current)  // no scale-down in a panic
                    : pods_for(d.stable_average);
  want = clamp(want);
  if (current != last_current_) {
    last_current_ = current;
    changed_at_ = now;
  }
  if (want < current) {
    const bool paced = now - changed_at_ >= settings_.scale_down_every;
    want = paced ? std::max(want, (current + 1) / 2) : current;
    if (want < current) {
      changed_at_ = now;
    }
  }
  d.replicas = want;
  d.reason =
      fmt::format("in flight {:.3g} over {} pod{}, target {:g} → {}{}",
                  panic_ ? d.panic_average : d.stable_average, current, current == 1 ? "" : "s",
                  settings_.target_in_flight, want, panic_ ? " (panic)" : "");
  return d;
}

}  // namespace va::activity
