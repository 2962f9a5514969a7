#include "config/kubeconfig.hpp"

#include <string_view>
#include <utility>
#include <vector>

namespace va::config {
namespace {

std::string variable(const std::map<std::string, std::string>& env, const std::string& name) {
  const auto it = env.find(name);
  return it == env.end() ? std::string() : it->second;
}

// $KUBECONFIG's ':'-separated list, empty entries skipped (kubectl skips them too).
std::vector<std::string> split_path_list(std::string_view list) {
  std::vector<std::string> paths;
  while (!list.empty()) {
    const auto colon = list.find(':');
    if (const auto p = list.substr(0, colon); !p.empty()) {
      paths.emplace_back(p);
    }
    list = colon == std::string_view::npos ? std::string_view{} : list.substr(colon + 1);
  }
  return paths;
}

k8s::ClusterConfig read_source(const ClusterSource& source) {
  switch (source.kind) {
    case ClusterSource::Kind::kubeconfig:
      return k8s::load_kubeconfig_files(source.files);
    case ClusterSource::Kind::in_cluster:
      return k8s::in_cluster({{"KUBERNETES_SERVICE_HOST", source.service_host},
                              {"KUBERNETES_SERVICE_PORT", source.service_port}});
    case ClusterSource::Kind::none:
      break;
  }
  throw ConfigError({"kubeconfig: neither KUBECONFIG nor HOME is set"});
}

}  // namespace

ClusterSource resolve_cluster_source(const Scaler& s,
                                     const std::map<std::string, std::string>& env) {
  ClusterSource source;
  if (!s.kubeconfig.empty()) {
    source.kind = ClusterSource::Kind::kubeconfig;
    source.files = {s.kubeconfig};
    return source;
  }
  source.service_host = variable(env, "KUBERNETES_SERVICE_HOST");
  source.service_port = variable(env, "KUBERNETES_SERVICE_PORT");
  if (!source.service_host.empty() && !source.service_port.empty()) {
    source.kind = ClusterSource::Kind::in_cluster;
    source.from = "KUBERNETES_SERVICE_HOST";
    return source;
  }
  source.service_host.clear();
  source.service_port.clear();
  if (const std::string list = variable(env, "KUBECONFIG"); !list.empty()) {
    source.kind = ClusterSource::Kind::kubeconfig;
    source.files = split_path_list(list);
    source.from = "KUBECONFIG";
  } else if (const std::string home = variable(env, "HOME"); !home.empty()) {
    source.kind = ClusterSource::Kind::kubeconfig;
    source.files = {home + "/.kube/config"};
    source.from = "HOME";
  }
  return source;
}

k8s::ClusterConfig load_cluster(const ClusterSource& source, const std::string& shown) {
  try {
    return read_source(source);
  } catch (const ConfigError& e) {
    std::vector<std::string> problems;
    for (const auto& p : e.problems()) {
      problems.push_back(shown + ": " + p);
    }
    throw ConfigError(std::move(problems));
  }
}

}  // namespace va::config
