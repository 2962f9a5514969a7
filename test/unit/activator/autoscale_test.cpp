// Pods from load (scaler.target_in_flight) in virtual time: how many a wake asks for, how held
// requests are handed to pods as they become ready, and the ramp up and down of an awake backend
// (activity/desired_replicas.hpp decides; the controller asks the scaler).
#include <gtest/gtest.h>

#include "unit/activator/harness.hpp"

namespace va::activator {
namespace {

using testing::Harness;

Harness::Timeouts autoscaled(int max, double target, std::chrono::milliseconds idle = 3600s) {
  return Harness::Timeouts{
      .idle = idle,
      .autoscale = activity::DesiredReplicas::Settings{.min_replicas = 1,
                                                       .max_replicas = max,
                                                       .target_in_flight = target,
                                                       .stable_window = 60s,
                                                       .panic_window = 6s,
                                                       .scale_down_every = 60s}};
}

std::vector<int> asked(const testing::FakeScaler& s) {
  std::vector<int> v;
  for (const auto& c : s.calls) {
    v.push_back(c.replicas);
  }
  return v;
}

std::size_t granted(const Harness& h) {
  return static_cast<std::size_t>(std::count_if(
      h.requests.begin(), h.requests.end(), [](const auto& r) { return r.result && *r.result; }));
}

TEST(Autoscale, AWakeAsksForPodsForTheHeldRequestsAndForMoreAsMoreArrive) {
  Harness h(autoscaled(4, 2));
  h.start();
  h.request(100s);
  ASSERT_TRUE(h.time.run_until([&] { return !h.scaler->calls.empty(); }, 1s));
  EXPECT_EQ(asked(*h.scaler), std::vector<int>{1});
  h.time.advance(2s);
  for (int i = 0; i < 4; ++i) {
    h.request(100s);
  }
  // 5 held, 2 per pod: 3 pods, asked for while the first still loads (one more per 2 held).
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->calls.back().replicas == 3; }, 1s));
  EXPECT_EQ(asked(*h.scaler), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(h.state(), "waking");
  for (int i = 0; i < 10; ++i) {
    h.request(100s);
  }
  h.time.advance(1s);
  EXPECT_EQ(asked(*h.scaler), (std::vector<int>{1, 2, 3, 4}));  // never above max_replicas
  ASSERT_TRUE(h.time.run_until([&] { return granted(h) == 15; }, 60s));
  EXPECT_TRUE(h.scaler->violations.empty());
}

TEST(Autoscale, MorePodsForAWakeAreAskedForWithBackoffWhenTheApiFails) {
  Harness h(autoscaled(4, 2));
  h.world.load_time = 60s;
  h.start();
  h.request(100s);
  ASSERT_TRUE(h.time.run_until([&] { return !h.scaler->calls.empty(); }, 1s));
  h.scaler->fail_always = errc::scaler_unavailable;
  for (int i = 0; i < 10; ++i) {
    h.request(100s);
  }
  h.time.advance(20s);
  // 250 ms doubling to 5 s: a handful of calls in 20 s, not one per 25 ms probe.
  EXPECT_LE(h.scaler->calls.size(), 10u);
  EXPECT_GE(h.scaler->calls.size(), 4u);
  h.scaler->fail_always.reset();
  h.time.advance(6s);
  EXPECT_EQ(h.scaler->calls.back().replicas, 4);
  EXPECT_TRUE(h.scaler->calls.back().ok);
  ASSERT_TRUE(h.time.run_until([&] { return granted(h) == 11; }, 90s));
}

TEST(Autoscale, HeldRequestsGoToReadyPodsAtTwiceTheTargetEachWhileMoreAreComing) {
  Harness h(autoscaled(4, 2));
  h.world.ready_limit = 1;  // one pod ready, three still loading
  h.start();
  for (int i = 0; i < 12; ++i) {
    h.request(300s);
  }
  ASSERT_TRUE(h.time.run_until([&] { return granted(h) > 0; }, 60s));
  h.time.advance(3s);
  EXPECT_EQ(h.scaler->calls.back().replicas, 4);
  EXPECT_EQ(granted(h), 4u);  // 2 × target for the one ready pod
  EXPECT_EQ(h.backend->pending(), 8u);
  EXPECT_EQ(h.backend->in_flight(), 4u);
  h.world.ready_limit = 2;
  h.time.advance(2s);
  EXPECT_EQ(granted(h), 8u);
  h.world.ready_limit = 4;  // all asked for are ready: no bound (vLLM queues the rest)
  h.time.advance(2s);
  EXPECT_EQ(granted(h), 12u);
}

TEST(Autoscale, PodsThatNeverComeDoNotHoldRequestsPastTheRamp) {
  Harness h(autoscaled(4, 2));
  h.world.ready_limit = 1;  // no GPU for the other three
  h.start();
  for (int i = 0; i < 12; ++i) {
    h.request(300s);
  }
  ASSERT_TRUE(h.time.run_until([&] { return granted(h) > 0; }, 60s));
  const auto ready = h.time.now();
  EXPECT_EQ(granted(h), 4u);
  ASSERT_TRUE(h.time.run_until([&] { return granted(h) == 12; }, 60s));
  EXPECT_GE(h.time.now() - ready, 29s);  // 30 s after the first pod, the rest go to it
  EXPECT_LE(h.time.now() - ready, 32s);
  for (int i = 0; i < 20; ++i) {
    h.request(300s);  // and later requests are not held at all
  }
  EXPECT_EQ(granted(h), 32u);
  // A request that comes while pods are short waits behind the held ones, not before them.
  EXPECT_TRUE(h.scaler->violations.empty());
}

TEST(Autoscale, ALoadRampScalesUpInAPanicAndDownByHalvesOncePerStableWindow) {
  Harness h(autoscaled(4, 2));
  h.start();
  h.request(1s);
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  ASSERT_EQ(asked(*h.scaler), std::vector<int>{1});
  const auto burst = h.time.now();
  for (int i = 0; i < 8; ++i) {
    h.request(120s);
  }
  // 8 in flight on 1 pod, target 2: a panic at the first look, pods added from the panic
  // window's average as it rises, 4 within the panic window.
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->calls.back().replicas == 4; }, 6s));
  EXPECT_LE(h.scaler->calls[1].at - burst, 2s);
  EXPECT_TRUE(h.scaler->causes[1].starts_with("in flight ")) << h.scaler->causes[1];
  EXPECT_TRUE(h.scaler->causes[1].ends_with(" (panic)")) << h.scaler->causes[1];
  const auto ups = h.scaler->calls.size();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 130s));
  EXPECT_EQ(h.scaler->calls.size(), ups);  // nothing removed while the load lasted
  const auto quiet = h.time.now();
  // Down, at most by half each time, a stable window apart, to min_replicas and not to 0.
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->calls.back().replicas == 1; }, 400s));
  const auto& c = h.scaler->calls;
  for (auto i = ups; i < c.size(); ++i) {
    EXPECT_GE(c[i].at, quiet);
    EXPECT_GE(c[i].replicas * 2, c[i - 1].replicas);
    EXPECT_LT(c[i].replicas, c[i - 1].replicas);
    if (i > ups) {
      EXPECT_GE(c[i].at - c[i - 1].at, 60s);
    }
  }
  const auto downs = c.size();
  h.time.advance(600s);
  EXPECT_EQ(h.scaler->calls.size(), downs);
  EXPECT_EQ(h.state(), "ready");
  EXPECT_TRUE(h.scaler->violations.empty());
}

TEST(Autoscale, AFixedCountIsAskedForOnEveryWakeAndNeverChanged) {
  Harness h(Harness::Timeouts{.replicas = 3});
  h.start();
  for (int i = 0; i < 20; ++i) {
    h.request(30s);
  }
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 120s));
  EXPECT_EQ(asked(*h.scaler), std::vector<int>{3});
  EXPECT_EQ(granted(h), 20u);
}

TEST(Autoscale, AWakeNeverShrinksPodsThatAnotherReplicaAskedFor) {
  Harness h(autoscaled(4, 1));
  h.world.load_time = 30s;
  h.start();
  // Another proxy replica woke the backend with 4 pods; they are loading.
  const auto t0 = h.time.now();
  h.world.desired = 4;
  h.world.up_since = h.time.now();
  h.world.added_since.assign(3, h.time.now());
  h.request(100s);
  h.request(100s);
  ASSERT_TRUE(h.time.run_until([&] { return granted(h) == 2; }, 60s));
  h.time.advance(5s);
  for (const auto& c : h.scaler->calls) {
    EXPECT_GE(c.replicas, 4) << "a scale from 4 pods to " << c.replicas << " at "
                             << std::chrono::duration<double>(c.at - t0).count()
                             << " s: " << h.scaler->causes.back();
  }
  EXPECT_EQ(h.world.desired, 4);
}

TEST(Autoscale, AScaleTheApiRefusesIsAskedAgainWithBackoff) {
  Harness h(autoscaled(4, 2));
  h.start();
  h.request(1s);
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.scaler->fail_always = errc::scaler_unavailable;
  for (int i = 0; i < 8; ++i) {
    h.request(300s);
  }
  h.time.advance(120s);
  // A look a second: 1 s doubling to 30 s is 7 calls in 2 minutes, not 120.
  EXPECT_GE(h.scaler->calls.size(), 1u + 4u);
  EXPECT_LE(h.scaler->calls.size(), 1u + 8u);
  h.scaler->fail_always.reset();
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->calls.back().ok; }, 31s));
  EXPECT_EQ(h.scaler->calls.back().replicas, 4);
}

}  // namespace
}  // namespace va::activator
