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
    }
    time_.settle();
  }

  Replica& add(const std::string& identity) {
    auto& r = replicas_.emplace_back();
    r.identity = identity;
    auto& metrics = metrics_.emplace_back();
    r.backend.emplace(
        Backend::Settings{
            .name = "b",
            .idle_timeout = kIdle,
            .wake_timeout = 120s,
            .max_pending = 1000,
            .health = config::Health{.path = "/health", .interval = 1s, .headers = {}},
            .replicas = 1,
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
      x.scaler->backend = all[0];
      x.scaler->other_replica = all.size() > 1 ? all[1] : nullptr;
      x.scaler->third_replica = all.size() > 2 ? all[2] : nullptr;
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
    spawn(ioc_.get_executor(), run_request(r, q, server_side, hold), "request");
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

  net::io_context ioc_;
  VirtualTime time_;
  World world_;
  LeaseServer server_;
  std::list<Replica> replicas_;
  std::list<metrics::Metrics> metrics_;
  std::list<Request> requests_;

 private:
  task<void> run_request(Replica& r, Request& q, Socket& s, Clock::duration hold) {
    auto got = co_await r.backend->acquire(10, s);
    if (got) {
      q.served_by_ready_world = r.scaler->ready() > 0;
      q.lease = std::move(got->lease);
      q.result.emplace(std::move(*got));
      co_await sleep_for(time_, hold);
      q.lease.reset();
    } else {
      q.result.emplace(std::move(got));
    }
    q.ended = time_.now();
  }

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

}  // namespace
}  // namespace va::coord
