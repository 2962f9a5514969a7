// The kubernetes scaler's setup checks (kubernetes_scaler.hpp): whether the proxy may make every
// request the scaler makes, asked with SelfSubjectAccessReviews, and whether the Deployment exists.
#include <algorithm>

#include "k8s/access_review.hpp"
#include "scaler/kubernetes_scaler.hpp"

namespace va::scaler {

task<outcome<std::vector<std::string>>> KubernetesScaler::check_setup() {
  const auto& ns = settings_.namespace_;
  const auto& name = settings_.deployment;
  // Every request this scaler makes (and the Role in deploy/kubernetes grants).
  const std::vector<k8s::Access> needs = {
      {"get", "apps", "deployments", "scale", ns, name},
      {"patch", "apps", "deployments", "scale", ns, name},
      {"list", "apps", "deployments", "", ns, name},
      {"watch", "apps", "deployments", "", ns, name},
      {"list", "", "pods", "", ns, ""},
      {"watch", "", "pods", "", ns, ""},
      {"create", "", "events", "", ns, ""},
  };
  auto problems = co_await k8s::denied(client_, needs);
  if (!problems) {
    co_return problems.error();
  }
  // Whether the Deployment exists, where the proxy may look.
  const auto no_get = "cannot " + k8s::describe(needs.front());
  if (std::find(problems->begin(), problems->end(), no_get) == problems->end()) {
    auto r = co_await client_.request(http::verb::get, scale_path_);
    if (!r) {
      co_return r.error();
    }
    if (r->status == 404) {
      problems->push_back(deployment_.settings().what + " not found");
    }
  }
  co_return std::move(*problems);
}

task<void> KubernetesScaler::run_checks() {
  while (!stopping_) {
    auto found = co_await check_setup();
    if (stopping_) {
      break;
    }
    const auto wait = checks_.answered(std::move(found));
    set_setup_problems(checks_.problems());
    co_await pause(wait);
  }
  loop_done();
}

}  // namespace va::scaler
