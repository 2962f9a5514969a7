// make_scaler: the one place that turns `backend.scaler` into a Scaler.
#include "config/kubeconfig.hpp"
#include "scaler/kubernetes_scaler.hpp"
#include "scaler/process_scaler.hpp"
#include "scaler/static_scaler.hpp"

namespace va::scaler {

std::unique_ptr<Scaler> make_scaler(const config::Backend& backend, Executor ex) {
  const auto& s = backend.scaler;
  if (s.type == "kubernetes") {
    // Where the loader found it: scaler.kubeconfig, in-cluster, $KUBECONFIG or ~/.kube/config.
    auto cluster = config::load_cluster(s.cluster, "backends." + backend.name + ".scaler");
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
