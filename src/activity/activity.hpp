#pragma once
// What a backend is doing for its clients, and when it was last doing anything: the input of the
// idle stop (README.md, "Invariants"). Plain data with no lock of its own: the Backend guards it.
#include <cstddef>

#include "core/log.hpp"
#include "core/net.hpp"

namespace va::activity {

class Activity {
 public:
  explicit Activity(Clock::time_point now) : last_(now) {}

  // Requests granted a lease: in flight until each ends.
  void begin(std::size_t n = 1) { in_flight_ += n; }
  void end(Clock::time_point now) {
    VA_CHECK(in_flight_ > 0);
    --in_flight_;
    last_ = now;
  }
  // Something counts as activity although no request ended: a wake, an adoption.
  void touch(Clock::time_point now) { last_ = now; }

  std::size_t in_flight() const { return in_flight_; }
  Clock::time_point last() const { return last_; }
  // Nothing in flight and nothing held (`held`: requests waiting for a wake).
  bool idle(std::size_t held) const { return in_flight_ == 0 && held == 0; }
  // When an idle backend is due to stop, `grace` after the last activity; never while busy.
  Clock::time_point stop_due(std::size_t held, Clock::duration grace) const {
    return idle(held) ? last_ + grace : Clock::time_point::max();
  }

 private:
  std::size_t in_flight_ = 0;
  Clock::time_point last_;
};

}  // namespace va::activity
