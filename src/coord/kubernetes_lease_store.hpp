#pragma once
// The LeaseStore on the Kubernetes API: coordination.k8s.io/v1 Leases in one namespace, labelled
// with their group (`vllm-autoscaler.io/lease-group: <lease_name>`) so that one LIST with a
// label selector reads them all. Verbs: list, create, update; nothing else.
#include <boost/json/object.hpp>
#include <memory>

#include "coord/lease_store.hpp"
#include "k8s/client.hpp"

namespace va::coord {

class KubernetesLeaseStore final : public LeaseStore {
 public:
  KubernetesLeaseStore(std::unique_ptr<k8s::Client> client, std::string namespace_,
                       std::string group);

  task<outcome<std::vector<LeaseRecord>>> list() override;
  task<outcome<std::optional<LeaseRecord>>> create(const LeaseRecord& r) override;
  task<outcome<std::optional<LeaseRecord>>> update(const LeaseRecord& r) override;
  // Asked with SelfSubjectAccessReviews: list, create and update of leases in the namespace.
  task<outcome<std::vector<std::string>>> denied() override;

 private:
  task<outcome<std::optional<LeaseRecord>>> write(http::verb verb, std::string target,
                                                  const LeaseRecord& r);
  std::string body(const LeaseRecord& r) const;

  std::unique_ptr<k8s::Client> client_;
  std::string namespace_;
  std::string group_;
  std::string path_;  // .../namespaces/<ns>/leases
};

// The record of a Lease object as the API returns it (exposed for tests).
LeaseRecord lease_record(const boost::json::object& lease);

}  // namespace va::coord
