#pragma once
// Where proxy replicas meet: coordination.k8s.io/v1 Leases in the proxy's namespace (the one
// leader Lease, one member Lease per replica), behind an interface so that the coordinator's
// tests run on an in-memory store in virtual time.
#include <optional>
#include <string>
#include <vector>

#include "core/errors.hpp"
#include "core/net.hpp"

namespace va::coord {

struct LeaseRecord {
  std::string name;
  std::string resource_version;  // as read; "" for one not created yet
  std::string holder;            // spec.holderIdentity
  int duration_seconds = 0;      // spec.leaseDurationSeconds
  std::string acquire_time;      // spec.acquireTime (MicroTime)
  std::string renew_time;        // spec.renewTime (MicroTime)
  int transitions = 0;           // spec.leaseTransitions
  std::string data;              // ours (an annotation): JSON, see reports.hpp
};

class LeaseStore {
 public:
  virtual ~LeaseStore() = default;
  // Every Lease of this group (the leader's and the members').
  virtual task<outcome<std::vector<LeaseRecord>>> list() = 0;
  // Creates `r`; nullopt when one of that name exists already (someone else was first).
  virtual task<outcome<std::optional<LeaseRecord>>> create(const LeaseRecord& r) = 0;
  // Replaces `r` if it is still at r.resource_version; nullopt when someone else wrote in
  // between (409). The answer carries the new resource_version.
  virtual task<outcome<std::optional<LeaseRecord>>> update(const LeaseRecord& r) = 0;
  // Of the calls above, the ones this replica may not make (a Role without the verb), one
  // sentence each ("cannot update coordination.k8s.io/leases in namespace \"llm\""); a Failure
  // when that cannot be told now (the API did not answer). None for a store that checks nothing.
  virtual task<outcome<std::vector<std::string>>> denied() { co_return std::vector<std::string>{}; }
};

}  // namespace va::coord
