#include "k8s/access_review.hpp"

#include <boost/json.hpp>

namespace va::k8s {
namespace {
namespace json = boost::json;
constexpr std::string_view kPath = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
}  // namespace

std::string describe(const Access& a) {
  std::string out = a.verb + " " + (a.group.empty() ? "" : a.group + "/") + a.resource;
  if (!a.subresource.empty()) {
    out += "/" + a.subresource;
  }
  if (!a.name.empty()) {
    out += " \"" + a.name + "\"";
  }
  return out + " in namespace \"" + a.namespace_ + "\"";
}

std::string access_review_body(const Access& a) {
  json::object attributes{
      {"namespace", a.namespace_}, {"verb", a.verb}, {"group", a.group}, {"resource", a.resource}};
  if (!a.subresource.empty()) {
    attributes["subresource"] = a.subresource;
  }
  if (!a.name.empty()) {
    attributes["name"] = a.name;
  }
  const json::object review{{"apiVersion", "authorization.k8s.io/v1"},
                            {"kind", "SelfSubjectAccessReview"},
                            {"spec", json::object{{"resourceAttributes", std::move(attributes)}}}};
  return json::serialize(review);
}

outcome<bool> access_allowed(const Response& r) {
  if (r.status != 201 && r.status != 200) {
    return api_failure(http::verb::post, kPath, r);
  }
  boost::system::error_code ec;
  const auto v = json::parse(r.body, ec);
  const auto* o = ec ? nullptr : v.if_object();
  const auto* status = o ? o->if_contains("status") : nullptr;
  const auto* allowed =
      status && status->is_object() ? status->get_object().if_contains("allowed") : nullptr;
  if (!allowed || !allowed->is_bool()) {
    return Failure{errc::scaler_error, "SelfSubjectAccessReview: no status.allowed in the answer"};
  }
  return allowed->get_bool();
}

task<outcome<std::vector<std::string>>> denied(Client& client, const std::vector<Access>& needs) {
  std::vector<std::string> out;
  for (const Access& a : needs) {
    auto r = co_await client.request(http::verb::post, std::string(kPath), access_review_body(a),
                                     "application/json");
    if (!r) {
      co_return r.error();
    }
    auto allowed = access_allowed(*r);
    if (!allowed) {
      co_return allowed.error();
    }
    if (!*allowed) {
      out.push_back("cannot " + describe(a));
    }
  }
  co_return out;
}

}  // namespace va::k8s
