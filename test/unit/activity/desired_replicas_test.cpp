// DesiredReplicas in virtual time: the times are plain time points, one observation a second.
#include "activity/desired_replicas.hpp"

#include <gtest/gtest.h>

namespace va::activity {
namespace {

using std::chrono::seconds;

class Planner : public ::testing::Test {
 protected:
  DesiredReplicas::Settings settings{.min_replicas = 1,
                                     .max_replicas = 10,
                                     .target_in_flight = 8,
                                     .stable_window = seconds(60),
                                     .panic_window = seconds(6),
                                     .scale_down_every = seconds(60)};
  Clock::time_point now{};

  // `concurrency` for `duration`, observed and decided each second with the replicas decided
  // before (as the Deployment follows); returns the last decision.
  DesiredReplicas::Decision run(DesiredReplicas& p, double concurrency, Clock::duration duration,
                                int& current) {
    DesiredReplicas::Decision d;
    for (auto end = now + duration; now < end; now += seconds(1)) {
      p.observe(now, concurrency);
      d = p.decide(now, current);
      current = d.replicas;
    }
    return d;
  }

  // Runs `concurrency` until `until`: each change of the replicas, as (whole seconds after
  // `since`, replicas).
  std::vector<std::pair<int, int>> changes(DesiredReplicas& p, double concurrency,
                                           Clock::time_point until, int& current,
                                           Clock::time_point since) {
    std::vector<std::pair<int, int>> out;
    for (int last = current; now < until;) {
      run(p, concurrency, seconds(1), current);
      if (current != last) {
        out.emplace_back(std::chrono::duration_cast<seconds>(now - since).count(), current);
        last = current;
      }
    }
    return out;
  }
};

TEST_F(Planner, TheAverageIsWeightedByTime) {
  DesiredReplicas p(settings);
  p.observe(now, 10);
  p.observe(now + seconds(30), 0);
  const auto d = p.decide(now + seconds(60), 1);
  EXPECT_DOUBLE_EQ(d.stable_average, 5);
  EXPECT_DOUBLE_EQ(d.panic_average, 0);
}

TEST_F(Planner, ASteadyLoadWantsItsShareOfPodsAndTheReasonSaysWhy) {
  DesiredReplicas p(settings);
  for (int s = 0; s <= 60; ++s) {
    p.observe(now + seconds(s), 37);
  }
  const auto d = p.decide(now + seconds(60), 3);
  EXPECT_FALSE(d.panic);  // 37 < 2 × 8 × 3
  EXPECT_EQ(d.replicas, 5);
  EXPECT_EQ(d.reason, "in flight 37 over 3 pods, target 8 → 5");
}

TEST_F(Planner, ABurstPanicsAndScalesUpWithinThePanicWindow) {
  DesiredReplicas p(settings);
  int current = 1;
  p.observe(now, 0);
  now += seconds(59);
  // 40 requests from now on: the panic window's average reaches 16 (2 × target) within seconds
  // and 5 pods within the panic window, where the stable window's average is still under one
  // pod's worth.
  int seconds_to_five = -1;
  for (int s = 0; s < 10; ++s, now += seconds(1)) {
    p.observe(now, 40);
    const auto d = p.decide(now, current);
    current = d.replicas;
    if (current == 5 && seconds_to_five < 0) {
      seconds_to_five = s;
      EXPECT_TRUE(d.panic);
      EXPECT_LT(d.stable_average, settings.target_in_flight);
      EXPECT_NE(d.reason.find("(panic)"), std::string::npos) << d.reason;
    }
  }
  EXPECT_GE(seconds_to_five, 0);
  EXPECT_LE(seconds_to_five, 6);
}

TEST_F(Planner, AfterTheLoadStopsNothingIsScaledDownInAPanicThenAtMostHalfAMinute) {
  DesiredReplicas p(settings);
  int current = 1;
  run(p, 200, seconds(30), current);  // over twice the target for max_replicas: a panic throughout
  ASSERT_EQ(current, 10);
  const auto stopped = now - seconds(1);  // the last second with load
  // No scale-down while panicking: a whole stable window calm first.
  auto d = run(p, 0, seconds(59), current);  // through stopped + 59 s
  EXPECT_EQ(current, 10);
  EXPECT_TRUE(d.panic);
  // Then at most half of the pods per scale_down_every, never below min_replicas.
  const auto downs = changes(p, 0, stopped + std::chrono::minutes(6), current, stopped);
  ASSERT_EQ(downs.size(), 4u);
  EXPECT_EQ(downs[0].second, 5);
  EXPECT_EQ(downs[1].second, 3);
  EXPECT_EQ(downs[2].second, 2);
  EXPECT_EQ(downs[3].second, 1);
  EXPECT_GE(downs[0].first, 60);
  for (std::size_t i = 1; i < downs.size(); ++i) {
    EXPECT_GE(downs[i].first - downs[i - 1].first, 60) << i;
  }
}

TEST_F(Planner, MinAndMaxReplicasBoundEveryDecision) {
  settings.min_replicas = 2;
  settings.max_replicas = 4;
  DesiredReplicas p(settings);
  int current = 2;
  EXPECT_EQ(run(p, 1000, seconds(10), current).replicas, 4);
  int idle = 2;
  DesiredReplicas q(settings);
  EXPECT_EQ(run(q, 0, seconds(120), idle).replicas, 2);
}

TEST_F(Planner, ALoadJustUnderTwiceTheTargetDoesNotPanic) {
  DesiredReplicas p(settings);
  int current = 2;
  const auto d = run(p, 31, seconds(60), current);
  EXPECT_FALSE(d.panic);
  EXPECT_EQ(d.replicas, 4);
}

TEST_F(Planner, PodsJustWokenOrJustChangedAreNotScaledDownForAPeriod) {
  // Woken with 4 pods (by a burst held on another proxy, say) and little load on the first look:
  // they stay a scale-down period, not halved at once.
  DesiredReplicas p(settings);
  int current = 4;
  const auto woken = now;
  const auto downs = changes(p, 8, woken + std::chrono::minutes(3), current, woken);
  ASSERT_EQ(downs.size(), 2u);
  EXPECT_EQ(downs[0].second, 2);
  EXPECT_GE(downs[0].first, 60);
  EXPECT_EQ(downs[1].second, 1);
  EXPECT_GE(downs[1].first - downs[0].first, 60);
  // Someone else scales it to 3: that too starts a period.
  current = 3;
  const auto scaled = now;
  run(p, 8, seconds(59), current);
  EXPECT_EQ(current, 3);
  run(p, 8, seconds(2), current);
  EXPECT_EQ(current, 2);
  EXPECT_GE(now - scaled, seconds(60));
}

}  // namespace
}  // namespace va::activity
