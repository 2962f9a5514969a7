#pragma once
// Virtual time for state machines that take a TimeSource: now() moves only when the test says so,
// and then straight to the next armed deadline, so a 5-minute idle timeout passes in microseconds
// and every run happens in the same order. Handlers that are ready run on the test's io_context
// (poll(): sockets on loopback still work); nothing sleeps.
#include <algorithm>
#include <functional>
#include <map>
#include <stdexcept>

#include "core/time_source.hpp"

namespace va::testing {

class VirtualTime final : public TimeSource {
 public:
  explicit VirtualTime(net::io_context& ioc) : ioc_(ioc) {}

  Clock::time_point now() const override { return now_; }

  void arm(Timer& t, Clock::time_point at) override {
    if (at <= now_) {
      armed_.erase(&t);
      t.expires_at(Clock::time_point::min());  // a wait completes at once
      return;
    }
    t.expires_at(Clock::time_point::max());  // until advance() reaches `at`
    armed_[&t] = at;
  }

  void disarm(Timer& t) override { armed_.erase(&t); }

  // Runs every handler that is ready, until none is. A machine that never stops running without
  // time passing is busy-looping: that fails the test instead of hanging it.
  void settle() {
    std::size_t handlers = 0;
    for (;;) {
      ioc_.restart();
      const auto n = ioc_.poll();
      if (n == 0) {
        return;
      }
      handlers += n;
      if (handlers > 1'000'000) {
        throw std::runtime_error("a million handlers ran without time passing: a busy loop");
      }
    }
  }

  // Moves time forward by `d`, deadline by deadline, settling at each.
  void advance(Clock::duration d) {
    run_until([] { return false; }, d);
  }

  // Moves time forward until `done()` holds (checked after each step) or `limit` has passed;
  // returns done().
  bool run_until(const std::function<bool()>& done, Clock::duration limit) {
    const auto until = now_ + limit;
    settle();
    while (!done()) {
      auto next = std::min_element(armed_.begin(), armed_.end(), [](const auto& a, const auto& b) {
        return a.second < b.second;
      });
      if (next == armed_.end() || next->second > until) {
        now_ = std::max(now_, until);
        settle();
        return done();
      }
      now_ = next->second;
      fire_due();
      settle();
    }
    return true;
  }

 private:
  void fire_due() {
    for (auto it = armed_.begin(); it != armed_.end();) {
      if (it->second <= now_) {
        it->first->expires_at(Clock::time_point::min());  // completes the wait pending on it
        it = armed_.erase(it);
      } else {
        ++it;
      }
    }
  }

  net::io_context& ioc_;
  Clock::time_point now_ = Clock::time_point{} + std::chrono::hours(1000);
  std::map<Timer*, Clock::time_point> armed_;
};

// A coroutine's wait of `d` in the time `time` keeps.
inline task<void> sleep_for(TimeSource& time, Clock::duration d) {
  Timer t(co_await net::this_coro::executor);
  time.arm_after(t, d);
  co_await t.async_wait(use_nothrow);
  time.disarm(t);
}

}  // namespace va::testing
