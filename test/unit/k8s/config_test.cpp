#include "k8s/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/config_error.hpp"
#include "unit/k8s/temp_dir.hpp"

namespace va::k8s {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;

// "-----BEGIN CERTIFICATE-----\nCA\n" base64-encoded, as certificate-authority-data would be.
constexpr const char* kCaPem = "-----BEGIN CERTIFICATE-----\nCA\n";
constexpr const char* kCaData = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCkNBCg==";

std::string kubeconfig(const std::string& cluster, const std::string& user,
                       const std::string& context = "dev", const std::string& ns = "") {
  return "apiVersion: v1\nkind: Config\ncurrent-context: " + context +
         "\n"
         "contexts:\n- name: dev\n  context:\n    cluster: c1\n    user: u1\n" +
         (ns.empty() ? "" : "    namespace: " + ns + "\n") + "clusters:\n- name: c1\n  cluster:\n" +
         cluster + "users:\n- name: u1\n  user:\n" + user;
}

// The problems of the ConfigError that `f` throws, joined; "" if it throws none.
template <class F>
std::string config_error(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Base64Test, DecodesWithAndWithoutPaddingAndWhitespace) {
  EXPECT_EQ(base64_decode("aGVsbG8="), "hello");
  EXPECT_EQ(base64_decode("aGVsbG8"), "hello");
  EXPECT_EQ(base64_decode("aGVs\nbG8h"), "hello!");
  EXPECT_EQ(base64_decode(""), "");
  EXPECT_EQ(base64_decode(kCaData), kCaPem);
  EXPECT_EQ(base64_decode("aGVs*G8="), std::nullopt);
  EXPECT_EQ(base64_decode("aGVsbG8=x"), std::nullopt);
  EXPECT_EQ(base64_decode("a"), std::nullopt);
}

TEST(Base64Test, EncodesWithPaddingAndRoundTrips) {
  EXPECT_EQ(base64_encode(""), "");
  EXPECT_EQ(base64_encode("h"), "aA==");
  EXPECT_EQ(base64_encode("he"), "aGU=");
  EXPECT_EQ(base64_encode("hello"), "aGVsbG8=");
  EXPECT_EQ(base64_encode("hello!"), "aGVsbG8h");
  EXPECT_EQ(base64_encode(kCaPem), kCaData);
  const std::string bytes("\x00\xff\xfe\x80\x7f", 5);
  EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes);
}

TEST(KubeconfigTest, DataFieldsAndToken) {
  TempDir dir;
  const auto path =
      dir.write("config", kubeconfig(std::string("    server: https://k8s.example:6443\n"
                                                 "    certificate-authority-data: ") +
                                         kCaData + "\n",
                                     "    token: abc\n"
                                     "    client-certificate-data: Y2VydA==\n"
                                     "    client-key-data: a2V5\n",
                                     "dev", "llm"));
  const auto c = load_kubeconfig_files({path});
  EXPECT_EQ(c.host, "k8s.example");
  EXPECT_EQ(c.port, "6443");
  EXPECT_EQ(c.server_name, "k8s.example");
  EXPECT_EQ(c.host_header(), "k8s.example:6443");
  EXPECT_EQ(c.ca_pem, kCaPem);
  EXPECT_FALSE(c.insecure_skip_tls_verify);
  EXPECT_EQ(c.token, "abc");
  EXPECT_EQ(c.token_file, "");
  EXPECT_EQ(c.client_cert_pem, "cert");
  EXPECT_EQ(c.client_key_pem, "key");
  EXPECT_EQ(c.namespace_, "llm");
  EXPECT_EQ(c.path_prefix, "");
}

TEST(KubeconfigTest, FilesRelativeToTheKubeconfigDirectory) {
  TempDir dir;
  dir.write("kube/ca.crt", "CA FILE");
  dir.write("kube/tok", "file-token\n");
  dir.write("kube/c.crt", "CERT FILE");
  dir.write("kube/c.key", "KEY FILE");
  const auto path = dir.write("kube/config", kubeconfig("    server: https://10.0.0.1\n"
                                                        "    certificate-authority: ca.crt\n",
                                                        "    tokenFile: tok\n"
                                                        "    client-certificate: c.crt\n"
                                                        "    client-key: " +
                                                            dir.path("kube/c.key") + "\n"));
  const auto c = load_kubeconfig_files({path});
  EXPECT_EQ(c.host, "10.0.0.1");
  EXPECT_EQ(c.port, "443");
  EXPECT_EQ(c.ca_pem, "CA FILE");
  EXPECT_FALSE(c.insecure_skip_tls_verify);
  EXPECT_EQ(c.token_file, dir.path("kube/tok"));
  EXPECT_EQ(c.client_cert_pem, "CERT FILE");
  EXPECT_EQ(c.client_key_pem, "KEY FILE");
  EXPECT_EQ(c.namespace_, "default");
}

TEST(KubeconfigTest, DataWinsOverFile) {
  TempDir dir;
  const auto path =
      dir.write("config", kubeconfig(std::string("    server: https://h:1\n"
                                                 "    certificate-authority: missing.crt\n"
                                                 "    certificate-authority-data: ") +
                                         kCaData + "\n",
                                     "    token: t\n"));
  EXPECT_EQ(load_kubeconfig_files({path}).ca_pem, kCaPem);
}

TEST(KubeconfigTest, Ipv6ServerAndPathPrefix) {
  TempDir dir;
  const auto path = dir.write(
      "config", kubeconfig("    server: https://[::1]:6443/k8s/clusters/c-1/\n", "    token: t\n"));
  const auto c = load_kubeconfig_files({path});
  EXPECT_EQ(c.host, "::1");
  EXPECT_EQ(c.port, "6443");
  EXPECT_EQ(c.server_name, "::1");
  EXPECT_EQ(c.host_header(), "[::1]:6443");
  EXPECT_EQ(c.path_prefix, "/k8s/clusters/c-1");

  const auto no_port =
      dir.write("config2", kubeconfig("    server: https://[fd00::1]\n", "    token: t\n"));
  EXPECT_EQ(load_kubeconfig_files({no_port}).host_header(), "[fd00::1]:443");
}

TEST(KubeconfigTest, TlsServerName) {
  TempDir dir;
  const auto path = dir.write("config", kubeconfig("    server: https://127.0.0.1:6443\n"
                                                   "    tls-server-name: kubernetes\n"
                                                   "    insecure-skip-tls-verify: true\n",
                                                   "    token: t\n"));
  const auto c = load_kubeconfig_files({path});
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_EQ(c.server_name, "kubernetes");
  EXPECT_TRUE(c.insecure_skip_tls_verify);
}

TEST(KubeconfigTest, MissingContextClusterUserAreNamed) {
  TempDir dir;
  const auto no_ctx =
      dir.write("a", kubeconfig("    server: https://h\n", "    token: t\n", "nope"));
  EXPECT_EQ(config_error([&] { load_kubeconfig_files({no_ctx}); }),
            "kubeconfig " + no_ctx + ": context \"nope\" not found");

  const auto no_cluster = dir.write(
      "b",
      "current-context: dev\ncontexts:\n- name: dev\n  context: {cluster: gone, user: u}\n"
      "users:\n- name: u\n  user: {token: t}\n");
  EXPECT_THAT(config_error([&] { load_kubeconfig_files({no_cluster}); }),
              HasSubstr("cluster \"gone\" (of context \"dev\") not found"));

  const auto no_user =
      dir.write("c",
                "current-context: dev\ncontexts:\n- name: dev\n  context: {cluster: c, user: who}\n"
                "clusters:\n- name: c\n  cluster: {server: 'https://h'}\n");
  EXPECT_THAT(config_error([&] { load_kubeconfig_files({no_user}); }),
              HasSubstr("user \"who\" (of context \"dev\") not found"));

  const auto no_current = dir.write("d", "clusters: []\n");
  EXPECT_THAT(config_error([&] { load_kubeconfig_files({no_current}); }),
              HasSubstr("current-context is not set"));

  EXPECT_THAT(config_error([&] { load_kubeconfig_files({dir.path("none")}); }),
              HasSubstr("cannot read the file"));
}

TEST(KubeconfigTest, BadServerAndUnreadableFilesAreReportedTogether) {
  TempDir dir;
  const auto path = dir.write("config", kubeconfig("    server: http://h:80\n"
                                                   "    certificate-authority: nope.crt\n",
                                                   "    tokenFile: nope.tok\n"));
  const auto err = config_error([&] { load_kubeconfig_files({path}); });
  EXPECT_THAT(err,
              HasSubstr("clusters[c1].cluster.server: \"http://h:80\" is not an https:// URL"));
  EXPECT_THAT(err, HasSubstr("certificate-authority: cannot read " + dir.path("nope.crt")));
  EXPECT_THAT(err, HasSubstr("users[u1].user.tokenFile: cannot read " + dir.path("nope.tok")));

  const auto bad_port =
      dir.write("p", kubeconfig("    server: https://h:99999\n", "    token: t\n"));
  EXPECT_THAT(config_error([&] { load_kubeconfig_files({bad_port}); }),
              HasSubstr("has an invalid port"));
  const auto both = dir.write("r", kubeconfig(std::string("    server: https://h\n"
                                                          "    insecure-skip-tls-verify: true\n"
                                                          "    certificate-authority-data: ") +
                                                  kCaData + "\n",
                                              "    token: t\n"));
  EXPECT_THAT(config_error([&] { load_kubeconfig_files({both}); }),
              HasSubstr("certificate-authority and insecure-skip-tls-verify exclude each other"));
  const auto bad_data =
      dir.write("q", kubeconfig("    server: https://h\n", "    client-key-data: '%%'\n"));
  EXPECT_THAT(config_error([&] { load_kubeconfig_files({bad_data}); }),
              HasSubstr("client-key-data: not valid base64"));
}

TEST(KubeconfigTest, ExecPluginFieldsAreRead) {
  TempDir dir;
  const auto path = dir.write(
      "kube/config", kubeconfig("    server: https://k8s.example:6443/prefix\n",
                                "    exec:\n"
                                "      apiVersion: client.authentication.k8s.io/v1\n"
                                "      command: bin/get-token\n"
                                "      args: [eks, get-token, --cluster-name, prod]\n"
                                "      env:\n"
                                "      - {name: AWS_PROFILE, value: prod}\n"
                                "      - {name: EMPTY}\n"
                                "      interactiveMode: Never\n"
                                "      provideClusterInfo: true\n"
                                "      installHint: 'install it with: apt install get-token'\n"
                                "    client-certificate-data: Y2VydA==\n"
                                "    client-key-data: a2V5\n"));
  const auto c = load_kubeconfig_files({path});
  EXPECT_EQ(c.server, "https://k8s.example:6443/prefix");
  ASSERT_TRUE(c.exec);
  EXPECT_EQ(c.exec->api_version, "client.authentication.k8s.io/v1");
  // A relative path with a '/' is relative to the kubeconfig's directory, as in client-go.
  EXPECT_EQ(c.exec->command, dir.path("kube/bin/get-token"));
  EXPECT_THAT(c.exec->args, ElementsAre("eks", "get-token", "--cluster-name", "prod"));
  ASSERT_EQ(c.exec->env.size(), 2u);
  EXPECT_EQ(c.exec->env[0], (std::pair<std::string, std::string>{"AWS_PROFILE", "prod"}));
  EXPECT_EQ(c.exec->env[1], (std::pair<std::string, std::string>{"EMPTY", ""}));
  EXPECT_EQ(c.exec->interactive_mode, "Never");
  EXPECT_TRUE(c.exec->provide_cluster_info);
  EXPECT_EQ(c.exec->install_hint, "install it with: apt install get-token");
  EXPECT_EQ(c.token, "");
  EXPECT_EQ(c.client_cert_pem, "cert");  // a static client certificate may go with a plugin
}

TEST(KubeconfigTest, ExecPluginCommandPathsAndV1beta1Defaults) {
  TempDir dir;
  const auto exec = [&](const std::string& command) {
    const auto path = dir.write(
        "kube/config", kubeconfig("    server: https://h\n",
                                  "    exec:\n"
                                  "      apiVersion: client.authentication.k8s.io/v1beta1\n"
                                  "      command: " +
                                      command + "\n"));
    return *load_kubeconfig_files({path}).exec;
  };
  EXPECT_EQ(exec("gke-gcloud-auth-plugin").command, "gke-gcloud-auth-plugin");  // PATH
  EXPECT_EQ(exec("/usr/bin/aws").command, "/usr/bin/aws");
  EXPECT_EQ(exec("./plugin").command, dir.path("kube/./plugin"));
  const auto e = exec("aws");
  EXPECT_EQ(e.api_version, "client.authentication.k8s.io/v1beta1");
  EXPECT_EQ(e.interactive_mode, "IfAvailable");  // client-go's v1beta1 default
  EXPECT_TRUE(e.args.empty());
  EXPECT_TRUE(e.env.empty());
  EXPECT_FALSE(e.provide_cluster_info);
}

TEST(KubeconfigTest, ExecPluginErrorsNameTheirKeyPath) {
  TempDir dir;
  const auto errors = [&](const std::string& exec, const std::string& extra = "") {
    const auto path =
        dir.write("config", kubeconfig("    server: https://h\n", extra + "    exec:\n" + exec));
    return config_error([&] { load_kubeconfig_files({path}); });
  };
  const std::string at = "users[u1].user.exec";
  EXPECT_THAT(errors("      command: aws\n      interactiveMode: Never\n"),
              HasSubstr(at + ".apiVersion: missing"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1alpha1\n"
                     "      command: aws\n      interactiveMode: Never\n"),
              HasSubstr(at + ".apiVersion: \"client.authentication.k8s.io/v1alpha1\" is not "
                             "supported (client.authentication.k8s.io/v1 or "
                             "client.authentication.k8s.io/v1beta1)"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n"
                     "      interactiveMode: Never\n"),
              HasSubstr(at + ".command: missing"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"),
              HasSubstr(at + ".interactiveMode: missing (required by "
                             "client.authentication.k8s.io/v1; use Never)"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Always\n"),
              HasSubstr(at + ".interactiveMode: Always is not supported: the proxy has no "
                             "terminal"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Sometimes\n"),
              HasSubstr(at + ".interactiveMode: \"Sometimes\" is not one of Never, "
                             "IfAvailable, Always"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Never\n      provideClusterInfo: maybe\n"),
              HasSubstr(at + ".provideClusterInfo: not true or false"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Never\n      args: eks\n"),
              HasSubstr(at + ".args: not a list of strings"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Never\n      args: [eks, {a: b}]\n"),
              HasSubstr(at + ".args[1]: not a string"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: [aws]\n"
                     "      interactiveMode: Never\n"),
              HasSubstr(at + ".command: not a string"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Never\n      env: {A: b}\n"),
              HasSubstr(at + ".env: not a list of {name, value}"));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Never\n      env: [{value: x}, A]\n"),
              AllOf(HasSubstr(at + ".env[0].name: missing"),
                    HasSubstr(at + ".env[1]: not a mapping with name and value")));
  EXPECT_THAT(errors("      apiVersion: client.authentication.k8s.io/v1\n      command: aws\n"
                     "      interactiveMode: Never\n",
                     "    token: abc\n"),
              HasSubstr("users[u1].user: token/tokenFile and exec exclude each other"));
  EXPECT_THAT(errors("      - not a map\n"), HasSubstr(at + ": not a mapping"));

  // Every problem at once, each with its key path.
  const auto all = errors("      apiVersion: v2\n      interactiveMode: Always\n");
  EXPECT_THAT(all, HasSubstr(at + ".apiVersion"));
  EXPECT_THAT(all, HasSubstr(at + ".command: missing"));
  EXPECT_THAT(all, HasSubstr(at + ".interactiveMode: Always"));
}

TEST(KubeconfigTest, KubeconfigListMergesFirstWins) {
  TempDir dir;
  // The first file sets current-context and a cluster "c1"; the second has everything, including
  // another current-context and another "c1", both of which lose.
  const auto a = dir.write("a",
                           "current-context: dev\n"
                           "clusters:\n- name: c1\n  cluster: {server: 'https://first:1'}\n");
  const auto b = dir.write("b",
                           "current-context: other\n"
                           "contexts:\n- name: dev\n  context: {cluster: c1, user: u1, namespace: "
                           "ns-b}\n- name: other\n  context: {cluster: c1, user: u1}\n"
                           "clusters:\n- name: c1\n  cluster: {server: 'https://second:2'}\n"
                           "users:\n- name: u1\n  user: {token: from-b}\n");
  const auto c = load_kubeconfig_files({a, dir.path("missing"), b});
  EXPECT_EQ(c.host, "first");
  EXPECT_EQ(c.port, "1");
  EXPECT_EQ(c.token, "from-b");
  EXPECT_EQ(c.namespace_, "ns-b");
  EXPECT_THAT(c.source, HasSubstr("context dev"));
}

TEST(InClusterTest, ReadsServiceAccountFiles) {
  TempDir dir;
  dir.write("ca.crt", "CA");
  dir.write("token", "sa-token\n");
  dir.write("namespace", " llm\n");
  const Env env{{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}, {"KUBERNETES_SERVICE_PORT", "443"}};
  const auto c = in_cluster(env, dir.path());
  EXPECT_EQ(c.host_header(), "10.96.0.1:443");
  EXPECT_EQ(c.server_name, "10.96.0.1");
  EXPECT_EQ(c.ca_pem, "CA");
  EXPECT_EQ(c.token, "");
  EXPECT_EQ(c.token_file, dir.path("token"));
  EXPECT_EQ(c.namespace_, "llm");
}

TEST(InClusterTest, Ipv6HostGetsBrackets) {
  TempDir dir;
  dir.write("ca.crt", "CA");
  dir.write("token", "t");
  const auto c =
      in_cluster({{"KUBERNETES_SERVICE_HOST", "fd00:10:96::1"}, {"KUBERNETES_SERVICE_PORT", "443"}},
                 dir.path());
  EXPECT_EQ(c.host, "fd00:10:96::1");
  EXPECT_EQ(c.host_header(), "[fd00:10:96::1]:443");
  EXPECT_EQ(c.namespace_, "default");
}

TEST(InClusterTest, ErrorsSayWhatIsMissing) {
  TempDir dir;
  EXPECT_THAT(config_error([&] { in_cluster({}, dir.path()); }),
              HasSubstr("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set"));
  EXPECT_THAT(config_error([&] {
                in_cluster({{"KUBERNETES_SERVICE_HOST", "10.96.0.1"}}, dir.path());
              }),
              HasSubstr("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set"));
  const auto err = config_error([&] {
    in_cluster({{"KUBERNETES_SERVICE_HOST", "h"}, {"KUBERNETES_SERVICE_PORT", "1"}}, dir.path());
  });
  EXPECT_THAT(err, HasSubstr("cannot read " + dir.path("ca.crt")));
  EXPECT_THAT(err, HasSubstr("cannot read " + dir.path("token")));
  EXPECT_THAT(config_error([&] {
                in_cluster({{"KUBERNETES_SERVICE_HOST", "h"}, {"KUBERNETES_SERVICE_PORT", "https"}},
                           dir.path());
              }),
              HasSubstr("KUBERNETES_SERVICE_PORT \"https\" is not a port"));
}

TEST(TokenSourceTest, StaticTokenOnly) {
  TokenSource::Settings settings;
  settings.token = "abc";
  TokenSource s(settings);
  EXPECT_EQ(s.token(), "abc");
  EXPECT_FALSE(s.invalidate());
  EXPECT_FALSE(s.has_file());
}

TEST(TokenSourceTest, FileReReadAfterPeriodOrInvalidate) {
  TempDir dir;
  const auto file = dir.write("token", "one\n");
  TokenSource::Settings settings;
  settings.token_file = file;
  TokenSource s(settings);
  const Clock::time_point t0{std::chrono::hours(1)};
  EXPECT_EQ(s.token(t0), "one");
  dir.write("token", "two");
  EXPECT_EQ(s.token(t0 + std::chrono::seconds(59)), "one");  // cached
  EXPECT_EQ(s.token(t0 + std::chrono::seconds(60)), "two");  // a minute old: re-read
  dir.write("token", "three");
  EXPECT_EQ(s.token(t0 + std::chrono::seconds(61)), "two");
  EXPECT_TRUE(s.invalidate());  // a 401
  EXPECT_EQ(s.token(t0 + std::chrono::seconds(62)), "three");
  std::filesystem::remove(file);  // a failed read keeps the last good token
  EXPECT_TRUE(s.invalidate());
  EXPECT_EQ(s.token(t0 + std::chrono::seconds(63)), "three");
}

TEST(TokenSourceTest, StaticTokenFirstThenFile) {
  TempDir dir;
  const auto file = dir.write("token", "from-file");
  TokenSource::Settings settings;
  settings.token = "static";
  settings.token_file = file;
  TokenSource s(settings);
  const Clock::time_point t0{std::chrono::hours(1)};
  EXPECT_EQ(s.token(t0), "static");
  EXPECT_EQ(s.token(t0 + std::chrono::seconds(10)), "static");
  EXPECT_EQ(s.token(t0 + std::chrono::seconds(60)), "from-file");
}

}  // namespace
}  // namespace va::k8s
