#pragma once
// A backend in virtual time against a simulated world: a scaler whose calls can fail, replicas
// that take time to load, a health endpoint that answers as the world is. Each scale call is
// checked against the invariants as it is made (README.md, "Invariants"), each request against
// them when it is granted.
#include <gtest/gtest.h>

#include <deque>
#include <list>
#include <optional>
#include <string>
#include <vector>

#include "activator/backend.hpp"
#include "core/spawn.hpp"
#include "unit/support/virtual_time.hpp"

namespace va::activator::testing {

using va::testing::sleep_for;
using va::testing::VirtualTime;

// The backend's replicas as they are, whatever the API says.
struct World {
  int desired = 0;               // the Deployment's spec.replicas, the process started or not
  Clock::time_point up_since{};  // when desired last went above 0
  // When each replica past the first was added (an autoscaled scale-up while up): each loads
  // for load_time from then.
  std::vector<Clock::time_point> added_since;
  Clock::duration load_time = 20s;  // from scale-up to ready
  bool wedged = false;              // the replica is up but not ready (NotReady, failing probes)
  int ready_limit = 1000;           // at most this many replicas become ready
  std::string fatal;                // the replica cannot start: the scaler reports this reason
  int probe_status = 200;           // what a loaded replica's health path answers
  std::vector<std::string> models = {"meta-llama/Llama-3.1-8B-Instruct"};  // its /v1/models
  bool exit_clears_on_restart = false;  // `fatal` is a process that exited, not a lasting cause
};

struct Call {
  Clock::time_point at;
  int replicas;
  bool ok;
};

class FakeScaler final : public scaler::Scaler {
 public:
  FakeScaler(World& world, VirtualTime& time) : world_(world), time_(time) {}

  task<outcome<void>> scale_to(int replicas, std::string cause) override {
    causes.push_back(cause);
    if (replicas == 0 && backend != nullptr &&
        (backend->in_flight() > 0 || backend->pending() > 0)) {
      violations.push_back("(c) scale_to(0) with " + std::to_string(backend->in_flight()) +
                           " in flight and " + std::to_string(backend->pending()) + " held");
    }
    // On another replica a request held (it came after every replica agreed) is served after
    // the next wake; one in flight would be cut.
    for (const Backend* b : {other_replica, third_replica}) {
      if (replicas == 0 && b != nullptr && b->in_flight() > 0) {
        violations.push_back("(c) scale_to(0) with " + std::to_string(b->in_flight()) +
                             " in flight on another replica");
      }
    }
    const auto index = calls.size();
    calls.push_back({time_.now(), replicas, false});  // as it is made; `ok` when it returns
    if (scale_delay > Clock::duration::zero()) {
      co_await sleep_for(time_, scale_delay);
    }
    std::optional<errc> failure;
    if (replicas == 0 && !fail_next_down.empty()) {
      failure = fail_next_down.front();
      fail_next_down.pop_front();
    } else if (!fail_next.empty()) {
      failure = fail_next.front();
      fail_next.pop_front();
    } else {
      failure = fail_always;
    }
    calls[index].ok = !failure;
    if (failure) {
      co_return fail(*failure, *failure == errc::scaler_unavailable
                                   ? "kubernetes API: connection refused"
                                   : "kubernetes API: 403 Forbidden");
    }
    if (replicas > 0 && world_.desired == 0) {
      world_.up_since = time_.now();
    }
    if (replicas > 0 && world_.exit_clears_on_restart) {
      world_.fatal.clear();  // a process that exited is started again
      world_.up_since = time_.now();
    }
    if (replicas == 0 && world_.desired > 0) {
      zeroed_at = time_.now();
    }
    const auto added = static_cast<std::size_t>(std::max(replicas - 1, 0));
    world_.added_since.resize(added, world_.desired > 0 ? time_.now() : world_.up_since);
    world_.desired = replicas;
    co_return outcome<void>{};
  }

  task<void> shutdown() override {
    shut_down = true;
    co_return;
  }

  task<outcome<scaler::Observed>> observe() override {
    ++observes;
    if (observe_throws > 0) {
      --observe_throws;
      throw std::runtime_error("a bug in observe()");
    }
    if (observe_unavailable) {
      co_return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
    }
    const bool dead = world_.desired > 0 && !world_.fatal.empty();
    co_return scaler::Observed{.desired = world_.desired,
                               .ready = ready(),
                               .fatal = dead,
                               .reason = dead ? world_.fatal : ""};
  }

  // Ready replicas: loaded, not wedged, not dead.
  int ready() const {
    const auto loaded = [&](Clock::time_point since) {
      return time_.now() - since >= world_.load_time;
    };
    if (world_.desired == 0 || !loaded(world_.up_since) || world_.wedged || !world_.fatal.empty()) {
      return 0;
    }
    const auto more = std::count_if(world_.added_since.begin(), world_.added_since.end(), loaded);
    return std::min(1 + static_cast<int>(more), world_.ready_limit);
  }
  // What the health path answers: 0 when nothing listens.
  int probe() const {
    const bool loaded = world_.desired > 0 && time_.now() - world_.up_since >= world_.load_time;
    return loaded && world_.fatal.empty() ? (world_.wedged ? 503 : world_.probe_status) : 0;
  }
  // GET `path` on the replica: the health path, or its model list.
  task<upstream::ProbeResult> answer(std::string path) {
    if (probe_delay > Clock::duration::zero()) {
      co_await sleep_for(time_, probe_delay);
    }
    const int status = probe();
    if (path == "/v1/models" && status == 200) {
      std::string body = R"({"object":"list","data":[)";
      for (const auto& m : world_.models) {
        body += body.back() == '[' ? "" : ",";
        body += R"({"id":")";
        body += m;
        body += R"(","object":"model"})";
      }
      co_return upstream::ProbeResult{200, {}, body + "]}"};
    }
    co_return upstream::ProbeResult{static_cast<unsigned>(status), {}, {}};
  }
  int ups() const { return count(true); }
  int downs() const { return count(false); }
  int count(bool up, bool ok_only = true) const {
    return static_cast<int>(std::count_if(calls.begin(), calls.end(), [&](const Call& c) {
      return (c.replicas > 0) == up && (c.ok || !ok_only);
    }));
  }

  Backend* backend = nullptr;
  // Other proxy replicas in front of the same world (test/unit/coord): their requests count too.
  Backend* other_replica = nullptr;
  Backend* third_replica = nullptr;
  std::deque<errc> fail_next;       // the next scale calls fail with these
  std::deque<errc> fail_next_down;  // the next scale-downs fail with these
  std::optional<errc> fail_always;  // then every one does
  Clock::duration scale_delay{};    // how long a scale call takes
  Clock::duration probe_delay{};    // how long a probe takes
  bool observe_unavailable = false;
  bool shut_down = false;
  int observe_throws = 0;
  int observes = 0;
  std::vector<Call> calls;
  std::vector<std::string> causes;
  std::vector<std::string> violations;
  std::optional<Clock::time_point> zeroed_at;

 private:
  World& world_;
  VirtualTime& time_;
};

// One client request: held, granted (and then in flight for `hold`) or refused.
struct Request {
  std::optional<outcome<Acquired>> result;
  std::optional<Lease> lease;              // while in flight
  std::optional<Clock::time_point> ended;  // the lease ended, or the refusal came
  bool served_by_ready_world = false;      // when granted, the world had a ready replica
  Socket* client = nullptr;
};

// `r` through `backend`: held, then in flight for `hold` once granted (checked against the world
// `scaler` sees), or refused.
inline task<void> serve_request(Backend& backend, const FakeScaler& scaler, VirtualTime& time,
                                Request& r, Socket& s, Clock::duration hold) {
  auto got = co_await backend.acquire(10, s);
  if (got) {
    r.served_by_ready_world = scaler.ready() > 0 && scaler.probe() == 200;
    r.lease = std::move(got->lease);  // not in this frame: the harness may end first
    r.result.emplace(std::move(*got));
    co_await sleep_for(time, hold);
    r.lease.reset();
  } else {
    r.result.emplace(std::move(got));
  }
  r.ended = time.now();
}

class Harness {
 public:
  struct Timeouts {
    std::chrono::milliseconds idle = 60s;
    std::chrono::milliseconds wake = 120s;
    std::chrono::milliseconds interval = 1s;
    int replicas = 1;
    std::optional<activity::DesiredReplicas::Settings> autoscale = std::nullopt;
  };

  Harness() : Harness(Timeouts{}) {}
  explicit Harness(Timeouts t)
      : time(ioc),
        client_side_(ioc, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)),
        pool_(upstream::Pool::Settings{
            .target = {.host = "127.0.0.1", .port = "9", .host_header = "test", .headers = {}}}),
        budget_(1 << 20),
        timeouts_(t) {}

  ~Harness() {
    for (auto& c : clients_) {
      error_code ec;
      c.close(ec);
    }
    time.settle();
  }

  Backend& start() {
    backend.emplace(
        Backend::Settings{
            .name = "b",
            .idle_timeout = timeouts_.idle,
            .wake_timeout = timeouts_.wake,
            .max_pending = 1000,
            .health =
                config::Health{.path = "/health", .interval = timeouts_.interval, .headers = {}},
            .replicas = timeouts_.replicas,
            .autoscale = timeouts_.autoscale,
            .learn_models = true},
        ioc.get_executor(),
        [this](Executor) {
          auto s = std::make_unique<FakeScaler>(world, time);
          scaler = s.get();
          return s;
        },
        pool_, metrics, budget_,
        BackendSeams{.time = &time,
                     .probe = [this](const std::string& path) { return scaler->answer(path); }});
    scaler->backend = &*backend;
    backend->start();
    time.settle();
    return *backend;
  }

  // A request from a client that stays; when granted it is in flight for `hold`.
  Request& request(Clock::duration hold = 1s) {
    auto& r = requests.emplace_back();
    auto& sockets = server_sockets_.emplace_back(ioc);
    auto& c = clients_.emplace_back(ioc);
    c.connect(client_side_.local_endpoint());
    sockets = client_side_.accept();
    r.client = &c;
    spawn(ioc.get_executor(), run_request(r, sockets, hold), "request");
    time.settle();
    return r;
  }

  std::string state() const { return std::string(activator::name(backend->state())); }
  bool answered() const {
    return std::all_of(requests.begin(), requests.end(), [](const Request& r) { return r.ended; });
  }
  // The last time a request ended: the idle clock's start.
  Clock::time_point last_activity(Clock::time_point floor) const {
    for (const auto& r : requests) {
      if (r.ended) {
        floor = std::max(floor, *r.ended);
      }
    }
    return floor;
  }

  net::io_context ioc;
  VirtualTime time;
  World world;
  metrics::Metrics metrics;
  FakeScaler* scaler = nullptr;
  std::optional<Backend> backend;
  std::list<Request> requests;

 private:
  task<void> run_request(Request& r, Socket& s, Clock::duration hold) {
    co_await serve_request(*backend, *scaler, time, r, s, hold);
  }

  Acceptor client_side_;
  std::list<Socket> clients_;
  std::list<Socket> server_sockets_;
  upstream::Pool pool_;
  PendingBudget budget_;
  Timeouts timeouts_;
};

}  // namespace va::activator::testing
