#pragma once
// Leases in memory, with the API server's resourceVersion rules (a write carrying an old version
// is refused as a conflict), shared by the replicas of a test. Calls can be made to fail, or to
// hang like a stopped API server, per replica.
#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "coord/lease_store.hpp"
#include "unit/support/virtual_time.hpp"

namespace va::coord::testing {

struct LeaseServer {
  std::map<std::string, LeaseRecord> leases;
  long version = 100;
  int writes = 0;
};

class MemoryLeaseStore final : public LeaseStore {
 public:
  explicit MemoryLeaseStore(LeaseServer& server) : server_(server) {}

  task<outcome<std::vector<LeaseRecord>>> list() override {
    const bool stuck = co_await stalled();
    if (stuck) {
      co_return Failure{errc::scaler_error, "kubernetes API: timed out"};
    }
    if (unreachable) {
      co_return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
    }
    std::vector<LeaseRecord> out;
    for (const auto& [name, r] : server_.leases) {
      out.push_back(r);
    }
    co_return out;
  }

  task<outcome<std::optional<LeaseRecord>>> create(const LeaseRecord& r) override {
    const bool stuck = co_await stalled();
    if (stuck) {
      co_return Failure{errc::scaler_error, "kubernetes API: timed out"};
    }
    if (unreachable) {
      co_return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
    }
    if (server_.leases.contains(r.name)) {
      co_return std::optional<LeaseRecord>{};
    }
    co_return std::optional(store(r));
  }

  task<outcome<std::optional<LeaseRecord>>> update(const LeaseRecord& r) override {
    const bool stuck = co_await stalled();
    if (stuck) {
      co_return Failure{errc::scaler_error, "kubernetes API: timed out"};
    }
    if (unreachable) {
      co_return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
    }
    auto it = server_.leases.find(r.name);
    if (it == server_.leases.end() || it->second.resource_version != r.resource_version) {
      co_return std::optional<LeaseRecord>{};
    }
    co_return std::optional(store(r));
  }

  task<outcome<std::vector<std::string>>> denied() override {
    if (unreachable) {
      co_return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
    }
    co_return refused;
  }

  // Ends every call left hanging (they fail as timed out) and hangs no more.
  void unstick() {
    hanging = false;
    for (auto* t : stalled_) {
      t->cancel();
    }
  }

  bool unreachable = false;          // every call fails at once, as with the connection refused
  bool hanging = false;              // every call waits until unstick() or its caller gives up
  std::vector<std::string> refused;  // what the setup checks find denied

 private:
  // True when the call hung (and ended, by unstick() or its caller's cancellation).
  task<bool> stalled() {
    if (!hanging) {
      co_return false;
    }
    Timer t(co_await net::this_coro::executor, Clock::time_point::max());
    stalled_.push_back(&t);
    co_await t.async_wait(use_nothrow);
    stalled_.erase(std::find(stalled_.begin(), stalled_.end(), &t));
    co_return true;
  }

  LeaseRecord store(LeaseRecord r) {
    r.resource_version = std::to_string(++server_.version);
    ++server_.writes;
    server_.leases[r.name] = r;
    return r;
  }

  LeaseServer& server_;
  std::vector<Timer*> stalled_;
};

}  // namespace va::coord::testing
