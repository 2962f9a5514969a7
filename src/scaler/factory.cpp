// make_scaler: the one place that turns `backend.scaler` into a Scaler.
#include "config/loader.hpp"
#include "k8s/config.hpp"
#include "scaler/kubernetes_scaler.hpp"
#include "scaler/process_scaler.hpp"
#include "scaler/static_scaler.hpp"

extern char** environ;

namespace va::scaler {
namespace {

// scaler.kubeconfig if set; else in-cluster when KUBERNETES_SERVICE_HOST/PORT are set; else
// $KUBECONFIG or ~/.kube/config, as kubectl. Problems carry the backend's key path.
k8s::ClusterConfig cluster_config(const config::Backend& backend) {
  const std::string path = "backends." + backend.name + ".scaler";
  try {
    const auto env = config::environment_map(environ);
    if (!backend.scaler.kubeconfig.empty()) {
      return k8s::load_kubeconfig_files({backend.scaler.kubeconfig});
    }
    if (k8s::in_cluster_available(env)) {
      return k8s::in_cluster(env);
    }
    return k8s::load_kubeconfig(env);
  } catch (const ConfigError& e) {
    std::vector<std::string> problems;
    for (const auto& p : e.problems()) {
      problems.push_back(path + ": " + p);
    }
    throw ConfigError(std::move(problems));
  }
}

}  // namespace

std::unique_ptr<Scaler> make_scaler(const config::Backend& backend, Executor ex) {
  const auto& s = backend.scaler;
  if (s.type == "kubernetes") {
    auto cluster = cluster_config(backend);
    const std::string ns = s.namespace_.empty() ? cluster.namespace_ : s.namespace_;
    return std::make_unique<KubernetesScaler>(
        KubernetesScaler::Settings{.backend = backend.name,
                                   .namespace_ = ns,
                                   .deployment = s.deployment,
                                   .cluster = std::move(cluster)},
        std::move(ex));
  }
  if (s.type == "process") {
    return std::make_unique<ProcessScaler>(ProcessScaler::Settings{.backend = backend.name,
                                                                   .command = s.command,
                                                                   .env = s.env,
                                                                   .stop_timeout = s.stop_timeout},
                                           std::move(ex));
  }
  if (s.type == "static") {
    return std::make_unique<StaticScaler>();
  }
  throw ConfigError(
      {"backends." + backend.name + ".scaler.type: \"" + s.type + "\" is not available"});
}

}  // namespace va::scaler
