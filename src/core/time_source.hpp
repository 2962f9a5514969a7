#pragma once
// The time a state machine runs on: the steady clock in the proxy, a virtual clock in its tests
// (test/unit/support/virtual_time.hpp), so that a test of a 5-minute idle timeout or a backoff
// runs in microseconds and in a fixed order. Whoever takes a TimeSource reads the time only
// through now() and sets its timers only through arm(): the timer is then waited on as usual.
#include "core/net.hpp"

namespace va {

class TimeSource {
 public:
  virtual ~TimeSource() = default;
  virtual Clock::time_point now() const = 0;
  // Makes a wait on `t` complete at `at` (at once if `at` has passed), and a wait already
  // pending complete then too. Cancelling `t` still completes its wait at once.
  virtual void arm(Timer& t, Clock::time_point at) = 0;
  // `t` is about to be destroyed, or its deadline no longer matters.
  virtual void disarm(Timer& t) = 0;

  void arm_after(Timer& t, Clock::duration d) { arm(t, now() + d); }
};

// The steady clock; Timer's own deadline. Shared, stateless.
TimeSource& steady_time();

}  // namespace va
