#include "core/deadline.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <thread>

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

TEST(MovingDeadline, DestroyedOnAnotherThreadWhileItsTimerFires) {
  // With threads > 1 a pooled connection may be dropped by another thread's session
  // (Pool::release) or by the shutdown (Pool::clear) just as its deadline's timer fires on its own
  // thread: the handler must then touch nothing of it (ASan checks this in CI).
  Quiet q;
  auto busy = net::make_work_guard(q.ioc);
  std::thread own([&] { q.ioc.run(); });
  int expired = 0;
  for (int i = 0; i < 200; ++i) {
    auto d = std::make_unique<MovingDeadline>(q.ioc.get_executor());
    d->watch(q.ours, Clock::now() + std::chrono::microseconds(100 * (i % 20)));
    if (i % 4 == 0) {
      d->pause();  // as in the pool
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50 * (i % 40)));
    expired += d->expired();
    d.reset();
  }
  busy.reset();
  own.join();
  EXPECT_GT(expired, 0);
  EXPECT_LT(expired, 200);
}

}  // namespace
}  // namespace va
