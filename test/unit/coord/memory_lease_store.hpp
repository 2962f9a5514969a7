#pragma once
// Leases in memory, with the API server's resourceVersion rules (a write carrying an old version
// is refused as a conflict), shared by the replicas of a test. Calls can be made to fail, or to
// hang like a stopped API server, per replica.
#include <map>
#include <memory>

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
    if (unreachable) {
      co_return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
    }
    if (server_.leases.contains(r.name)) {
      co_return std::optional<LeaseRecord>{};
    }
    co_return std::optional(store(r));
  }

  task<outcome<std::optional<LeaseRecord>>> update(const LeaseRecord& r) override {
    if (unreachable) {
      co_return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
    }
    auto it = server_.leases.find(r.name);
    if (it == server_.leases.end() || it->second.resource_version != r.resource_version) {
      co_return std::optional<LeaseRecord>{};
    }
    co_return std::optional(store(r));
  }

  bool unreachable = false;

 private:
  LeaseRecord store(LeaseRecord r) {
    r.resource_version = std::to_string(++server_.version);
    ++server_.writes;
    server_.leases[r.name] = r;
    return r;
  }

  LeaseServer& server_;
};

}  // namespace va::coord::testing
