#include "config/loader.hpp"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/duration.hpp"
#include "support/temp_dir.hpp"

namespace va::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::AllOf;
using ::testing::Contains;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::Pair;
using ::testing::StartsWith;

using Env = std::map<std::string, std::string>;

constexpr const char* kMinimal =
    "backends:\n"
    "  - upstream: http://127.0.0.1:8000\n"
    "    default: true\n";

using va::test_support::TempDir;

Loaded load_args(std::vector<std::string> args, const Env& env = {}) {
  args.insert(args.begin(), "vllm-autoscaler");
  std::vector<const char*> argv;
  for (const std::string& a : args) {
    argv.push_back(a.c_str());
  }
  argv.push_back(nullptr);
  return load(static_cast<int>(args.size()), argv.data(), env);
}

// The problems of a load that must fail; an empty list (and a test failure) if it succeeds.
std::vector<std::string> problems_of(std::vector<std::string> args, const Env& env = {}) {
  try {
    load_args(std::move(args), env);
  } catch (const ConfigError& e) {
    return e.problems();
  }
  ADD_FAILURE() << "load succeeded";
  return {};
}

class LoaderTest : public ::testing::Test {
 protected:
  Loaded load_yaml(const std::string& yaml, std::vector<std::string> args = {},
                   const Env& env = {}) {
    args.insert(args.begin(), {"--config", dir_.write("config.yaml", yaml)});
    return load_args(std::move(args), env);
  }
  std::vector<std::string> yaml_problems(const std::string& yaml,
                                         std::vector<std::string> args = {}, const Env& env = {}) {
    args.insert(args.begin(), {"--config", dir_.write("config.yaml", yaml)});
    return problems_of(std::move(args), env);
  }
  TempDir dir_;
};

// ---- defaults and reading ----

TEST_F(LoaderTest, EveryDefaultAppliesWhenKeysAreAbsent) {
  const Loaded loaded = load_yaml(kMinimal);
  EXPECT_EQ(loaded.action, Action::run);
  const Config& c = loaded.config;
  EXPECT_EQ(c.listen, "0.0.0.0:8080");
  EXPECT_EQ(c.admin_listen, "0.0.0.0:8081");
  EXPECT_EQ(c.threads, 1);
  EXPECT_EQ(c.log.level, "info");
  EXPECT_EQ(c.log.format, "json");
  EXPECT_EQ(c.auth.api_keys_file, "");
  EXPECT_THAT(c.auth.api_keys, IsEmpty());
  EXPECT_THAT(c.auth.keys, IsEmpty());
  EXPECT_EQ(c.limits.max_header_bytes, 16384u);
  EXPECT_EQ(c.limits.max_body_bytes, 16777216u);
  EXPECT_EQ(c.limits.max_pending_bytes, 67108864u);
  EXPECT_EQ(c.limits.max_connections, 10000u);
  EXPECT_EQ(c.limits.header_timeout, seconds(10));
  EXPECT_EQ(c.limits.keepalive_timeout, seconds(75));
  EXPECT_EQ(c.limits.send_timeout, seconds(60));
  EXPECT_EQ(c.limits.shutdown_timeout, seconds(30));
  ASSERT_EQ(c.backends.size(), 1u);
  const Backend& b = c.backends[0];
  EXPECT_EQ(b.name, "default");
  EXPECT_THAT(b.models, IsEmpty());
  EXPECT_TRUE(b.default_);
  EXPECT_EQ(b.upstream, "http://127.0.0.1:8000");
  EXPECT_EQ(b.idle_timeout, minutes(5));
  EXPECT_EQ(b.wake_timeout, minutes(2));
  EXPECT_EQ(b.max_pending, 1000u);
  EXPECT_THAT(b.upstream_headers, IsEmpty());
  EXPECT_EQ(b.health.path, "/health");
  EXPECT_EQ(b.health.interval, seconds(1));
  EXPECT_THAT(b.health.headers, IsEmpty());
  EXPECT_EQ(b.scaler.type, "static");
  EXPECT_EQ(b.scaler.namespace_, "");
  EXPECT_EQ(b.scaler.deployment, "");
  EXPECT_FALSE(b.scaler.replicas);  // 1
  EXPECT_FALSE(b.scaler.target_in_flight);
  EXPECT_FALSE(b.scaler.min_replicas);
  EXPECT_FALSE(b.scaler.max_replicas);
  EXPECT_EQ(b.scaler.stable_window, seconds(60));
  EXPECT_EQ(b.scaler.panic_window, seconds(6));
  EXPECT_EQ(b.scaler.kubeconfig, "");
  EXPECT_THAT(b.scaler.command, IsEmpty());
  EXPECT_THAT(b.scaler.env, IsEmpty());
  EXPECT_EQ(b.scaler.stop_timeout, seconds(30));
}

TEST_F(LoaderTest, EveryKeyIsRead) {
  const Config c = load_yaml(R"(
listen: 127.0.0.1:9000
admin_listen: "[::1]:9001"
threads: 4
log: { level: debug, format: text }
auth:
  api_keys: ["k1", "k2"]
limits:
  max_header_bytes: 1000
  max_body_bytes: 2000
  max_pending_bytes: 3000
  max_connections: 40
  header_timeout: 3s
  keepalive_timeout: 620s
  send_timeout: 90s
  shutdown_timeout: 0s
backends:
  - name: qwen
    models: ["Qwen/Qwen2.5-7B-Instruct", "qwen-small"]
    default: true
    upstream: http://vllm-svc:80
    idle_timeout: 10m
    wake_timeout: 90s
    max_pending: 7
    upstream_headers: { Authorization: "Bearer vllm" }
    health: { path: /ready, interval: 250ms, headers: { Authorization: "Bearer x" } }
    scaler:
      type: kubernetes
      namespace: ai
      deployment: vllm
      replicas: 2
      kubeconfig: /kube/config
  - name: local
    models: [llama]
    upstream: http://127.0.0.1:8001/
    scaler:
      type: process
      command: ["vllm", "serve", "llama", "--port", "8001"]
      env: { HF_HOME: /models }
      stop_timeout: 1m
)")
                       .config;
  EXPECT_EQ(c.listen, "127.0.0.1:9000");
  EXPECT_EQ(c.admin_listen, "[::1]:9001");
  EXPECT_EQ(c.threads, 4);
  EXPECT_EQ(c.log.level, "debug");
  EXPECT_EQ(c.log.format, "text");
  EXPECT_THAT(c.auth.api_keys, ElementsAre("k1", "k2"));
  EXPECT_THAT(c.auth.keys, ElementsAre("k1", "k2"));
  EXPECT_EQ(c.limits.max_header_bytes, 1000u);
  EXPECT_EQ(c.limits.max_body_bytes, 2000u);
  EXPECT_EQ(c.limits.max_pending_bytes, 3000u);
  EXPECT_EQ(c.limits.max_connections, 40u);
  EXPECT_EQ(c.limits.header_timeout, seconds(3));
  EXPECT_EQ(c.limits.keepalive_timeout, seconds(620));
  EXPECT_EQ(c.limits.send_timeout, seconds(90));
  EXPECT_EQ(c.limits.shutdown_timeout, seconds(0));
  ASSERT_EQ(c.backends.size(), 2u);
  const Backend& q = c.backends[0];
  EXPECT_EQ(q.name, "qwen");
  EXPECT_THAT(q.models, ElementsAre("Qwen/Qwen2.5-7B-Instruct", "qwen-small"));
  EXPECT_TRUE(q.default_);
  EXPECT_EQ(q.upstream, "http://vllm-svc:80");
  EXPECT_EQ(q.idle_timeout, minutes(10));
  EXPECT_EQ(q.wake_timeout, seconds(90));
  EXPECT_EQ(q.max_pending, 7u);
  EXPECT_EQ(q.upstream_headers.at("Authorization"), "Bearer vllm");
  EXPECT_EQ(q.health.path, "/ready");
  EXPECT_EQ(q.health.interval, milliseconds(250));
  EXPECT_EQ(q.health.headers.at("Authorization"), "Bearer x");
  EXPECT_EQ(q.scaler.type, "kubernetes");
  EXPECT_EQ(q.scaler.namespace_, "ai");
  EXPECT_EQ(q.scaler.deployment, "vllm");
  EXPECT_EQ(q.scaler.replicas, 2);
  EXPECT_EQ(q.scaler.kubeconfig, "/kube/config");
  const Backend& l = c.backends[1];
  EXPECT_EQ(l.name, "local");
  EXPECT_FALSE(l.default_);
  EXPECT_EQ(l.scaler.type, "process");
  EXPECT_THAT(l.scaler.command, ElementsAre("vllm", "serve", "llama", "--port", "8001"));
  EXPECT_EQ(l.scaler.env.at("HF_HOME"), "/models");
  EXPECT_EQ(l.scaler.stop_timeout, minutes(1));
}

TEST_F(LoaderTest, EmptyFileLeavesDefaultsAndStillNeedsABackend) {
  EXPECT_THAT(yaml_problems(""), ElementsAre("backends: at least one backend is required"));
}

TEST_F(LoaderTest, KeysWithNothingUnderThemAreEmpty) {
  const Config c = load_yaml(std::string("log:\nauth:\nlimits:\n") + kMinimal).config;
  EXPECT_EQ(c.log.level, "info");
}

// ---- unknown keys and wrong types ----

TEST_F(LoaderTest, UnknownKeysAtEveryDepthAreAllReportedAtOnce) {
  const auto problems = yaml_problems(R"(
lisen: 0.0.0.0:1
log: { level: info, colour: true }
limits: { max_body: 1 }
backends:
  - upstream: http://a:1
    default: true
    health: { intervall: 1s }
    scaler: { type: process, comand: [x] }
)");
  EXPECT_THAT(problems, Contains("lisen: unknown key"));
  EXPECT_THAT(problems, Contains("log.colour: unknown key"));
  EXPECT_THAT(problems, Contains("limits.max_body: unknown key"));
  EXPECT_THAT(problems, Contains("backends[0].health.intervall: unknown key"));
  EXPECT_THAT(problems, Contains("backends[0].scaler.comand: unknown key"));
}

TEST_F(LoaderTest, WrongTypesAreReportedWithTheirPaths) {
  const auto problems = yaml_problems(R"(
listen: { host: a }
threads: [1]
log: json
auth: { api_keys: secret }
backends:
  - upstream: http://a:1
    models: qwen
    default: maybe
    max_pending: lots
    health: 5
)");
  EXPECT_THAT(problems, Contains("listen: expected a string"));
  EXPECT_THAT(problems, Contains("threads: expected a number"));
  EXPECT_THAT(problems, Contains("log: expected a map"));
  EXPECT_THAT(problems, Contains("auth.api_keys: expected a list"));
  EXPECT_THAT(problems, Contains("backends[0].models: expected a list"));
  EXPECT_THAT(problems, Contains("backends[0].default: expected a bool"));
  EXPECT_THAT(problems, Contains("backends[0].max_pending: expected a number"));
  EXPECT_THAT(problems, Contains("backends[0].health: expected a map"));
}

TEST_F(LoaderTest, BackendsMustBeAList) {
  EXPECT_THAT(yaml_problems("backends: { name: a }"), ElementsAre("backends: expected a list"));
}

TEST_F(LoaderTest, NegativeSizeIsReported) {
  EXPECT_THAT(yaml_problems(std::string("limits: { max_body_bytes: -1 }\n") + kMinimal),
              ElementsAre("limits.max_body_bytes: must not be negative"));
}

TEST_F(LoaderTest, RepeatedKeyIsReported) {
  EXPECT_THAT(yaml_problems(std::string("threads: 2\nthreads: 3\n") + kMinimal),
              ElementsAre("threads: repeated key"));
}

TEST_F(LoaderTest, TopLevelMustBeAMap) {
  const std::string file = dir_.path("config.yaml");
  EXPECT_THAT(yaml_problems("- a\n- b\n"),
              ElementsAre(file + ": expected a map of settings at the top level"));
}

TEST_F(LoaderTest, ABadValueIsNotReportedTwice) {
  // upstream failed to decode; validation must not add "upstream: required" on top.
  EXPECT_THAT(yaml_problems("backends:\n  - upstream: [x]\n    default: true\n"),
              ElementsAre("backends[0].upstream: expected a string"));
}

// ---- durations ----

TEST_F(LoaderTest, BadDurationIsReportedWithItsValue) {
  EXPECT_THAT(
      yaml_problems(std::string(kMinimal) + "    idle_timeout: 5 minutes\n"),
      ElementsAre("backends[0].idle_timeout: bad duration \"5 minutes\" (use ms, s, m or h)"));
}

TEST_F(LoaderTest, BareNumberIsNotADuration) {
  EXPECT_THAT(yaml_problems(std::string("limits: { header_timeout: 10 }\n") + kMinimal),
              ElementsAre("limits.header_timeout: bad duration \"10\" (use ms, s, m or h)"));
}

TEST_F(LoaderTest, ZeroDurationsAreRejectedExceptShutdownTimeout) {
  const auto problems = yaml_problems(R"(
limits: { header_timeout: 0s, send_timeout: 0s, shutdown_timeout: 0s }
backends:
  - upstream: http://a:1
    default: true
    idle_timeout: 0s
    wake_timeout: 0ms
    health: { interval: 0s }
    scaler: { type: process, command: [x], stop_timeout: 0s }
)");
  EXPECT_THAT(problems, ElementsAre("limits.header_timeout: must be greater than 0",
                                    "limits.send_timeout: must be greater than 0",
                                    "backends[0].idle_timeout: must be greater than 0",
                                    "backends[0].wake_timeout: must be greater than 0",
                                    "backends[0].health.interval: must be greater than 0",
                                    "backends[0].scaler.stop_timeout: must be greater than 0"));
}

// ---- environment expansion ----

TEST_F(LoaderTest, VariablesInYamlStringsExpandFromTheEnvironment) {
  const Config c =
      load_yaml(R"(
threads: ${THREADS}
backends:
  - upstream: http://${HOST}:8000
    models: ["${MODEL}"]
    default: true
    health: { headers: { Authorization: "Bearer ${VLLM_API_KEY}" } }
)",
                {}, {{"THREADS", "3"}, {"HOST", "vllm"}, {"MODEL", "m"}, {"VLLM_API_KEY", "abc"}})
          .config;
  EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.backends[0].upstream, "http://vllm:8000");
  EXPECT_THAT(c.backends[0].models, ElementsAre("m"));
  EXPECT_EQ(c.backends[0].health.headers.at("Authorization"), "Bearer abc");
}

TEST_F(LoaderTest, VariableDefaultAppliesWhenUnsetOrEmpty) {
  const std::string yaml = "listen: ${ADDR:-127.0.0.1:7000}\n" + std::string(kMinimal);
  EXPECT_EQ(load_yaml(yaml).config.listen, "127.0.0.1:7000");
  EXPECT_EQ(load_yaml(yaml, {}, {{"ADDR", ""}}).config.listen, "127.0.0.1:7000");
  EXPECT_EQ(load_yaml(yaml, {}, {{"ADDR", "0.0.0.0:1"}}).config.listen, "0.0.0.0:1");
}

TEST_F(LoaderTest, UnsetVariableIsReportedWithItsPath) {
  const auto problems = yaml_problems(R"(
backends:
  - upstream: http://${NOPE}:${ALSO_NOPE}
    default: true
)");
  EXPECT_THAT(problems,
              ElementsAre("backends[0].upstream: environment variable NOPE is not set",
                          "backends[0].upstream: environment variable ALSO_NOPE is not set"));
}

TEST_F(LoaderTest, DoubledDollarIsALiteralReference) {
  const Config c =
      load_yaml(std::string(kMinimal) +
                "    scaler: { type: process, command: [sh, -c, \"echo $${HOME}\"] }\n")
          .config;
  EXPECT_THAT(c.backends[0].scaler.command, ElementsAre("sh", "-c", "echo ${HOME}"));
}

TEST_F(LoaderTest, UnterminatedReferenceIsReported) {
  EXPECT_THAT(yaml_problems("listen: ${ADDR\n" + std::string(kMinimal)),
              ElementsAre(StartsWith("listen: unterminated \"${\"")));
}

TEST_F(LoaderTest, VariablesAreNotExpandedInEnvironmentOverrides) {
  const Config c =
      load_args({"--upstream", "http://a:1"}, {{"VLLM_AUTOSCALER_MODEL", "${M}"}, {"M", "m"}})
          .config;
  EXPECT_THAT(c.backends[0].models, ElementsAre("${M}"));
}

// ---- precedence ----

TEST_F(LoaderTest, FlagsBeatEnvironmentBeatsYamlBeatsDefaults) {
  const std::string yaml =
      "listen: 127.0.0.1:1001\nadmin_listen: 127.0.0.1:2001\n"
      "log: { level: warn }\n" +
      std::string(kMinimal);
  const Env env{{"VLLM_AUTOSCALER_LISTEN", "127.0.0.1:1002"},
                {"VLLM_AUTOSCALER_ADMIN_LISTEN", "127.0.0.1:2002"}};
  const Config c = load_yaml(yaml, {"--listen", "127.0.0.1:1003"}, env).config;
  EXPECT_EQ(c.listen, "127.0.0.1:1003");        // flag
  EXPECT_EQ(c.admin_listen, "127.0.0.1:2002");  // environment
  EXPECT_EQ(c.log.level, "warn");               // YAML
  EXPECT_EQ(c.log.format, "json");              // default
}

TEST_F(LoaderTest, EveryOverrideHasAFlagAndAVariable) {
  const std::vector<std::pair<std::string, std::string>> pairs{{"listen", "127.0.0.1:1"},
                                                               {"admin-listen", "127.0.0.1:2"},
                                                               {"threads", "3"},
                                                               {"log-level", "debug"},
                                                               {"log-format", "text"},
                                                               {"upstream", "http://u:9"},
                                                               {"model", "m"},
                                                               {"idle-timeout", "7m"},
                                                               {"wake-timeout", "8s"},
                                                               {"k8s-namespace", "ns"},
                                                               {"k8s-deployment", "dep"}};
  std::vector<std::string> args;
  Env env;
  for (const auto& [flag, value] : pairs) {
    args.push_back("--" + flag);
    args.push_back(value);
    std::string name = "VLLM_AUTOSCALER_";
    for (char ch : flag) {
      name += ch == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
    env[name] = value;
  }
  for (const Config& c : {load_args(args).config, load_args({}, env).config}) {
    EXPECT_EQ(c.listen, "127.0.0.1:1");
    EXPECT_EQ(c.admin_listen, "127.0.0.1:2");
    EXPECT_EQ(c.threads, 3);
    EXPECT_EQ(c.log.level, "debug");
    EXPECT_EQ(c.log.format, "text");
    ASSERT_EQ(c.backends.size(), 1u);
    const Backend& b = c.backends[0];
    EXPECT_EQ(b.upstream, "http://u:9");
    EXPECT_THAT(b.models, ElementsAre("m"));
    EXPECT_EQ(b.idle_timeout, minutes(7));
    EXPECT_EQ(b.wake_timeout, seconds(8));
    EXPECT_EQ(b.scaler.type, "kubernetes");
    EXPECT_EQ(b.scaler.namespace_, "ns");
    EXPECT_EQ(b.scaler.deployment, "dep");
  }
}

TEST_F(LoaderTest, EmptyVariableCountsAsUnset) {
  const Config c = load_yaml("listen: 127.0.0.1:5\n" + std::string(kMinimal), {},
                             {{"VLLM_AUTOSCALER_LISTEN", ""}})
                       .config;
  EXPECT_EQ(c.listen, "127.0.0.1:5");
}

TEST_F(LoaderTest, KubernetesServiceVariablesAreIgnored) {
  // A Service named vllm-autoscaler injects these into every pod of its namespace.
  EXPECT_NO_THROW(load_yaml(kMinimal, {},
                            {{"VLLM_AUTOSCALER_PORT", "tcp://10.0.0.1:8080"},
                             {"VLLM_AUTOSCALER_SERVICE_HOST", "10.0.0.1"}}));
}

TEST_F(LoaderTest, ConfigFileCanComeFromTheEnvironment) {
  const std::string file = dir_.write("env.yaml", "threads: 5\n" + std::string(kMinimal));
  EXPECT_EQ(load_args({}, {{"VLLM_AUTOSCALER_CONFIG", file}}).config.threads, 5);
}

TEST_F(LoaderTest, ConfigFlagBeatsConfigVariable) {
  const std::string env_file = dir_.write("env.yaml", "threads: 5\n" + std::string(kMinimal));
  EXPECT_EQ(
      load_yaml("threads: 6\n" + std::string(kMinimal), {}, {{"VLLM_AUTOSCALER_CONFIG", env_file}})
          .config.threads,
      6);
}

TEST_F(LoaderTest, BadOverrideValuesNameTheirSource) {
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--idle-timeout", "5x"}),
              ElementsAre("--idle-timeout: bad duration \"5x\" (use ms, s, m or h)"));
  EXPECT_THAT(problems_of({"--upstream", "http://a:1"}, {{"VLLM_AUTOSCALER_THREADS", "many"}}),
              ElementsAre("VLLM_AUTOSCALER_THREADS: expected a number"));
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--listen", "nowhere"}),
              ElementsAre(StartsWith("listen (from --listen): bad address \"nowhere\"")));
  EXPECT_THAT(problems_of({"--upstream", "ftp://a:1"}),
              ElementsAre(StartsWith("backends[0].upstream (from --upstream): bad URL")));
}

// ---- shorthand flags ----

TEST_F(LoaderTest, UpstreamShorthandCreatesADefaultStaticBackend) {
  const Config c =
      load_args({"--upstream", "http://127.0.0.1:8000", "--model", "a", "--model", "b"}).config;
  ASSERT_EQ(c.backends.size(), 1u);
  const Backend& b = c.backends[0];
  EXPECT_EQ(b.name, "default");
  EXPECT_TRUE(b.default_);
  EXPECT_EQ(b.upstream, "http://127.0.0.1:8000");
  EXPECT_THAT(b.models, ElementsAre("a", "b"));
  EXPECT_EQ(b.scaler.type, "static");
}

TEST_F(LoaderTest, ModelFlagTakesOneNameEachTime) {
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--model", "a", "b"}),
              ElementsAre(StartsWith("flags: ")));
}

TEST_F(LoaderTest, ModelVariableIsCommaSeparated) {
  const Config c =
      load_args({"--upstream", "http://a:1"}, {{"VLLM_AUTOSCALER_MODEL", "a, b,,c"}}).config;
  EXPECT_THAT(c.backends[0].models, ElementsAre("a", "b", "c"));
}

TEST_F(LoaderTest, ModelFlagReplacesTheVariable) {
  const Config c =
      load_args({"--upstream", "http://a:1", "--model", "f"}, {{"VLLM_AUTOSCALER_MODEL", "a,b"}})
          .config;
  EXPECT_THAT(c.backends[0].models, ElementsAre("f"));
}

TEST_F(LoaderTest, DeploymentShorthandSelectsTheKubernetesScaler) {
  const Config c = load_args({"--upstream", "http://vllm:80", "--k8s-deployment", "vllm",
                              "--k8s-namespace", "ai"})
                       .config;
  EXPECT_EQ(c.backends[0].scaler.type, "kubernetes");
  EXPECT_EQ(c.backends[0].scaler.deployment, "vllm");
  EXPECT_EQ(c.backends[0].scaler.namespace_, "ai");
  EXPECT_FALSE(c.backends[0].scaler.replicas);
}

TEST_F(LoaderTest, ProcessShorthandSplitsWordsAndKeepsQuotedGroups) {
  const Config c = load_args({"--upstream", "http://127.0.0.1:8001", "--process-command",
                              R"(vllm serve  "Qwen/Qwen 7B" --port 8001 --chat-template "")"})
                       .config;
  EXPECT_EQ(c.backends[0].scaler.type, "process");
  EXPECT_THAT(c.backends[0].scaler.command, ElementsAre("vllm", "serve", "Qwen/Qwen 7B", "--port",
                                                        "8001", "--chat-template", ""));
}

TEST_F(LoaderTest, ProcessShorthandWithUnterminatedQuoteIsReported) {
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--process-command", "vllm \"serve"}),
              Contains("--process-command: unterminated double quote"));
}

TEST_F(LoaderTest, ShorthandOverridesTheOnlyBackendAndKeepsItsScaler) {
  const Config c = load_yaml(R"(
backends:
  - name: qwen
    models: [q]
    upstream: http://vllm:80
    scaler: { type: kubernetes, deployment: vllm }
)",
                             {"--idle-timeout", "15m", "--upstream", "http://other:81"})
                       .config;
  ASSERT_EQ(c.backends.size(), 1u);
  const Backend& b = c.backends[0];
  EXPECT_EQ(b.name, "qwen");
  EXPECT_FALSE(b.default_);
  EXPECT_THAT(b.models, ElementsAre("q"));
  EXPECT_EQ(b.upstream, "http://other:81");
  EXPECT_EQ(b.idle_timeout, minutes(15));
  EXPECT_EQ(b.scaler.type, "kubernetes");
  EXPECT_EQ(b.scaler.deployment, "vllm");
}

TEST_F(LoaderTest, ProcessShorthandReplacesAScalerOfAnotherType) {
  const Config c = load_yaml(R"(
backends:
  - upstream: http://127.0.0.1:80
    default: true
    scaler: { type: kubernetes, namespace: ai, deployment: vllm }
)",
                             {"--process-command", "vllm serve m"})
                       .config;
  const Scaler& s = c.backends[0].scaler;
  EXPECT_EQ(s.type, "process");
  EXPECT_THAT(s.command, ElementsAre("vllm", "serve", "m"));
  EXPECT_EQ(s.deployment, "");
  EXPECT_EQ(s.namespace_, "");
}

TEST_F(LoaderTest, ShorthandNeedsExactlyOneBackend) {
  const auto problems = yaml_problems(R"(
backends:
  - { name: a, models: [a], upstream: "http://a:1" }
  - { name: b, models: [b], upstream: "http://b:1" }
)",
                                      {"--model", "x"});
  EXPECT_THAT(problems,
              ElementsAre(StartsWith("backends: shorthand flags need exactly one backend")));
}

TEST_F(LoaderTest, ProcessAndDeploymentShorthandsConflict) {
  EXPECT_THAT(
      problems_of({"--upstream", "http://a:1", "--process-command", "x"},
                  {{"VLLM_AUTOSCALER_K8S_DEPLOYMENT", "d"}}),
      Contains(AllOf(HasSubstr("--process-command"), HasSubstr("VLLM_AUTOSCALER_K8S_DEPLOYMENT"))));
}

TEST_F(LoaderTest, NamespaceShorthandAloneDoesNotPickAScaler) {
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--k8s-namespace", "ai"}),
              ElementsAre("backends[0].scaler.namespace (from --k8s-namespace): only used by the "
                          "kubernetes scaler (type is static)"));
}

// ---- actions and flags ----

TEST_F(LoaderTest, HelpReturnsTheHelpText) {
  for (const char* flag : {"--help", "-h"}) {
    const Loaded loaded = load_args({flag});
    EXPECT_EQ(loaded.action, Action::help);
    EXPECT_THAT(loaded.help_text, HasSubstr("--upstream"));
    EXPECT_THAT(loaded.help_text, HasSubstr("--process-command"));
    EXPECT_THAT(loaded.help_text, HasSubstr("VLLM_AUTOSCALER_"));
  }
}

TEST_F(LoaderTest, VersionNeedsNoConfig) {
  EXPECT_EQ(load_args({"--version"}).action, Action::version);
  EXPECT_EQ(load_args({"--version", "--config", "/nonexistent.yaml"}).action, Action::version);
}

TEST_F(LoaderTest, PrintAndCheckConfigAreReturnedAsActions) {
  EXPECT_EQ(load_yaml(kMinimal, {"--print-config"}).action, Action::print_config);
  EXPECT_EQ(load_yaml(kMinimal, {"--check-config"}).action, Action::check_config);
  EXPECT_EQ(load_yaml(kMinimal).action, Action::run);
}

TEST_F(LoaderTest, CheckConfigStillThrowsOnProblems) {
  EXPECT_THROW(load_args({"--check-config"}), ConfigError);
}

TEST_F(LoaderTest, UnknownFlagIsAConfigError) {
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--idle-timout", "5m"}),
              ElementsAre(AllOf(StartsWith("flags: "), HasSubstr("--idle-timout"))));
}

TEST_F(LoaderTest, PositionalArgumentsAreRejected) {
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "config.yaml"}),
              ElementsAre(StartsWith("flags: ")));
}

TEST_F(LoaderTest, EqualsFormOfFlagsWorks) {
  EXPECT_EQ(load_args({"--upstream=http://a:1", "--threads=2"}).config.threads, 2);
}

// ---- the file itself ----

TEST_F(LoaderTest, MissingConfigFileIsReported) {
  const std::string missing = dir_.path("missing.yaml");
  EXPECT_THAT(problems_of({"--config", missing}),
              ElementsAre("config: cannot read " + missing + ": No such file or directory"));
}

TEST_F(LoaderTest, YamlSyntaxErrorNamesFileLineAndColumn) {
  const std::string file = dir_.path("config.yaml");
  const auto problems = yaml_problems("threads: 1\nlog: { level: info\nbackends: []\n");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_THAT(problems[0], StartsWith(file + ":"));
  EXPECT_THAT(problems[0], testing::MatchesRegex(".*config\\.yaml:[0-9]+:[0-9]+: .+"));
}

TEST_F(LoaderTest, BytesThatAreNotUtf8AreReportedAtTheirLineAndColumn) {
  const std::string file = dir_.path("config.yaml");
  const std::string head =
      std::string(kMinimal) + "    scaler: {type: process, command: [vllm], env: {";
  // An invalid byte, an overlong "/", a UTF-16 surrogate, a code point above U+10FFFF, and a
  // sequence cut short by the end of its string.
  for (const std::string bad :
       {"\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"}) {
    const auto problems = yaml_problems(head + "A" + bad + ": b}}\n");
    EXPECT_THAT(problems, ElementsAre(file + ":4:53: not valid UTF-8 (byte 0x" +
                                      fmt::format("{:02x}", static_cast<unsigned char>(bad[0])) +
                                      "); a config file must be UTF-8"))
        << testing::PrintToString(bad);
  }
  // Every form of well-formed UTF-8 loads, and prints back as it came.
  const Loaded loaded =
      load_yaml(head + "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\": b}}\n");
  EXPECT_THAT(loaded.config.backends[0].scaler.env,
              ElementsAre(Pair("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", "b")));
  // Found by fuzz_config: a name of 0xff bytes loaded, printed with each byte as U+FFFD (three
  // bytes), and so printed differently on a reload. Such a file is now refused; a long name of
  // multi-byte characters keeps its bytes, and its explicit-key form, through any number of
  // reloads.
  std::string euros;
  for (int i = 0; i < 60; ++i) {
    euros += "\xe2\x82\xac";
  }
  const std::string yaml = to_yaml(load_yaml(head + euros + ": b}}\n").config);
  EXPECT_THAT(yaml, HasSubstr("? " + euros));
  EXPECT_EQ(to_yaml(load_yaml(yaml).config), yaml);
}

TEST_F(LoaderTest, OverridesAndVariablesThatAreNotUtf8AreReportedWithTheirSource) {
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--model", "m\xff"}),
              ElementsAre("--model: not valid UTF-8"));
  EXPECT_THAT(problems_of({"--upstream", "http://a:1"}, {{"VLLM_AUTOSCALER_MODEL", "a,b\xc0"}}),
              ElementsAre("VLLM_AUTOSCALER_MODEL: not valid UTF-8"));
  EXPECT_THAT(yaml_problems(std::string(kMinimal) + "    models: [\"${BAD}\"]\n", {},
                            {{"BAD", "m\xe2\x82"}}),
              ElementsAre("backends[0].models[0]: environment variable BAD is not valid UTF-8"));
}

// ---- validation ----

TEST_F(LoaderTest, MissingUpstreamIsReported) {
  EXPECT_THAT(yaml_problems("backends:\n  - default: true\n"),
              ElementsAre("backends[0].upstream: required"));
}

TEST_F(LoaderTest, UpstreamMustBePlainHttpHostAndPort) {
  const auto problem = [&](const std::string& upstream) {
    const auto p =
        yaml_problems("backends:\n  - default: true\n    upstream: \"" + upstream + "\"\n");
    return p.empty() ? std::string() : p.front();
  };
  EXPECT_THAT(problem("https://vllm:443"), HasSubstr("https upstreams are not supported yet"));
  EXPECT_THAT(problem("ftp://vllm:21"), HasSubstr("must start with http://"));
  EXPECT_THAT(problem("vllm:8000"), HasSubstr("bad URL"));
  EXPECT_THAT(problem("http://vllm:8000/v1"), HasSubstr("must not have a path"));
  EXPECT_THAT(problem("http://vllm:8000/?a=b"), HasSubstr("query"));
  EXPECT_THAT(problem("http://user:pw@vllm:8000"), HasSubstr("credentials"));
  EXPECT_THAT(problem("http://vllm:99999"), HasSubstr("bad port"));
  EXPECT_THAT(problem("http://:80"), HasSubstr("no host"));
}

TEST_F(LoaderTest, NoBackendsIsReported) {
  EXPECT_THAT(yaml_problems("backends: []\n"),
              ElementsAre("backends: at least one backend is required"));
}

TEST_F(LoaderTest, NamesAreRequiredWhenThereAreSeveralBackends) {
  const auto problems = yaml_problems(R"(
backends:
  - { models: [a], upstream: "http://a:1" }
  - { name: b, models: [b], upstream: "http://b:1" }
)");
  EXPECT_THAT(problems, ElementsAre("backends[0].name: required"));
}

TEST_F(LoaderTest, NamesMustBeUniqueAndUrlSafe) {
  const auto problems = yaml_problems(R"(
backends:
  - { name: a, models: [a], upstream: "http://a:1" }
  - { name: a, models: [b], upstream: "http://b:1" }
  - { name: "c d", models: [c], upstream: "http://c:1" }
)");
  EXPECT_THAT(problems, ElementsAre("backends[1].name: duplicate name \"a\" (also backends[0])",
                                    HasSubstr("backends[2].name: \"c d\" may use only")));
}

TEST_F(LoaderTest, ModelServedByTwoBackendsNamesBoth) {
  const auto problems = yaml_problems(R"(
backends:
  - { name: first, models: [m, n], upstream: "http://a:1" }
  - { name: second, models: [x, m], upstream: "http://b:1" }
)");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_THAT(problems[0], StartsWith("backends[1].models[1]: model \"m\""));
  EXPECT_THAT(problems[0], HasSubstr("\"first\""));
  EXPECT_THAT(problems[0], HasSubstr("\"second\""));
}

TEST_F(LoaderTest, ModelListedTwiceAndEmptyModelAreReported) {
  EXPECT_THAT(yaml_problems("backends:\n  - { upstream: \"http://a:1\", models: [m, m, \"\"] }\n"),
              ElementsAre("backends[0].models[1]: model \"m\" is listed twice",
                          "backends[0].models[2]: empty model name"));
}

TEST_F(LoaderTest, AtMostOneDefaultBackend) {
  const auto problems = yaml_problems(R"(
backends:
  - { name: a, default: true, upstream: "http://a:1" }
  - { name: b, default: true, upstream: "http://b:1" }
)");
  EXPECT_THAT(problems, ElementsAre(StartsWith("backends[1].default: only one backend may be the "
                                               "default")));
}

TEST_F(LoaderTest, BackendWithNoModelsThatIsNotDefaultIsUnreachable) {
  const auto problems = yaml_problems(R"(
backends:
  - { name: a, models: [a], upstream: "http://a:1" }
  - { name: b, upstream: "http://b:1" }
)");
  EXPECT_THAT(problems, ElementsAre(AllOf(StartsWith("backends[1].models: backend \"b\""),
                                          HasSubstr("no request can reach it"))));
}

TEST_F(LoaderTest, TopLevelValuesAreChecked) {
  const auto problems = yaml_problems(R"(
listen: "0.0.0.0"
admin_listen: "[::1]:99999"
threads: 0
log: { level: verbose, format: xml }
limits: { max_connections: 0 }
)" + std::string(kMinimal));
  EXPECT_THAT(problems,
              ElementsAre(HasSubstr("listen: bad address \"0.0.0.0\""),
                          HasSubstr("admin_listen: bad address \"[::1]:99999\""),
                          "threads: must be between 1 and 64",
                          "log.level: must be one of trace, debug, info, warn, error (got "
                          "\"verbose\")",
                          "log.format: must be one of json, text (got \"xml\")",
                          "limits.max_connections: must be greater than 0"));
}

TEST_F(LoaderTest, ThreadsAboveSixtyFourAreRejected) {
  EXPECT_THAT(yaml_problems("threads: 65\n" + std::string(kMinimal)),
              ElementsAre("threads: must be between 1 and 64"));
  EXPECT_EQ(load_yaml("threads: 64\n" + std::string(kMinimal)).config.threads, 64);
}

TEST_F(LoaderTest, ListenAndAdminListenMustDiffer) {
  EXPECT_THAT(
      yaml_problems("listen: 0.0.0.0:80\nadmin_listen: 0.0.0.0:80\n" + std::string(kMinimal)),
      ElementsAre("admin_listen: same address as listen"));
  EXPECT_NO_THROW(
      load_yaml("listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n" + std::string(kMinimal)));
}

TEST_F(LoaderTest, ScalerSettingsAreChecked) {
  const auto problems = yaml_problems(R"(
backends:
  - { name: a, models: [a], upstream: "http://a:1", scaler: { type: k8s } }
  - { name: b, models: [b], upstream: "http://b:1", scaler: { type: process } }
  - { name: c, models: [c], upstream: "http://c:1", scaler: { type: kubernetes, replicas: 0 } }
  - { name: d, models: [d], upstream: "http://d:1", scaler: { type: process, command: [x], deployment: v } }
  - { name: e, models: [e], upstream: "http://e:1", scaler: { command: [x] } }
  - { name: f, models: [f], upstream: "http://f:1", scaler: { type: kubernetes, deployment: v, service: 8vllm } }
  - { name: g, models: [g], upstream: "http://g:1", scaler: { type: process, command: [x], service: v } }
)");
  EXPECT_THAT(problems,
              ElementsAre("backends[0].scaler.type: must be one of kubernetes, process, static "
                          "(got \"k8s\")",
                          "backends[1].scaler.command: required for the process scaler",
                          "backends[2].scaler.deployment: required for the kubernetes scaler",
                          "backends[2].scaler.replicas: must be at least 1",
                          "backends[3].scaler.deployment: only used by the kubernetes scaler "
                          "(type is process)",
                          "backends[4].scaler.command: only used by the process scaler (type is "
                          "static)",
                          "backends[5].scaler.service: must be a Service's name (lowercase "
                          "letters, digits and '-', a letter first, at most 63; got \"8vllm\")",
                          "backends[6].scaler.service: only used by the kubernetes scaler (type "
                          "is process)"));
}

TEST_F(LoaderTest, PodsFromLoadAreCheckedAgainstAFixedCount) {
  const auto problems = yaml_problems(R"(
backends:
  - { name: a, models: [a], upstream: "http://a:1", scaler: { type: kubernetes, deployment: a, max_replicas: 4 } }
  - { name: b, models: [b], upstream: "http://b:1", scaler: { type: kubernetes, deployment: b, target_in_flight: 8, replicas: 2 } }
  - { name: c, models: [c], upstream: "http://c:1", scaler: { type: kubernetes, deployment: c, target_in_flight: 0 } }
  - { name: d, models: [d], upstream: "http://d:1", scaler: { type: kubernetes, deployment: d, target_in_flight: 8, min_replicas: 3, max_replicas: 2 } }
  - { name: e, models: [e], upstream: "http://e:1", scaler: { type: kubernetes, deployment: e, target_in_flight: 8, min_replicas: 0, max_replicas: 2 } }
  - { name: f, models: [f], upstream: "http://f:1", scaler: { type: kubernetes, deployment: f, target_in_flight: 8, stable_window: 5s, panic_window: 6s } }
  - { name: g, models: [g], upstream: "http://g:1", scaler: { type: process, command: [x], max_replicas: 2 } }
  - { name: h, models: [h], upstream: "http://h:1", scaler: { type: kubernetes, deployment: h, target_in_flight: many } }
)");
  EXPECT_THAT(
      problems,
      ElementsAre("backends[7].scaler.target_in_flight: expected a number",
                  "backends[0].scaler.max_replicas: scaling from load needs "
                  "scaler.target_in_flight (requests per pod); for a fixed count use "
                  "scaler.replicas",
                  "backends[1].scaler.replicas: a fixed count: with target_in_flight use "
                  "min_replicas and max_replicas",
                  "backends[2].scaler.target_in_flight: must be above 0 (requests in flight per "
                  "pod)",
                  "backends[3].scaler.max_replicas: must be at least min_replicas (3)",
                  "backends[4].scaler.min_replicas: must be at least 1 (0 is the idle stop's: "
                  "idle_timeout)",
                  "backends[5].scaler.stable_window: must be at least panic_window (6s)",
                  "backends[6].scaler.max_replicas: only used by the kubernetes scaler (type is "
                  "process)"));
  const Config c = load_yaml(R"(
backends:
  - name: q
    models: [q]
    upstream: http://vllm.llm.svc:8000
    scaler: { type: kubernetes, deployment: vllm, target_in_flight: 7.5, max_replicas: 4,
              stable_window: 2m, panic_window: 10s }
)")
                       .config;
  const auto& s = c.backends[0].scaler;
  EXPECT_EQ(s.target_in_flight, 7.5);
  EXPECT_FALSE(s.min_replicas);
  EXPECT_EQ(s.max_replicas, 4);
  EXPECT_EQ(s.stable_window, minutes(2));
  EXPECT_EQ(s.panic_window, seconds(10));
  EXPECT_EQ(to_yaml(load_yaml(to_yaml(c)).config), to_yaml(c));
}

TEST_F(LoaderTest, RoutingIsOneOfTwoPolicies) {
  EXPECT_THAT(
      yaml_problems(std::string(kMinimal) + "    routing: random\n    routing_prefix_bytes: 0\n"),
      ElementsAre("backends[0].routing: must be one of least_outstanding, prefix (got "
                  "\"random\")",
                  "backends[0].routing_prefix_bytes: must be at least 1"));
  const Config c =
      load_yaml(std::string(kMinimal) + "    routing: prefix\n    routing_prefix_bytes: 256\n")
          .config;
  EXPECT_EQ(c.backends[0].routing, "prefix");
  EXPECT_EQ(c.backends[0].routing_prefix_bytes, 256u);
  EXPECT_EQ(load_yaml(std::string(kMinimal)).config.backends[0].routing, "least_outstanding");
}

TEST_F(LoaderTest, HealthSettingsAreChecked) {
  const auto problems = yaml_problems(std::string(kMinimal) +
                                      "    health: { path: health, headers: { \"a b\": x } }\n");
  EXPECT_THAT(problems, ElementsAre(StartsWith("backends[0].health.path: must start with '/'"),
                                    StartsWith("backends[0].health.headers.a b: bad header name")));
}

TEST_F(LoaderTest, EveryProblemIsReportedInOneError) {
  try {
    load_yaml(R"(
threads: 0
bogus: 1
backends:
  - name: a
    models: [a]
    idle_timeout: soon
  - name: b
    models: [a]
    upstream: http://b:1
)");
    FAIL() << "load succeeded";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.problems(),
                ElementsAre("bogus: unknown key",
                            "backends[0].idle_timeout: bad duration \"soon\" (use ms, s, m or h)",
                            "threads: must be between 1 and 64", "backends[0].upstream: required",
                            HasSubstr("backends[1].models[0]: model \"a\"")));
    EXPECT_EQ(std::string(e.what()), e.problems()[0] + "\n" + e.problems()[1] + "\n" +
                                         e.problems()[2] + "\n" + e.problems()[3] + "\n" +
                                         e.problems()[4]);
  }
}

// ---- api keys ----

TEST_F(LoaderTest, ApiKeysFileIsReadLineByLine) {
  const std::string keys =
      dir_.write("keys", "# production keys\n  key-one  \n\nkey-two\r\n#key-x\n");
  const Config c = load_yaml("auth: { api_keys_file: " + keys + ", api_keys: [inline] }\n" +
                             std::string(kMinimal))
                       .config;
  EXPECT_EQ(c.auth.api_keys_file, keys);
  EXPECT_THAT(c.auth.api_keys, ElementsAre("inline"));
  EXPECT_THAT(c.auth.keys, ElementsAre("inline", "key-one", "key-two"));
}

TEST_F(LoaderTest, ApiKeyFileFlagIsRead) {
  const std::string keys = dir_.write("keys", "flag-key\n");
  const Config c = load_args({"--upstream", "http://a:1", "--api-key-file", keys}).config;
  EXPECT_THAT(c.auth.keys, ElementsAre("flag-key"));
}

TEST_F(LoaderTest, UnreadableApiKeysFileIsReported) {
  const std::string missing = dir_.path("nokeys");
  EXPECT_THAT(
      yaml_problems("auth: { api_keys_file: " + missing + " }\n" + std::string(kMinimal)),
      ElementsAre("auth.api_keys_file: cannot read " + missing + ": No such file or directory"));
  EXPECT_THAT(problems_of({"--upstream", "http://a:1", "--api-key-file", missing}),
              ElementsAre(StartsWith("auth.api_keys_file (from --api-key-file): cannot read")));
}

TEST_F(LoaderTest, ApiKeysFileWithNoKeysIsReported) {
  const std::string keys = dir_.write("keys", "# nothing yet\n\n");
  EXPECT_THAT(yaml_problems("auth: { api_keys_file: " + keys + " }\n" + std::string(kMinimal)),
              ElementsAre("auth.api_keys_file: " + keys + " contains no keys"));
}

TEST_F(LoaderTest, EmptyInlineKeyIsReported) {
  EXPECT_THAT(yaml_problems("auth: { api_keys: [\"${EMPTY}\"] }\n" + std::string(kMinimal), {},
                            {{"EMPTY", ""}}),
              ElementsAre("auth.api_keys[0]: empty key"));
}

TEST_F(LoaderTest, KeysNeverAppearInProblems) {
  const std::string keys = dir_.write("keys", "sk-file-secret\n");
  const auto problems = yaml_problems(R"(
auth:
  api_keys: ["sk-inline-secret", ""]
  api_keys_file: )" + keys + R"(
threads: 0
backends:
  - default: true
    health: { headers: { Authorization: "Bearer sk-header-secret" } }
)");
  EXPECT_THAT(problems, Not(IsEmpty()));
  EXPECT_THAT(problems,
              Each(AllOf(Not(HasSubstr("sk-inline-secret")), Not(HasSubstr("sk-file-secret")),
                         Not(HasSubstr("sk-header-secret")))));
}

// ---- to_yaml ----

TEST_F(LoaderTest, ToYamlMasksEverySecret) {
  const std::string keys = dir_.write("keys", "sk-file-secret\n");
  const Config c = load_yaml(R"(
auth:
  api_keys: ["sk-inline-secret"]
  api_keys_file: )" + keys + R"(
backends:
  - name: a
    default: true
    upstream: http://a:1
    health:
      headers:
        authorization: "Bearer sk-header-secret"
        X-Api-Key: sk-apikey-secret
        X-Access-Token: sk-token-secret
        X-Trace: visible-header
  - name: b
    models: [b]
    upstream: http://127.0.0.1:2
    scaler:
      type: process
      command: [vllm, serve, b, --api-key, sk-arg-secret, "--hf-token=sk-eq-secret", --port, "2"]
      env: { HF_TOKEN: sk-env-secret, HF_HOME: /visible/models }
)")
                       .config;
  const std::string yaml = to_yaml(c);
  for (const char* secret :
       {"sk-inline-secret", "sk-file-secret", "sk-header-secret", "sk-apikey-secret",
        "sk-token-secret", "sk-arg-secret", "sk-eq-secret", "sk-env-secret"}) {
    EXPECT_THAT(yaml, Not(HasSubstr(secret)));
  }
  EXPECT_THAT(yaml, HasSubstr("***"));
  EXPECT_THAT(yaml, HasSubstr("visible-header"));
  EXPECT_THAT(yaml, HasSubstr("/visible/models"));
  EXPECT_THAT(yaml, HasSubstr("--api-key"));
  EXPECT_THAT(yaml, HasSubstr(keys));
}

TEST_F(LoaderTest, ToYamlLoadsBackToTheSameConfig) {
  const Config first = load_yaml(R"(
listen: "[::1]:9000"
threads: 3
log: { level: warn, format: text }
limits: { max_body_bytes: 1024, header_timeout: 1500ms, shutdown_timeout: 0s }
backends:
  - name: k
    models: [k1, "123", "true"]
    default: true
    upstream: http://vllm:80
    idle_timeout: 90s
    health: { path: /ready, interval: 2s, headers: { X-Trace: "on" } }
    scaler: { type: kubernetes, namespace: ai, deployment: vllm, service: qwen, replicas: 2, kubeconfig: /k }
  - name: p
    models: [p]
    upstream: http://127.0.0.1:8001
    scaler: { type: process, command: [sh, -c, "echo $${HOME}"], env: { A: b }, stop_timeout: 1h }
  - name: s
    models: [s]
    upstream: http://s:1
)")
                           .config;
  const std::string yaml = to_yaml(first);
  const Config second = load_yaml(yaml).config;
  EXPECT_EQ(to_yaml(second), yaml);
  EXPECT_EQ(second.backends[1].scaler.command.back(), "echo ${HOME}");
  EXPECT_THAT(second.backends[0].models, ElementsAre("k1", "123", "true"));
  EXPECT_EQ(second.limits.header_timeout, milliseconds(1500));
  EXPECT_EQ(second.backends[0].scaler.service, "qwen");
}

TEST_F(LoaderTest, ToYamlWritesAKeyTooLongForPlainYamlAsAnExplicitKey) {
  // Found by fuzz_config: a 309-byte env name of control bytes, each written as a 4-character
  // escape, came out as a plain key over YAML's 1 024-character limit (yaml-cpp switches to an
  // explicit key only above 1 024 bytes unescaped), and the printed config did not load.
  Config c = load_yaml(R"(
backends:
  - name: p
    models: [p]
    upstream: http://127.0.0.1:8001
    scaler: { type: process, command: [vllm], env: { A: b } }
)")
                 .config;
  const std::string name = "X" + std::string(260, '\x15');
  c.backends[0].scaler.env.emplace(name, "v");
  const std::string yaml = to_yaml(c);
  EXPECT_THAT(yaml, HasSubstr("? "));
  const Config second = load_yaml(yaml).config;
  EXPECT_EQ(second.backends[0].scaler.env.at(name), "v");
  EXPECT_EQ(second.backends[0].scaler.env.at("A"), "b");
  EXPECT_EQ(to_yaml(second), yaml);
}

TEST_F(LoaderTest, ToYamlUsesTheInputKeys) {
  const std::string yaml = to_yaml(load_yaml(kMinimal).config);
  for (const char* key : {"listen:",
                          "admin_listen:",
                          "threads:",
                          "log:",
                          "level:",
                          "format:",
                          "limits:",
                          "max_header_bytes:",
                          "max_body_bytes:",
                          "max_pending_bytes:",
                          "max_connections:",
                          "header_timeout: 10s",
                          "keepalive_timeout: 75s",
                          "send_timeout: 1m",
                          "shutdown_timeout: 30s",
                          "backends:",
                          "name: default",
                          "default: true",
                          "upstream:",
                          "idle_timeout: 5m",
                          "wake_timeout: 2m",
                          "max_pending:",
                          "health:",
                          "path: /health",
                          "interval: 1s",
                          "scaler:",
                          "type: static"}) {
    EXPECT_THAT(yaml, HasSubstr(key));
  }
  EXPECT_THAT(yaml, Not(HasSubstr("keys")));
}

// ---- parse_endpoint, parse_upstream, environment_map ----

TEST(ParseEndpoint, AcceptsHostAndPort) {
  const auto e = parse_endpoint("0.0.0.0:8080");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "0.0.0.0");
  EXPECT_EQ(e->port, 8080);
  const auto named = parse_endpoint("localhost:0");
  ASSERT_TRUE(named);
  EXPECT_EQ(named->host, "localhost");
  EXPECT_EQ(named->port, 0);
  EXPECT_EQ(parse_endpoint("my-host.svc.cluster.local:65535")->port, 65535);
}

TEST(ParseEndpoint, AcceptsBracketedIpv6) {
  const auto e = parse_endpoint("[::1]:8080");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 8080);
  EXPECT_EQ(parse_endpoint("[::]:0")->host, "::");
  EXPECT_EQ(parse_endpoint("[2001:db8::1]:443")->host, "2001:db8::1");
}

TEST(ParseEndpoint, RejectsMalformedAddresses) {
  for (const char* s : {"", "host", "host:", ":8080", "::1:8080", "[::1]", "[::1]8080",
                        "[::1]:", "[zz]:80", "[]:80", "host:65536", "host:-1", "host:80a",
                        "host:123456", "ho st:80", "http://host:80", "host:80/"}) {
    EXPECT_EQ(parse_endpoint(s), std::nullopt) << '"' << s << '"';
  }
}

TEST(ParseUpstream, DefaultsToPort80) {
  const auto e = parse_upstream("http://vllm-svc");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "vllm-svc");
  EXPECT_EQ(e->port, 80);
}

TEST(ParseUpstream, AcceptsTrailingSlashAndIpv6) {
  const auto e = parse_upstream("http://[::1]:8001/");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->host, "::1");
  EXPECT_EQ(e->port, 8001);
  EXPECT_EQ(parse_upstream("http://10.0.0.1:8000")->host, "10.0.0.1");
}

TEST(ParseUpstream, RejectsWhatTheProxyCannotUse) {
  for (const char* s : {"", "vllm:80", "https://vllm", "http://vllm:0", "http://vllm/v1",
                        "http://u@vllm", "http://vllm#x", "http://"}) {
    EXPECT_EQ(parse_upstream(s), std::nullopt) << '"' << s << '"';
  }
}

// Found by fuzz/config (fuzz/corpus/config/regression-url-rootless-bracket): Boost.URL 1.81 fails
// an assertion on a URL whose path begins with ']', which aborted a debug build on this config.
TEST(ParseUpstream, RegressionUrlRootlessBracket) {
  for (const char* s : {"htt1:]", "x:]", "http:]"}) {
    EXPECT_EQ(parse_upstream(s), std::nullopt) << '"' << s << '"';
  }
}

TEST(EnvironmentMap, SplitsAtTheFirstEquals) {
  std::string a = "A=1";
  std::string b = "B=x=y";
  std::string c = "EMPTY=";
  std::string d = "NOEQUALS";
  std::vector<char*> envp{a.data(), b.data(), c.data(), d.data(), nullptr};
  const auto env = environment_map(envp.data());
  EXPECT_EQ(env, (Env{{"A", "1"}, {"B", "x=y"}, {"EMPTY", ""}}));
  EXPECT_THAT(environment_map(nullptr), IsEmpty());
}

}  // namespace
}  // namespace va::config
