// The backend state machine against a fake scaler and an in-process health endpoint.
// Real time with short timeouts: the waits are tens of milliseconds.
#include "activator/backend.hpp"

#include <gtest/gtest.h>

#include <optional>

#include "core/spawn.hpp"

namespace va::activator {
namespace {

class FakeScaler final : public scaler::Scaler {
 public:
  task<outcome<void>> scale_to(int replicas, std::string cause) override {
    causes.push_back(std::move(cause));
    (replicas > 0 ? scale_ups : scale_downs)++;
    if (unavailable > 0) {
      --unavailable;
      co_return fail(errc::scaler_unavailable, "kubernetes API: connection refused");
    }
    replicas_ = replicas;
    co_return outcome<void>{};
  }
  task<outcome<scaler::Observed>> observe() override {
    if (scaled_down_by_someone) {
      scaled_down_by_someone = false;
      replicas_ = 0;
    }
    co_return scaler::Observed{.desired = replicas_,
                               .ready = never_ready ? 0 : replicas_,
                               .fatal = replicas_ > 0 && !fatal_reason.empty(),
                               .reason = fatal_reason};
  }
  int scale_ups = 0;    // calls, failed ones included
  int scale_downs = 0;  // calls, failed ones included
  std::vector<std::string> causes;
  bool never_ready = false;
  std::string fatal_reason;
  int unavailable = 0;                  // the next N scale_to calls fail as "API down"
  bool scaled_down_by_someone = false;  // the next observe() sees replicas 0

 private:
  int replicas_ = 0;
};

// Answers every connection with 200 and closes it: the health probe's upstream.
task<void> health_server(Acceptor& acceptor) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
    if (ec) {
      co_return;
    }
    beast::flat_buffer buf;
    http::request<http::empty_body> req;
    co_await http::async_read(socket, buf, req, use_nothrow);
    static constexpr std::string_view kOk =
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    co_await net::async_write(socket, net::buffer(kOk), use_nothrow);
  }
}

// A request: its outcome lands in `out`. A plain function, not a capturing lambda: a coroutine
// lambda's captures live in the closure object, which would be gone before the first resume.
task<void> acquire_into(Backend& b, Socket& s, std::optional<outcome<Acquired>>& out) {
  out.emplace(co_await b.acquire(10, s));
}

class BackendTest : public ::testing::Test {
 protected:
  BackendTest()
      : health_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)),
        client_side_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)),
        pool_(upstream::Pool::Settings{
            .target = {.host = "127.0.0.1",
                       .port = std::to_string(health_.local_endpoint().port()),
                       .host_header = "test",
                       .headers = {}}}),
        budget_(1 << 20) {
    spawn(ioc_.get_executor(), health_server(health_), "health server");
  }

  Backend& make(std::chrono::milliseconds idle, std::chrono::milliseconds wake = 2s) {
    backend_.emplace(
        Backend::Settings{
            .name = "b",
            .idle_timeout = idle,
            .wake_timeout = wake,
            .max_pending = 1000,
            .health = config::Health{.path = "/health", .interval = 20ms, .headers = {}},
            .replicas = 1},
        ioc_.get_executor(),
        [this](Executor) {
          auto s = std::make_unique<FakeScaler>();
          scaler_ = s.get();
          return s;
        },
        pool_, metrics_, budget_);
    backend_->start();
    return *backend_;
  }

  // A connected socket standing for a client that stays.
  Socket client() {
    Socket c(ioc_);
    c.connect(client_side_.local_endpoint());
    clients_.push_back(std::move(c));
    return client_side_.accept();
  }

  // One request from a client that stays: how it ended (errc::ok "no answer" if it never did)
  // and how long it took.
  std::pair<outcome<Acquired>, Clock::duration> acquire_one(Backend& b) {
    auto s = client();
    std::optional<outcome<Acquired>> result;
    const auto start = Clock::now();
    spawn(ioc_.get_executor(), acquire_into(b, s, result), "request");
    run_until([&] { return result.has_value(); });
    if (!result) {
      result.emplace(Failure{errc::ok, "no answer"});
    }
    return {std::move(*result), Clock::now() - start};
  }

  void run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
    const auto deadline = Clock::now() + limit;
    while (!done() && Clock::now() < deadline) {
      ioc_.run_for(5ms);
    }
  }

  net::io_context ioc_;
  Acceptor health_;
  Acceptor client_side_;
  std::vector<Socket> clients_;
  metrics::Metrics metrics_;
  upstream::Pool pool_;
  PendingBudget budget_;
  FakeScaler* scaler_ = nullptr;
  std::optional<Backend> backend_;
};

TEST_F(BackendTest, ManyHeldRequestsCauseExactlyOneScaleUp) {
  auto& b = make(10s);
  constexpr int kRequests = 50;
  std::vector<Socket> sockets;
  for (int i = 0; i < kRequests; ++i) {
    sockets.push_back(client());
  }
  std::vector<std::optional<outcome<Acquired>>> results(kRequests);
  for (int i = 0; i < kRequests; ++i) {
    spawn(ioc_.get_executor(), acquire_into(b, sockets[i], results[i]), "request");
  }
  auto granted = [&] {
    return std::count_if(results.begin(), results.end(),
                         [](const auto& r) { return r && *r && (*r)->waited_ms; });
  };
  run_until([&] { return granted() == kRequests; });
  EXPECT_EQ(granted(), kRequests);
  results.clear();  // the leases end
  EXPECT_EQ(scaler_->scale_ups, 1);
  EXPECT_EQ(b.status().at("state").as_string(), "ready");
  EXPECT_EQ(b.in_flight(), 0u);
}

TEST_F(BackendTest, IdleClockStartsWhenTheLastRequestEnds) {
  auto& b = make(100ms);
  auto s = client();
  std::optional<outcome<Acquired>> lease;
  spawn(ioc_.get_executor(), acquire_into(b, s, lease), "request");
  run_until([&] { return lease.has_value(); });
  ASSERT_TRUE(lease.has_value() && *lease);
  // Held for 4x idle_timeout: no scale-down while it is in flight.
  run_until([] { return false; }, 400ms);
  EXPECT_EQ(scaler_->scale_downs, 0);
  const auto released = Clock::now();
  lease.reset();
  run_until([&] { return scaler_->scale_downs == 1; });
  EXPECT_EQ(scaler_->scale_downs, 1);
  EXPECT_GE(Clock::now() - released, 90ms);
  EXPECT_EQ(b.status().at("state").as_string(), "asleep");
}

TEST_F(BackendTest, AFatalReasonFailsHeldRequestsAtOnceWithIt) {
  auto& b = make(10s, 10s);
  scaler_->fatal_reason = "process exited with status 3: CUDA out of memory";
  auto [result, took] = acquire_one(b);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, errc::backend_failed);
  EXPECT_NE(result.error().message.find("CUDA out of memory"), std::string::npos);
  EXPECT_LT(took, 1s);
  EXPECT_EQ(b.status().at("state").as_string(), "failed");
}

TEST_F(BackendTest, AHeldRequestTimesOutAfterWakeTimeout) {
  auto& b = make(10s, 150ms);
  scaler_->never_ready = true;
  auto [result, took] = acquire_one(b);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, errc::wake_timeout);
  EXPECT_GE(took, 140ms);
  // Nobody waits any more: the wake gives up and the GPU goes back.
  run_until([&] { return scaler_->scale_downs == 1; });
  EXPECT_EQ(scaler_->scale_downs, 1);
}

TEST_F(BackendTest, AFullQueueRefusesAtOnce) {
  auto& b = make(10s, 2s);
  scaler_->never_ready = true;
  std::vector<Socket> sockets;
  for (int i = 0; i < 1001; ++i) {
    sockets.push_back(client());
  }
  std::vector<std::optional<outcome<Acquired>>> results(sockets.size());
  for (std::size_t i = 0; i < sockets.size(); ++i) {
    spawn(ioc_.get_executor(), acquire_into(b, sockets[i], results[i]), "request");
  }
  auto queue_full = [&] {
    return std::count_if(results.begin(), results.end(), [](const auto& r) {
      return r && !*r && r->error().code == errc::queue_full;
    });
  };
  run_until([&] { return queue_full() == 1; }, 1s);
  EXPECT_EQ(queue_full(), 1);
  EXPECT_EQ(b.status().at("pending").to_number<std::int64_t>(), 1000);
}

}  // namespace
}  // namespace va::activator

namespace va::activator {
namespace {

TEST_F(BackendTest, AnUnavailableScalerIsRetriedWhileRequestsWait) {
  auto& b = make(10s, 10s);
  scaler_->unavailable = 2;
  auto [result, took] = acquire_one(b);
  ASSERT_TRUE(result) << result.error().message;
  EXPECT_EQ(scaler_->scale_ups, 3);  // two refused, then accepted
  EXPECT_GE(took, 700ms);            // 250 ms, then 500 ms of backoff
  ASSERT_EQ(scaler_->causes.size(), 3u);
  EXPECT_EQ(scaler_->causes[0], "1 request held");
  EXPECT_EQ(b.status().at("state").as_string(), "ready");
}

TEST_F(BackendTest, HeldRequestsGetTheScalerErrorAtWakeTimeout) {
  auto& b = make(10s, 600ms);
  scaler_->unavailable = 1000;
  auto [result, took] = acquire_one(b);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, errc::wake_timeout);
  EXPECT_NE(result.error().message.find("kubernetes API: connection refused"), std::string::npos)
      << result.error().message;
  EXPECT_GE(took, 550ms);
  // Nobody waits: the wake ends as failed instead of retrying forever.
  run_until([&] { return b.status().at("state").as_string() == "failed"; });
  EXPECT_EQ(b.status().at("state").as_string(), "failed");
  const int calls = scaler_->scale_ups;
  run_until([] { return false; }, 300ms);
  EXPECT_EQ(scaler_->scale_ups, calls);  // and nothing spins
  EXPECT_LE(calls, 6);
}

TEST_F(BackendTest, AScaleDownBySomeoneElseDuringTheWakeIsUndone) {
  auto& b = make(10s, 5s);
  scaler_->never_ready = true;
  auto s = client();
  std::optional<outcome<Acquired>> result;
  spawn(ioc_.get_executor(), acquire_into(b, s, result), "request");
  run_until([&] { return scaler_->scale_ups == 1; });
  scaler_->scaled_down_by_someone = true;
  run_until([&] { return scaler_->scale_ups == 2; });
  EXPECT_EQ(scaler_->scale_ups, 2);
  scaler_->never_ready = false;
  run_until([&] { return result.has_value(); });
  ASSERT_TRUE(result.has_value() && *result);
  EXPECT_EQ(scaler_->scale_ups, 2);
}

TEST_F(BackendTest, AnIdleScaleDownIsRetriedWhileTheScalerIsUnavailable) {
  auto& b = make(50ms);
  {
    auto [result, took] = acquire_one(b);
    ASSERT_TRUE(result);
  }
  scaler_->unavailable = 2;
  run_until([&] { return b.status().at("state").as_string() == "asleep"; });
  EXPECT_EQ(b.status().at("state").as_string(), "asleep");
  EXPECT_EQ(scaler_->scale_downs, 3);
  EXPECT_EQ(scaler_->causes.back(), "idle for 50ms");
}

}  // namespace
}  // namespace va::activator
