#include "core/time_source.hpp"

namespace va {
namespace {

class SteadyTime final : public TimeSource {
 public:
  Clock::time_point now() const override { return Clock::now(); }
  void arm(Timer& t, Clock::time_point at) override { t.expires_at(at); }
  void disarm(Timer&) override {}
};

}  // namespace

TimeSource& steady_time() {
  static SteadyTime time;
  return time;
}

}  // namespace va
