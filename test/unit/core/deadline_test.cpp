#include "core/deadline.hpp"

#include <gtest/gtest.h>

#include "unit/core/loopback.hpp"

namespace va {
namespace {

// A pair whose `ours` end is read while nothing arrives.
struct Quiet : LoopbackPair {
  // Reads until the deadline cuts the read; how long that took.
  Clock::duration read_until_cut(MovingDeadline& d) {
    const auto start = Clock::now();
    error_code got;
    char byte = 0;
    ours.async_read_some(net::buffer(&byte, 1), [&](error_code ec, std::size_t) {
      got = ec;
      d.pause();
    });
    ioc.run_for(std::chrono::seconds(10));
    EXPECT_EQ(got, net::error::operation_aborted);
    return Clock::now() - start;
  }
};

TEST(MovingDeadline, CutsTheSocketsReadWhenItPasses) {
  Quiet q;
  MovingDeadline d(q.ioc.get_executor());
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(50));
  EXPECT_LT(q.read_until_cut(d), std::chrono::seconds(5));
  EXPECT_TRUE(d.expired());
}

TEST(MovingDeadline, ADueTimeMovedEarlierIsKept) {
  // The body's limit (long), then the next head's (short): the short one must hold.
  Quiet q;
  MovingDeadline d(q.ioc.get_executor());
  d.watch(q.ours, Clock::now() + std::chrono::seconds(60));
  d.pause();
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(50));
  EXPECT_LT(q.read_until_cut(d), std::chrono::seconds(5));
  EXPECT_TRUE(d.expired());
}

TEST(MovingDeadline, ADueTimeMovedLaterIsKept) {
  Quiet q;
  MovingDeadline d(q.ioc.get_executor());
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(20));
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(300));
  EXPECT_GE(q.read_until_cut(d), std::chrono::milliseconds(250));
  EXPECT_TRUE(d.expired());
}

TEST(MovingDeadline, PausedItCutsNothingAndItsWaitEnds) {
  // A pooled upstream connection: paused, its deadline cuts nothing, and its pending wait ends
  // by the due time, so it does not keep the event loop running.
  Quiet q;
  MovingDeadline d(q.ioc.get_executor());
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(50));
  d.pause();
  const auto start = Clock::now();
  q.ioc.run_for(std::chrono::seconds(10));  // returns once no work is left
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(d.expired());
  // Watched again, it cuts as before.
  q.ioc.restart();
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(50));
  EXPECT_LT(q.read_until_cut(d), std::chrono::seconds(5));
  EXPECT_TRUE(d.expired());
}

TEST(MovingDeadline, CutsOnTheWatchersExecutor) {
  // A pooled upstream connection's deadline runs on the pool's executor; the exchange that
  // watches it runs on its session's. The cut must happen there, never beside the session.
  Quiet q;
  net::io_context session;
  MovingDeadline d(q.ioc.get_executor());
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(20), session.get_executor());
  error_code got;
  bool done = false;
  char byte = 0;
  q.ours.async_read_some(net::buffer(&byte, 1), [&](error_code ec, std::size_t) {
    got = ec;
    done = true;
  });
  // The timer passes on the deadline's executor: expired, but nothing cut yet.
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!d.expired() && Clock::now() < until) {
    q.ioc.run_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(d.expired());
  q.ioc.restart();
  q.ioc.poll();
  EXPECT_FALSE(done);
  // The session's executor cuts the read.
  EXPECT_EQ(session.poll(), 1U);
  q.ioc.restart();
  q.ioc.run_for(std::chrono::seconds(5));
  EXPECT_TRUE(done);
  EXPECT_EQ(got, net::error::operation_aborted);
}

TEST(MovingDeadline, AWatchBeforeTheCutLandsKeepsTheSocket) {
  // The exchange read something and watches again before the session runs the expiry's cut:
  // the cut is stale and must not land.
  Quiet q;
  net::io_context session;
  MovingDeadline d(q.ioc.get_executor());
  d.watch(q.ours, Clock::now() + std::chrono::milliseconds(20), session.get_executor());
  bool done = false;
  char byte = 0;
  q.ours.async_read_some(net::buffer(&byte, 1), [&](error_code, std::size_t) { done = true; });
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!d.expired() && Clock::now() < until) {
    q.ioc.run_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(d.expired());
  d.watch(q.ours, Clock::now() + std::chrono::seconds(60), session.get_executor());
  session.poll();
  q.ioc.restart();
  q.ioc.run_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(done);
  EXPECT_FALSE(d.expired());
  q.ours.cancel();
  q.ioc.run_one_for(std::chrono::seconds(5));  // (the 60 s wait is still pending)
  EXPECT_TRUE(done);
}

}  // namespace
}  // namespace va
