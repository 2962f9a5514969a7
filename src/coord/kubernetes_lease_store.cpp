#include "coord/kubernetes_lease_store.hpp"

#include <boost/json.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include "k8s/access_review.hpp"
#include "k8s/objects.hpp"

namespace va::coord {
namespace {

namespace json = boost::json;

constexpr std::string_view kGroupLabel = "vllm-autoscaler.io/lease-group";
constexpr std::string_view kDataAnnotation = "vllm-autoscaler.io/data";

}  // namespace

LeaseRecord lease_record(const json::object& lease) {
  const auto* meta = k8s::child(&lease, "metadata");
  const auto* spec = k8s::child(&lease, "spec");
  return LeaseRecord{
      .name = k8s::text(meta, "name"),
      .resource_version = k8s::text(meta, "resourceVersion"),
      .holder = k8s::text(spec, "holderIdentity"),
      .duration_seconds = static_cast<int>(k8s::number(spec, "leaseDurationSeconds")),
      .acquire_time = k8s::text(spec, "acquireTime"),
      .renew_time = k8s::text(spec, "renewTime"),
      .transitions = static_cast<int>(k8s::number(spec, "leaseTransitions")),
      .data = k8s::text(k8s::child(meta, "annotations"), kDataAnnotation)};
}

KubernetesLeaseStore::KubernetesLeaseStore(std::unique_ptr<k8s::Client> client,
                                           std::string namespace_, std::string group)
    : client_(std::move(client)),
      namespace_(std::move(namespace_)),
      group_(std::move(group)),
      path_("/apis/coordination.k8s.io/v1/namespaces/" + this->namespace_ + "/leases") {}

task<outcome<std::vector<LeaseRecord>>> KubernetesLeaseStore::list() {
  const std::string selector = std::string(kGroupLabel) + "=" + group_;
  const std::string target =
      path_ + "?labelSelector=" + boost::urls::encode(selector, boost::urls::unreserved_chars);
  auto r = co_await client_->request(http::verb::get, target);
  if (!r) {
    co_return r.error();
  }
  if (r->status != 200) {
    co_return k8s::api_failure(http::verb::get, target, *r);
  }
  error_code ec;
  const auto v = json::parse(r->body, ec);
  if (ec || !v.is_object()) {
    co_return Failure{errc::scaler_error, "kubernetes API: GET " + target + ": not a LeaseList"};
  }
  std::vector<LeaseRecord> out;
  if (const auto* items = k8s::list_of(&v.get_object(), "items")) {
    for (const auto& item : *items) {
      if (item.is_object()) {
        out.push_back(lease_record(item.get_object()));
      }
    }
  }
  co_return out;
}

std::string KubernetesLeaseStore::body(const LeaseRecord& r) const {
  json::object meta{
      {"name", r.name},
      {"namespace", namespace_},
      {"labels",
       {{"app.kubernetes.io/managed-by", "vllm-autoscaler"}, {std::string(kGroupLabel), group_}}},
      {"annotations", {{std::string(kDataAnnotation), r.data}}}};
  if (!r.resource_version.empty()) {
    meta["resourceVersion"] = r.resource_version;
  }
  json::object spec{{"holderIdentity", r.holder},
                    {"leaseDurationSeconds", r.duration_seconds},
                    {"leaseTransitions", r.transitions}};
  if (!r.acquire_time.empty()) {
    spec["acquireTime"] = r.acquire_time;
  }
  if (!r.renew_time.empty()) {
    spec["renewTime"] = r.renew_time;
  }
  return json::serialize(json::object{{"apiVersion", "coordination.k8s.io/v1"},
                                      {"kind", "Lease"},
                                      {"metadata", std::move(meta)},
                                      {"spec", std::move(spec)}});
}

task<outcome<std::optional<LeaseRecord>>> KubernetesLeaseStore::write(http::verb verb,
                                                                      std::string target,
                                                                      const LeaseRecord& r) {
  auto answer = co_await client_->request(verb, target, body(r), "application/json");
  if (!answer) {
    co_return answer.error();
  }
  if (answer->status == 409) {
    co_return std::optional<LeaseRecord>{};  // someone else was first
  }
  if (answer->status >= 300) {
    co_return k8s::api_failure(verb, target, *answer);
  }
  error_code ec;
  const auto v = json::parse(answer->body, ec);
  if (ec || !v.is_object()) {
    co_return Failure{errc::scaler_error, "kubernetes API: " + target + ": not a Lease"};
  }
  co_return std::optional(lease_record(v.get_object()));
}

task<outcome<std::optional<LeaseRecord>>> KubernetesLeaseStore::create(const LeaseRecord& r) {
  auto copy = r;
  copy.resource_version.clear();
  co_return co_await write(http::verb::post, path_, copy);
}

task<outcome<std::optional<LeaseRecord>>> KubernetesLeaseStore::update(const LeaseRecord& r) {
  co_return co_await write(http::verb::put, path_ + "/" + r.name, r);
}

task<outcome<std::vector<std::string>>> KubernetesLeaseStore::denied() {
  std::vector<k8s::Access> needs;
  for (std::string verb : {"list", "create", "update"}) {
    needs.push_back(k8s::Access{.verb = std::move(verb),
                                .group = "coordination.k8s.io",
                                .resource = "leases",
                                .subresource = "",
                                .namespace_ = namespace_,
                                .name = ""});
  }
  co_return co_await k8s::denied(*client_, needs);
}

}  // namespace va::coord
