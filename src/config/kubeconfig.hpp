#pragma once
// Which kubeconfig (or service account) a kubernetes scaler uses, decided once by the loader from
// the scaler's settings and the environment; and the reading of it (k8s/config.hpp), which
// --check-config and make_scaler share.
#include <map>
#include <string>

#include "config/config.hpp"
#include "k8s/config.hpp"

namespace va::config {

// scaler.kubeconfig if set; else the pod's service account when KUBERNETES_SERVICE_HOST and
// KUBERNETES_SERVICE_PORT are both non-empty; else the files of $KUBECONFIG (':'-separated,
// empty entries skipped) or else ~/.kube/config, as kubectl. Reads no file.
ClusterSource resolve_cluster_source(const Scaler& s,
                                     const std::map<std::string, std::string>& env);

// Reads the kubeconfig files or service account `source` names. Throws ConfigError with each
// problem prefixed by `shown` and ": " (a key path, "backends[0].scaler.kubeconfig").
k8s::ClusterConfig load_cluster(const ClusterSource& source, const std::string& shown);

}  // namespace va::config
