#include "config/kubeconfig.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/loader.hpp"
#include "support/temp_dir.hpp"

namespace va::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using va::test_support::TempDir;
using Env = std::map<std::string, std::string>;
using Kind = ClusterSource::Kind;

constexpr const char* kKubeconfig =
    "current-context: dev\n"
    "contexts: [{name: dev, context: {cluster: c, user: u, namespace: ai}}]\n"
    "clusters: [{name: c, cluster: {server: 'https://api.example:6443'}}]\n"
    "users: [{name: u, user: {token: t}}]\n";

const Env kInCluster{{"KUBERNETES_SERVICE_HOST", "10.96.0.1"},
                     {"KUBERNETES_SERVICE_PORT", "443"},
                     {"KUBECONFIG", "/k"},
                     {"HOME", "/home/me"}};

Scaler kubernetes(std::string kubeconfig = "") {
  Scaler s;
  s.type = "kubernetes";
  s.deployment = "vllm";
  s.kubeconfig = std::move(kubeconfig);
  return s;
}

// The problems of the ConfigError that `f` throws; empty (and a test failure) if it throws none.
template <class F>
std::vector<std::string> problems_of(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.problems();
  }
  ADD_FAILURE() << "no ConfigError";
  return {};
}

TEST(ResolveClusterSource, ScalerKubeconfigWinsOverTheEnvironment) {
  const ClusterSource s = resolve_cluster_source(kubernetes("/etc/kube/config"), kInCluster);
  EXPECT_EQ(s.kind, Kind::kubeconfig);
  EXPECT_THAT(s.files, ElementsAre("/etc/kube/config"));
  EXPECT_EQ(s.from, "");
}

TEST(ResolveClusterSource, InClusterWhenBothServiceVariablesAreSet) {
  const ClusterSource s = resolve_cluster_source(kubernetes(), kInCluster);
  EXPECT_EQ(s.kind, Kind::in_cluster);
  EXPECT_EQ(s.service_host, "10.96.0.1");
  EXPECT_EQ(s.service_port, "443");
  EXPECT_EQ(s.from, "KUBERNETES_SERVICE_HOST");
  Env half = kInCluster;
  half["KUBERNETES_SERVICE_PORT"] = "";
  EXPECT_EQ(resolve_cluster_source(kubernetes(), half).kind, Kind::kubeconfig);
}

TEST(ResolveClusterSource, KubeconfigListSkipsEmptyEntries) {
  const ClusterSource s =
      resolve_cluster_source(kubernetes(), {{"KUBECONFIG", "/a::/b:"}, {"HOME", "/home/me"}});
  EXPECT_EQ(s.kind, Kind::kubeconfig);
  EXPECT_THAT(s.files, ElementsAre("/a", "/b"));
  EXPECT_EQ(s.from, "KUBECONFIG");
}

TEST(ResolveClusterSource, HomeWhenKubeconfigIsUnsetOrEmpty) {
  for (const Env& env :
       {Env{{"HOME", "/home/me"}}, Env{{"HOME", "/home/me"}, {"KUBECONFIG", ""}}}) {
    const ClusterSource s = resolve_cluster_source(kubernetes(), env);
    EXPECT_THAT(s.files, ElementsAre("/home/me/.kube/config"));
    EXPECT_EQ(s.from, "HOME");
  }
}

TEST(LoadCluster, NeitherKubeconfigNorHomeIsAProblemWithItsPath) {
  const ClusterSource s = resolve_cluster_source(kubernetes(), {});
  EXPECT_EQ(s.kind, Kind::none);
  EXPECT_THAT(problems_of([&] { load_cluster(s, "backends.a.scaler"); }),
              ElementsAre("backends.a.scaler: kubeconfig: neither KUBECONFIG nor HOME is set"));
}

TEST(LoadCluster, ReadsTheResolvedFile) {
  TempDir dir;
  const std::string path = dir.write("config", kKubeconfig);
  const auto c = load_cluster(
      resolve_cluster_source(kubernetes(), {{"HOME", "/nonexistent"}, {"KUBECONFIG", path}}), "x");
  EXPECT_EQ(c.host, "api.example");
  EXPECT_EQ(c.namespace_, "ai");
}

Loaded load_yaml(const TempDir& dir, const std::string& yaml, const std::string& flag,
                 const Env& env) {
  const std::string path = dir.write("config.yaml", yaml);
  const char* argv[] = {"vllm-autoscaler", "--config", path.c_str(), flag.c_str(), nullptr};
  return load(flag.empty() ? 3 : 4, argv, env);
}

constexpr const char* kTwoBackends =
    "backends:\n"
    "  - { name: k, default: true, upstream: 'http://k:1', scaler: { type: kubernetes, "
    "deployment: d } }\n"
    "  - { name: s, models: [m], upstream: 'http://s:1' }\n";

TEST(LoaderKubeconfig, LoadRecordsTheSourceOfKubernetesBackendsOnly) {
  TempDir dir;
  const Loaded l = load_yaml(dir, kTwoBackends, "", {{"KUBECONFIG", "/missing"}});
  EXPECT_THAT(l.config.backends[0].scaler.cluster.files, ElementsAre("/missing"));
  EXPECT_EQ(l.config.backends[0].scaler.cluster.from, "KUBECONFIG");
  EXPECT_EQ(l.config.backends[1].scaler.cluster.kind, Kind::none);
}

TEST(LoaderKubeconfig, CheckConfigReadsTheKubeconfig) {
  TempDir dir;
  const Env env{{"KUBECONFIG", dir.path("missing")}};
  EXPECT_THAT(problems_of([&] { load_yaml(dir, kTwoBackends, "--check-config", env); }),
              ElementsAre("backends[0].scaler.kubeconfig (from KUBECONFIG): kubeconfig " +
                          dir.path("missing") + ": cannot read the file"));
  dir.write("missing", "{ not yaml");
  EXPECT_THAT(problems_of([&] { load_yaml(dir, kTwoBackends, "--check-config", env); }),
              ElementsAre(HasSubstr("backends[0].scaler.kubeconfig (from KUBECONFIG): ")));
  dir.write("missing", kKubeconfig);
  EXPECT_EQ(load_yaml(dir, kTwoBackends, "--check-config", env).action, Action::check_config);
}

}  // namespace
}  // namespace va::config
