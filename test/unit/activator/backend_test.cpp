// The backend's state machine in virtual time (harness.hpp): the happy path and each defect that
// once left a GPU on or killed a warm pod. No test here sleeps.
#include <gtest/gtest.h>

#include "unit/activator/harness.hpp"

namespace va::activator {
namespace {

using testing::Harness;

bool granted(const testing::Request& r) { return r.result && *r.result; }
errc refused_with(const testing::Request& r) {
  return r.result && !*r.result ? r.result->error().code : errc::ok;
}

TEST(Backend, ManyHeldRequestsCauseExactlyOneScaleUp) {
  Harness h;
  h.start();
  for (int i = 0; i < 50; ++i) {
    h.request();
  }
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  for (const auto& r : h.requests) {
    ASSERT_TRUE(granted(r));
    EXPECT_TRUE(r.served_by_ready_world);
    EXPECT_GE(*(*r.result)->waited_ms, 20'000.0);  // the load time
  }
  EXPECT_EQ(h.scaler->ups(), 1);
  EXPECT_EQ(h.scaler->causes.front(), "1 request held");  // it wakes at the first
  EXPECT_EQ(h.state(), "ready");
  EXPECT_EQ(h.backend->in_flight(), 0u);
}

TEST(Backend, RequestsHeldWhileTheBackendIsRecheckedStayHeldWhenAnotherEnds) {
  Harness h;
  h.start();
  auto& a = h.request(25s);
  ASSERT_TRUE(h.time.run_until([&] { return granted(a); }, 60s));
  h.time.advance(24s);
  h.scaler->probe_delay = 3s;  // the re-check takes a while
  h.backend->suspect();        // a connection to the backend failed
  auto& b = h.request(1s);
  h.time.advance(1500ms);  // a ends meanwhile
  ASSERT_TRUE(a.ended.has_value());
  EXPECT_FALSE(b.result.has_value()) << "released onto a backend being re-checked";
  EXPECT_EQ(h.backend->pending(), 1u);
  ASSERT_TRUE(h.time.run_until([&] { return granted(b); }, 5s));
}

TEST(Backend, TheIdleClockStartsWhenTheLastRequestEnds) {
  Harness h;
  h.start();
  auto& r = h.request(600s);  // in flight for 10 idle timeouts
  ASSERT_TRUE(h.time.run_until([&] { return r.result.has_value(); }, 60s));
  ASSERT_TRUE(h.time.run_until([&] { return r.ended.has_value(); }, 601s));
  EXPECT_EQ(h.scaler->downs(), 0);
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->downs() == 1; }, 120s));
  EXPECT_EQ(h.time.now() - *r.ended, 60s);
  EXPECT_EQ(h.state(), "asleep");
  EXPECT_EQ(h.scaler->causes.back(), "idle for 1m");
}

TEST(Backend, AFatalReasonFailsHeldRequestsAtOnceWithIt) {
  Harness h;
  h.world.fatal = "process exited with status 3: CUDA out of memory";
  h.start();
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.ended.has_value(); }, 5s));
  ASSERT_EQ(refused_with(r), errc::backend_failed);
  EXPECT_NE(r.result->error().message.find("CUDA out of memory"), std::string::npos);
  EXPECT_EQ(h.state(), "failed");
  // What was started goes back at once: nobody waits.
  EXPECT_TRUE(h.time.run_until([&] { return h.world.desired == 0; }, 1s));
  EXPECT_EQ(h.state(), "failed");
}

TEST(Backend, AHeldRequestTimesOutAfterWakeTimeoutAndTheGpuGoesBack) {
  Harness h;
  h.world.wedged = true;  // never ready
  h.start();
  const auto start = h.time.now();
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.ended.has_value(); }, 300s));
  EXPECT_EQ(refused_with(r), errc::wake_timeout);
  EXPECT_EQ(*r.ended - start, 120s);
  ASSERT_TRUE(h.time.run_until([&] { return h.world.desired == 0; }, 1s));
  EXPECT_EQ(h.scaler->downs(), 1);
  EXPECT_EQ(h.state(), "failed");
}

TEST(Backend, AFullQueueRefusesAtOnce) {
  Harness h;
  h.world.wedged = true;
  h.start();
  for (int i = 0; i < 1001; ++i) {
    h.request();
  }
  EXPECT_EQ(refused_with(h.requests.back()), errc::queue_full);
  EXPECT_EQ(h.backend->pending(), 1000u);
}

TEST(Backend, AnUnavailableScalerIsRetriedWhileRequestsWait) {
  Harness h;
  h.start();
  h.scaler->fail_next = {errc::scaler_unavailable, errc::scaler_unavailable};
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.result.has_value(); }, 60s));
  ASSERT_TRUE(granted(r));
  ASSERT_EQ(h.scaler->calls.size(), 3u);  // two refused, then accepted
  EXPECT_EQ(h.scaler->calls[1].at - h.scaler->calls[0].at, 250ms);
  EXPECT_EQ(h.scaler->calls[2].at - h.scaler->calls[1].at, 500ms);
  EXPECT_EQ(h.scaler->causes[0], "1 request held");
}

TEST(Backend, HeldRequestsGetTheScalerErrorAtWakeTimeout) {
  Harness h;
  h.start();
  h.scaler->fail_always = errc::scaler_unavailable;
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.ended.has_value(); }, 300s));
  ASSERT_EQ(refused_with(r), errc::wake_timeout);
  EXPECT_NE(r.result->error().message.find("kubernetes API: connection refused"), std::string::npos)
      << r.result->error().message;
  // The next attempt finds nobody waiting: the wake ends instead of retrying forever.
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "failed"; }, 5s));
  // 250 ms doubling to 5 s over 2 minutes: 29 calls, not one per poll.
  EXPECT_LE(h.scaler->calls.size(), 30u);
}

TEST(Backend, AScaleDownBySomeoneElseDuringTheWakeIsUndone) {
  Harness h;
  h.start();
  auto& r = h.request();
  h.time.advance(5s);
  EXPECT_EQ(h.scaler->ups(), 1);
  h.world.desired = 0;  // kubectl scale --replicas=0
  ASSERT_TRUE(h.time.run_until([&] { return r.result.has_value(); }, 60s));
  EXPECT_TRUE(granted(r));
  EXPECT_EQ(h.scaler->ups(), 2);
}

TEST(Backend, AnIdleScaleDownIsRetriedWhileTheScalerIsUnavailable) {
  Harness h;
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.scaler->fail_next = {errc::scaler_unavailable, errc::scaler_unavailable};
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "asleep"; }, 120s));
  EXPECT_EQ(h.scaler->count(false, false), 3);
  EXPECT_EQ(h.world.desired, 0);
}

TEST(Backend, RemembersTheModelsTheBackendListedWhenItWasLastUp) {
  Harness h;
  h.world.models = {"m1", "m2"};
  h.start();
  EXPECT_TRUE(h.backend->reported_models().empty());
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  EXPECT_EQ(h.backend->reported_models(), (std::vector<std::string>{"m1", "m2"}));
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "asleep"; }, 120s));
  EXPECT_EQ(h.backend->reported_models(), (std::vector<std::string>{"m1", "m2"}));
}

// --- the defects of issue 16, each failing on the controller before it ------------------------

// (1) A replica that turns NotReady while idle used to stay up all night: asleep, never stopped.
TEST(Backend, ABackendThatGoesAwayWhileIdleIsStoppedIdleTimeoutAfterTheLastRequest) {
  Harness h;
  h.start();
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.ended.has_value(); }, 60s));
  h.time.advance(10s);
  h.world.wedged = true;
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "asleep"; }, 5s));
  EXPECT_EQ(h.world.desired, 1);
  ASSERT_TRUE(h.time.run_until([&] { return h.world.desired == 0; }, 600s));
  EXPECT_LE(*h.scaler->zeroed_at - *r.ended, 61s);
  EXPECT_EQ(h.state(), "asleep");
}

TEST(Backend, AnAdminSleepOfABackendLeftUpScalesItDown) {
  Harness h;
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.world.wedged = true;
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "asleep"; }, 5s));
  EXPECT_FALSE(h.backend->sleep("admin"));  // accepted: no reason to refuse
  h.time.settle();
  EXPECT_EQ(h.world.desired, 0);
}

// (2) After a failed idle scale-down, a request's poke used to end the backoff and the next
// attempt killed the warm pod, which was then woken again for that request.
TEST(Backend, AScaleDownRetryNeverKillsAPodARequestArrivedFor) {
  Harness h;
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.scaler->fail_next = {errc::scaler_unavailable};
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->calls.size() == 2; }, 120s));
  EXPECT_EQ(h.state(), "stopping");
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.result.has_value(); }, 1s));
  EXPECT_TRUE(granted(r));
  EXPECT_TRUE(r.served_by_ready_world);
  EXPECT_EQ(h.scaler->calls.size(), 2u);  // the first wake's, the failed stop: nothing since
  EXPECT_EQ(h.world.desired, 1);
}

// A scale-down that timed out may still be applied by the API server later (it was seen on a
// real one, resumed after SIGSTOP): a backend kept for a request asks for its replicas again as
// soon as the API answers, once.
TEST(Backend, ABackendKeptAfterAStopThatTimedOutAsksForItsReplicasAgain) {
  Harness h;
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.scaler->fail_next_down = {errc::scaler_unavailable};
  h.scaler->observe_unavailable = true;
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->calls.size() == 2; }, 120s));
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.result.has_value(); }, 1s));
  EXPECT_TRUE(granted(r));
  EXPECT_EQ(h.scaler->calls.size(), 2u);  // nothing while the API is down
  h.scaler->observe_unavailable = false;
  h.time.advance(5s);
  ASSERT_EQ(h.scaler->calls.size(), 3u);
  EXPECT_EQ(h.scaler->calls[2].replicas, 1);
  EXPECT_TRUE(h.scaler->calls[2].ok);
  h.time.advance(30s);
  EXPECT_EQ(h.scaler->calls.size(), 3u);  // once
}

// (3) With the API down and the pod up (an earlier stop failed), held requests used to wait for a
// scale call that could not succeed and got 503 at wake_timeout.
TEST(Backend, AWakeProbesBeforeItScales) {
  Harness h;
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.scaler->fail_always = errc::scaler_unavailable;
  h.scaler->observe_unavailable = true;
  ASSERT_TRUE(h.time.run_until([&] { return h.scaler->count(false, false) == 1; }, 120s));
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.result.has_value(); }, 1s));
  EXPECT_TRUE(granted(r));
  EXPECT_EQ(h.scaler->count(true, false), 1);  // the first wake's only
}

// (4) The scale-down after a failed wake used to be fire and forget: one failed call left the
// Deployment up, and nothing ever stopped it.
TEST(Backend, AFailedWakeStopsWhatItStartedEvenWhenTheFirstStopFails) {
  Harness h;
  h.world.fatal = "CrashLoopBackOff: CUDA out of memory";
  h.start();
  h.scaler->fail_next_down = {errc::scaler_unavailable, errc::scaler_unavailable};
  auto& r = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return r.ended.has_value(); }, 5s));
  EXPECT_EQ(refused_with(r), errc::backend_failed);
  ASSERT_TRUE(h.time.run_until([&] { return h.world.desired == 0; }, 10s));
  EXPECT_EQ(h.scaler->count(false, false), 3);
  EXPECT_EQ(h.state(), "failed");
}

// (6) A readiness blip under live streams moved ready → waking; the wake that then gave up
// scaled to 0 under the streams.
TEST(Backend, AWakeThatGivesUpNeverStopsABackendWithRequestsInFlight) {
  Harness h;
  h.start();
  auto& stream = h.request(600s);
  ASSERT_TRUE(h.time.run_until([&] { return stream.result.has_value(); }, 60s));
  h.world.wedged = true;
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "asleep"; }, 5s));
  auto& held = h.request();
  ASSERT_TRUE(h.time.run_until([&] { return held.ended.has_value(); }, 300s));
  EXPECT_EQ(refused_with(held), errc::wake_timeout);
  h.time.advance(60s);
  EXPECT_FALSE(stream.ended.has_value());
  EXPECT_EQ(h.world.desired, 1);  // the stream goes on
  ASSERT_TRUE(h.time.run_until([&] { return h.world.desired == 0; }, 600s));
  EXPECT_GE(*h.scaler->zeroed_at, *stream.ended);
  EXPECT_TRUE(h.scaler->violations.empty()) << h.scaler->violations.front();
}

// (8) An admin wake during stopping was dropped.
TEST(Backend, AnAdminWakeDuringStoppingIsNotDropped) {
  Harness h;
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.scaler->scale_delay = 2s;
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "stopping"; }, 120s));
  h.backend->wake("admin");
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "ready"; }, 60s));
  EXPECT_EQ(h.world.desired, 1);
}

// (8) /status showed the configured replicas, not what is there.
TEST(Backend, StatusShowsTheObservedReplicas) {
  Harness h(Harness::Timeouts{.replicas = 3});
  h.world.ready_limit = 1;  // one of three pods becomes ready (the others: no GPU left)
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  auto s = h.backend->status();
  EXPECT_EQ(s.at("state").as_string(), "ready");
  EXPECT_EQ(s.at("replicas").as_int64(), 1);
  EXPECT_EQ(s.at("desired_replicas").as_int64(), 3);
  h.world.wedged = true;
  ASSERT_TRUE(h.time.run_until([&] { return h.state() == "asleep"; }, 5s));
  s = h.backend->status();
  EXPECT_EQ(s.at("replicas").as_int64(), 0);
  EXPECT_EQ(s.at("desired_replicas").as_int64(), 3);
}

// (8) A controller that threw was never restarted: the backend was never managed again.
TEST(Backend, AControllerThatThrowsIsRestartedAndCounted) {
  Harness h;
  h.start();
  h.request();
  ASSERT_TRUE(h.time.run_until([&] { return h.answered(); }, 60s));
  h.scaler->observe_throws = 1;
  h.time.advance(2s);
  EXPECT_EQ(h.metrics.controller_restarts_total.with({"b"}).value(), 1.0);
  ASSERT_TRUE(h.time.run_until([&] { return h.world.desired == 0; }, 120s));
  EXPECT_EQ(h.state(), "asleep");
}

}  // namespace
}  // namespace va::activator
