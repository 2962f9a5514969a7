// Several proxy replicas in front of one backend, in virtual time: each replica a real Backend
// (its controller, its queue) with its own scaler on one shared world (the Deployment), and a
// Coordinator on one shared in-memory Lease server. The scaler checks each scale-down against
// every replica's requests: nothing in flight or held anywhere (invariant c across replicas).
#include "coord/coordinator.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "unit/activator/harness.hpp"
#include "unit/coord/memory_lease_store.hpp"

namespace va::coord {
namespace {

using activator::Backend;
using activator::BackendSeams;
using activator::PendingBudget;
using activator::testing::FakeScaler;
using activator::testing::Request;
using activator::testing::World;
using testing::LeaseServer;
using testing::MemoryLeaseStore;
using va::testing::sleep_for;
using va::testing::VirtualTime;

constexpr auto kIdle = std::chrono::milliseconds(60s);
constexpr auto kLease = std::chrono::milliseconds(15s);
constexpr auto kBeat = std::chrono::milliseconds(2s);

struct Replica {
  std::string identity;
  FakeScaler* scaler = nullptr;
  std::optional<Backend> backend;
  MemoryLeaseStore* store = nullptr;
  std::unique_ptr<Coordinator> coord;
};

class Replicas : public ::testing::Test {
 protected:
  Replicas()
      : time_(ioc_),
        client_side_(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)),
        pool_(upstream::Pool::Settings{
            .target = {.host = "127.0.0.1", .port = "9", .host_header = "test", .headers = {}}}),
        budget_(1 << 20) {
    world_.load_time = 20s;
  }

  ~Replicas() override {
    for (auto& c : clients_) {
      error_code ec;
      c.close(ec);
    }
    for (auto& r : replicas_) {
      r.store->unreachable = true;
      r.store->unstick();
    }
    time_.settle();
  }

  // Replicas start 0.7 s apart, as processes do: their heartbeats are not in step.
  Replica& add(const std::string& identity) {
    if (!replicas_.empty()) {
      time_.advance(700ms);
    }
    auto& r = replicas_.emplace_back();
    r.identity = identity;
    auto& metrics = metrics_.emplace_back();
    r.backend.emplace(
        Backend::Settings{
            .name = "b",
            .idle_timeout = idle_,
            .wake_timeout = 120s,
            .max_pending = 1000,
            .health = config::Health{.path = "/health", .interval = 1s, .headers = {}},
            .replicas = 1,
            .autoscale = autoscale_,
            .learn_models = false},
        ioc_.get_executor(),
        [this, &r](Executor) {
          auto s = std::make_unique<FakeScaler>(world_, time_);
          r.scaler = s.get();
          return s;
        },
        pool_, metrics, budget_,
        BackendSeams{.time = &time_,
                     .probe = [&r](const std::string& path) { return r.scaler->answer(path); }});
    auto store = std::make_unique<MemoryLeaseStore>(server_);
    r.store = store.get();
    r.coord = std::make_unique<Coordinator>(Settings{.identity = identity,
                                                     .lease_name = "va",
                                                     .lease_duration = kLease,
                                                     .heartbeat_interval = kBeat},
                                            ioc_.get_executor(), std::move(store),
                                            std::vector<Backend*>{&*r.backend}, metrics, time_);
    r.backend->set_peers(r.coord.get());
    // Each scaler checks a scale-down against every replica's requests.
    std::vector<Backend*> all;
    for (auto& x : replicas_) {
      all.push_back(&*x.backend);
    }
    for (auto& x : replicas_) {
      x.scaler->backend = &*x.backend;
      std::vector<Backend*> others;
      for (auto* y : all) {
        if (y != &*x.backend) {
          others.push_back(y);
        }
      }
      x.scaler->other_replica = others.size() > 0 ? others[0] : nullptr;
      x.scaler->third_replica = others.size() > 1 ? others[1] : nullptr;
    }
    r.backend->start();
    r.coord->start();
    time_.settle();
    return r;
  }

  // A request through `r`; when granted it is in flight for `hold`.
  Request& request(Replica& r, Clock::duration hold = 1s) {
    auto& q = requests_.emplace_back();
    auto& server_side = server_sockets_.emplace_back(ioc_);
    auto& c = clients_.emplace_back(ioc_);
    c.connect(client_side_.local_endpoint());
    server_side = client_side_.accept();
    q.client = &c;
    spawn(ioc_.get_executor(),
          activator::testing::serve_request(*r.backend, *r.scaler, time_, q, server_side, hold),
          "request");
    time_.settle();
    return q;
  }

  // Every scale call of every replica, checked against every replica's requests.
  void expect_no_violation() {
    for (auto& r : replicas_) {
      EXPECT_TRUE(r.scaler->violations.empty()) << r.identity << ": " << r.scaler->violations[0];
    }
  }
  int downs() const {
    int n = 0;
    for (const auto& r : replicas_) {
      n += r.scaler->downs();
    }
    return n;
  }
  Replica* leader() {
    for (auto& r : replicas_) {
      if (r.coord->leading()) {
        return &r;
      }
    }
    return nullptr;
  }
  bool all_answered() const {
    return std::all_of(requests_.begin(), requests_.end(),
                       [](const Request& q) { return q.ended.has_value(); });
  }
  bool all_ok() const {
    return std::all_of(requests_.begin(), requests_.end(),
                       [](const Request& q) { return q.result && q.result->has_value(); });
  }

  // Replicas a and b, once a leads (it started first).
  std::pair<Replica&, Replica&> a_leading_b() {
    auto& a = add("a");
    auto& b = add("b");
    time_.advance(5s);
    EXPECT_TRUE(a.coord->leading());
    return {a, b};
  }

  // A request through `r`, run until it is answered; returns when it ended.
  Clock::time_point serve(Replica& r, Clock::duration hold = 1s) {
    auto& q = request(r, hold);
    EXPECT_TRUE(time_.run_until([&] { return q.ended.has_value(); }, 300s));
    EXPECT_TRUE(q.result && q.result->has_value()) << r.identity;
    return q.ended.value_or(time_.now());
  }
  // Starts `r`'s shutdown; the flag is set once shutdown() has returned.
  const bool& shut_down(Replica& r) {
    auto& done = shut_.emplace_back(false);
    net::co_spawn(
        ioc_,
        [&r, &done]() -> task<void> {
          co_await r.coord->shutdown();
          done = true;
        },
        net::detached);
    return done;
  }
  // When the first scale-down of the run was made (by any replica).
  std::optional<Clock::time_point> first_down() const {
    std::optional<Clock::time_point> at;
    for (const auto& r : replicas_) {
      for (const auto& c : r.scaler->calls) {
        if (c.replicas == 0 && c.ok && (!at || c.at < *at)) {
          at = c.at;
        }
      }
    }
    return at;
  }

  std::chrono::milliseconds idle_ = kIdle;  // of the replicas added from then on
  std::optional<activity::DesiredReplicas::Settings> autoscale_;  // likewise
  net::io_context ioc_;
  VirtualTime time_;
  World world_;
  LeaseServer server_;
  // Before the replicas: a Backend's metrics outlive it (its destructor removes its sampled
  // gauge's source).
  std::list<metrics::Metrics> metrics_;
  std::list<Replica> replicas_;
  std::list<Request> requests_;
  std::list<bool> shut_;

 private:
  Acceptor client_side_;
  std::list<Socket> clients_;
  std::list<Socket> server_sockets_;
  upstream::Pool pool_;
  PendingBudget budget_;
};

TEST_F(Replicas, OneLeaderIsElectedAndTheOthersFollowIt) {
  auto& a = add("a");
  auto& b = add("b");
  auto& c = add("c");
  time_.advance(5s);
  ASSERT_NE(leader(), nullptr);
  EXPECT_EQ(a.coord->leading() + b.coord->leading() + c.coord->leading(), 1);
  EXPECT_EQ(server_.leases.size(), 4u);  // the leader's and three members'
  const auto status = b.coord->status();
  EXPECT_EQ(status.at("leader").as_string(), leader()->identity);
  EXPECT_EQ(status.at("members").as_array().size(), 3u);
}

TEST_F(Replicas, TrafficThroughAFollowerOnlyKeepsTheBackendUpThenTheLeaderStopsIt) {
  auto [a, b] = a_leading_b();
  serve(b);
  ASSERT_EQ(world_.desired, 1);
  // A request through b every 40 s for 5 minutes, each 30 s long: the leader sees no traffic of
  // its own for longer than idle_timeout, and must not stop the backend.
  Clock::time_point last{};
  for (int i = 0; i < 8; ++i) {
    time_.advance(10s);
    last = serve(b, 30s);
    EXPECT_EQ(downs(), 0) << "round " << i;
  }
  ASSERT_TRUE(time_.run_until([&] { return downs() > 0; }, 5min));
  const auto at = *first_down();
  EXPECT_GE(at, last + kIdle);
  EXPECT_LE(at, last + kIdle + 3 * kBeat);
  EXPECT_EQ(a.scaler->downs(), 1);  // the leader, and only it
  EXPECT_EQ(b.scaler->downs(), 0);
  EXPECT_EQ(world_.desired, 0);
  expect_no_violation();
}

TEST_F(Replicas, TheLeaderSizesTheBackendForTheLoadOnEveryReplica) {
  autoscale_ = activity::DesiredReplicas::Settings{.min_replicas = 1,
                                                   .max_replicas = 4,
                                                   .target_in_flight = 2,
                                                   .stable_window = 60s,
                                                   .panic_window = 6s,
                                                   .scale_down_every = 60s};
  auto [a, b] = a_leading_b();
  serve(b);
  ASSERT_EQ(world_.desired, 1);
  ASSERT_EQ(b.scaler->calls.size(), 1u);  // b woke it
  // 8 requests through b, none through the leader: only the leader adds pods, for b's load.
  for (int i = 0; i < 8; ++i) {
    request(b, 120s);
  }
  ASSERT_TRUE(time_.run_until([&] { return world_.desired == 4; }, 20s));
  EXPECT_EQ(b.scaler->calls.size(), 1u);
  EXPECT_GE(a.scaler->calls.size(), 1u);
  EXPECT_EQ(a.backend->in_flight(), 0u);
  ASSERT_TRUE(time_.run_until([&] { return all_answered(); }, 130s));
  EXPECT_TRUE(all_ok());
  expect_no_violation();
}

TEST_F(Replicas, ARequestThatLandsOnAFollowerAroundTheFenceIsServedAndNeverCut) {
  auto [a, b] = a_leading_b();
  serve(a);
  // Each round: the leader proposes the scale-down; a request lands on b at an offset from the
  // proposal, before, during and after b has fenced and answered. Either the fence sees it (no
  // stop) or the stop came first and the request, held, wakes the backend again: it is served
  // either way, and nothing is stopped under it.
  int stopped_first = 0;
  for (int round = 0; round < 24; ++round) {
    const int downs_before = downs();
    ASSERT_TRUE(time_.run_until([&] { return !a.coord->status().at("fence").is_null(); }, 5min))
        << "round " << round;
    time_.advance(std::chrono::milliseconds(200 * round));
    auto& q = request(b, 2s);
    ASSERT_TRUE(time_.run_until([&] { return q.ended.has_value(); }, 180s)) << "round " << round;
    EXPECT_TRUE(q.result && q.result->has_value()) << "round " << round;
    // Granted only while the backend was up: never sent to one stopped under it.
    EXPECT_TRUE(q.served_by_ready_world) << "round " << round;
    stopped_first += downs() > downs_before ? 1 : 0;
    expect_no_violation();
  }
  std::printf("rounds in which the stop came before the request: %d of 24\n", stopped_first);
  EXPECT_LT(stopped_first, 24);  // the early offsets land inside the fence
}

TEST_F(Replicas, AfterAScaleDownAFollowerThatWokeTheBackendAnswersTheNextFenceAtOnce) {
  // A short idle_timeout and a fast load: the next fence comes well within twice lease_duration
  // of the stop, while the follower may still remember the stopping fence it answered.
  idle_ = 5s;
  world_.load_time = 2s;
  auto [a, b] = a_leading_b();
  serve(a);
  ASSERT_TRUE(time_.run_until([&] { return downs() == 1; }, 5min));
  const auto last = serve(b);  // held by b, which wakes the backend again
  ASSERT_TRUE(time_.run_until([&] { return downs() == 2; }, 5min));
  Clock::time_point second{};
  for (const auto& c : a.scaler->calls) {
    if (c.replicas == 0 && c.ok) {
      second = c.at;
    }
  }
  EXPECT_GE(second, last + idle_);
  EXPECT_LE(second, last + idle_ + 3 * kBeat);  // not held back by a fence nobody answered
  EXPECT_EQ(b.scaler->downs(), 0);
  expect_no_violation();
}

TEST_F(Replicas, AReplicaCutOffFromTheApiCountsUntilItsLeaseExpiresThenIsIgnored) {
  auto [a, b] = a_leading_b();
  serve(a);
  time_.advance(50s);
  auto& q = request(b, 10s);  // in flight on b from 50 s after a's last request to 60 s
  time_.advance(5s);
  b.store->unreachable = true;  // its last word: one request in flight
  const auto cut = time_.now();
  ASSERT_TRUE(time_.run_until([&] { return q.ended.has_value(); }, 30s));
  ASSERT_TRUE(time_.run_until([&] { return downs() > 0; }, 5min));
  const auto at = *first_down();
  // Not while b's Lease is live (it last changed before the cut), soon after.
  EXPECT_GE(at, cut - kBeat + kLease);
  EXPECT_LE(at, cut + kLease + 3 * kBeat);
  EXPECT_EQ(a.scaler->downs(), 1);
  expect_no_violation();
}

TEST_F(Replicas, WhenTheLeaderIsCutOffAnotherTakesOverAndWaitsALeaseDurationBeforeStopping) {
  auto [a, b] = a_leading_b();
  const auto last = serve(a);
  time_.advance(30s);
  a.store->unreachable = true;  // killed, as far as b can tell
  const auto cut = time_.now();
  ASSERT_TRUE(time_.run_until([&] { return b.coord->leading(); }, 60s));
  const auto took_over = time_.now();
  EXPECT_LE(took_over, cut + kLease + kBeat);
  EXPECT_FALSE(a.coord->leading());  // it stepped down: it could not renew
  ASSERT_TRUE(time_.run_until([&] { return downs() > 0; }, 5min));
  const auto at = *first_down();
  EXPECT_GE(at, last + kIdle);
  EXPECT_GE(at, took_over + kLease);
  EXPECT_LE(at, std::max(last + kIdle, took_over + kLease) + 3 * kBeat);
  EXPECT_EQ(b.scaler->downs(), 1);
  EXPECT_EQ(a.scaler->downs(), 0);
  expect_no_violation();
}

TEST_F(Replicas, ALeaderThatShutsDownHandsOverAtOnce) {
  auto [a, b] = a_leading_b();
  const bool& shut = shut_down(a);
  ASSERT_TRUE(time_.run_until([&] { return shut; }, 10s));
  const auto released = time_.now();
  ASSERT_TRUE(time_.run_until([&] { return b.coord->leading(); }, 30s));
  EXPECT_LE(time_.now(), released + 2 * kBeat);  // not a lease_duration later
  EXPECT_EQ(server_.leases.at("va-a").duration_seconds, 1);
}

// A rolling update: a follower serves its last request and shuts down; its released Lease still
// tells when that request ended, so the leader stops the backend idle_timeout after it, not at
// once.
TEST_F(Replicas, AFollowerThatShutsDownAfterItsLastRequestStillHoldsTheScaleDownToIdleTimeout) {
  auto [a, b] = a_leading_b();
  serve(a);
  time_.advance(kIdle / 2);
  const auto last = serve(b);
  const bool& shut = shut_down(b);
  ASSERT_TRUE(time_.run_until([&] { return shut; }, 10s));
  ASSERT_TRUE(time_.run_until([&] { return downs() > 0; }, 5min));
  EXPECT_GE(*first_down(), last + kIdle);
  EXPECT_LE(*first_down(), last + kIdle + 3 * kBeat);
  expect_no_violation();
}

// POST /admin/backends/b/sleep on coordinated replicas: refused on a follower (naming the
// leader); on the leader, proposed to every replica with an idle_timeout of 0, so it stops nothing
// while another replica serves, and stops the backend at once when none does.
TEST_F(Replicas, AnAdminSleepIsAgreedByEveryReplicaAndRefusedOnAFollower) {
  auto [a, b] = a_leading_b();
  serve(a);
  time_.advance(kLease);  // past the new leader's own wait
  const auto refused = b.backend->sleep("admin sleep");
  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->find("ask the leader (a)"), std::string::npos) << *refused;

  auto& q = request(b, 30s);
  time_.advance(2 * kBeat);                                   // b's report says so
  EXPECT_FALSE(a.backend->sleep("admin sleep").has_value());  // a itself is idle: accepted
  time_.advance(5s);
  EXPECT_EQ(downs(), 0) << "stopped under b's request";
  ASSERT_TRUE(time_.run_until([&] { return q.ended.has_value(); }, 60s));
  EXPECT_TRUE(q.result && q.result->has_value());

  time_.advance(2 * kBeat);  // b's report: done, idle
  const auto asked = time_.now();
  EXPECT_FALSE(a.backend->sleep("admin sleep").has_value());
  ASSERT_TRUE(time_.run_until([&] { return downs() == 1; }, 30s));
  EXPECT_LE(*first_down(), asked + 3 * kBeat);  // not idle_timeout later
  EXPECT_EQ(a.scaler->downs(), 1);
  expect_no_violation();
}

// The Lease release writes of a shutdown, to an API server that takes them and never answers: the
// proxy's exit is not held for them longer than the bound (two heartbeats, at most 5 s); the
// Leases then expire by themselves, as a killed replica's do.
TEST_F(Replicas, AShutdownGivesUpReleasingTheLeasesWhenTheApiDoesNotAnswer) {
  auto [a, b] = a_leading_b();
  a.store->hanging = true;
  const auto began = time_.now();
  const bool& shut = shut_down(a);
  ASSERT_TRUE(time_.run_until([&] { return shut; }, 60s)) << "shutdown still waiting on the API";
  EXPECT_EQ(time_.now() - began, 2 * kBeat);
  EXPECT_EQ(server_.leases.at("va-a").duration_seconds, 15);  // not released
  ASSERT_TRUE(time_.run_until([&] { return b.coord->leading(); }, 30s));
  EXPECT_GE(time_.now(), began + kLease - 2 * kBeat);  // once the leader Lease expired
}

// The same API server, with a heartbeat already waiting on it when the shutdown begins: the bound
// is for the whole shutdown, that heartbeat included.
TEST_F(Replicas, AShutdownDoesNotWaitOnAHeartbeatTheApiDoesNotAnswerBeyondTheBound) {
  auto [a, b] = a_leading_b();
  a.store->hanging = true;
  time_.advance(kBeat);  // a's next heartbeat has begun, and waits
  const auto began = time_.now();
  const bool& shut = shut_down(a);
  ASSERT_TRUE(time_.run_until([&] { return shut; }, 60s)) << "shutdown still waiting on the API";
  EXPECT_EQ(time_.now() - began, 2 * kBeat);
}

// The setup checks, at start and every minute: a Lease verb the Role lacks is a setup problem (in
// /status) from the next check on, an API that does not answer changes nothing, and the first
// check that finds it granted clears it.
TEST_F(Replicas, ALeaseVerbTheRoleLacksIsASetupProblemFromOneCheckToTheNext) {
  auto& a = add("a");
  EXPECT_EQ(a.coord->setup_problems(), std::vector<std::string>{});  // checked at start
  const std::string missing = R"(cannot update coordination.k8s.io/leases in namespace "llm")";
  a.store->refused = {missing};
  time_.advance(60s);
  EXPECT_EQ(a.coord->setup_problems(), std::vector{missing});
  EXPECT_EQ(a.coord->status().at("problems").as_array(), boost::json::array{missing.c_str()});
  a.store->unreachable = true;
  time_.advance(60s);
  EXPECT_EQ(a.coord->setup_problems(), std::vector{missing});
  a.store->unreachable = false;
  a.store->refused.clear();
  time_.advance(12s);  // the next try, after a failed check: 1 s, ±50%
  EXPECT_EQ(a.coord->setup_problems(), std::vector<std::string>{});
}

}  // namespace
}  // namespace va::coord
