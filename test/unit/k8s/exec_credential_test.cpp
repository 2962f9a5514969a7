#include "k8s/exec_credential.hpp"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include "k8s/client.hpp"
#include "k8s/watch.hpp"
#include "unit/k8s/temp_dir.hpp"
#include "unit/k8s/tls_server.hpp"

namespace va::k8s {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using std::chrono::system_clock;
using ::testing::HasSubstr;
using testing::kNamespace;
using testing::kUnauthorized;
using ::testing::Not;
using testing::reply;
using testing::Request;
using testing::TempDir;
using testing::TlsServer;

std::string rfc3339(system_clock::time_point t) {
  const std::time_t tt = system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

system_clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi, int s) {
  using namespace std::chrono;
  return sys_days(year_month_day{year(y), month(mo), day(d)}) + hours(h) + minutes(mi) + seconds(s);
}

TEST(ExecCredentialTest, Rfc3339) {
  using std::chrono::milliseconds;
  EXPECT_EQ(parse_rfc3339("2024-05-01T13:00:00Z"), utc(2024, 5, 1, 13, 0, 0));
  EXPECT_EQ(parse_rfc3339("2024-05-01T15:00:00+02:00"), utc(2024, 5, 1, 13, 0, 0));
  EXPECT_EQ(parse_rfc3339("2024-05-01T10:30:00-02:30"), utc(2024, 5, 1, 13, 0, 0));
  EXPECT_EQ(parse_rfc3339("2024-02-29T00:00:00.25Z"),
            utc(2024, 2, 29, 0, 0, 0) + milliseconds(250));
  EXPECT_EQ(parse_rfc3339("2024-05-01t13:00:00z"), utc(2024, 5, 1, 13, 0, 0));
  // Found by fuzz_k8s: year 0026 overflowed system_clock's nanoseconds. Beyond 1900–2200 a time
  // is clamped: long past (Go's zero time included) or far off.
  EXPECT_EQ(parse_rfc3339("0026-05-01T13:01:00.25+02:00"), utc(1900, 1, 1, 0, 0, 0));
  EXPECT_EQ(parse_rfc3339("0001-01-01T00:00:00Z"), utc(1900, 1, 1, 0, 0, 0));
  EXPECT_EQ(parse_rfc3339("9999-12-31T23:59:59.999Z"), utc(2200, 1, 1, 0, 0, 0));
  EXPECT_EQ(parse_rfc3339("1900-01-01T00:00:00.5Z"), utc(1900, 1, 1, 0, 0, 0) + milliseconds(500));
  for (const char* bad :
       {"", "2024-05-01", "2024-05-01T13:00:00", "2024-05-01 13:00:00Z", "2023-02-29T00:00:00Z",
        "2024-13-01T00:00:00Z", "2024-05-01T24:00:00Z", "2024-05-01T13:00:00.Z",
        "2024-05-01T13:00:00+0200", "2024-05-01T13:00:00Zjunk", "1714568400"}) {
    EXPECT_EQ(parse_rfc3339(bad), std::nullopt) << bad;
  }
}

TEST(ExecCredentialTest, ParsesTokenAndExpiry) {
  auto c = parse_exec_credential(
      R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",)"
      R"("spec":{"interactive":false},)"
      R"("status":{"token":"abc","expirationTimestamp":"2024-05-01T13:00:00Z"}})",
      kExecApiV1, "plugin");
  ASSERT_TRUE(c) << c.error().message;
  EXPECT_EQ(c->token, "abc");
  EXPECT_EQ(c->expires, utc(2024, 5, 1, 13, 0, 0));

  auto no_expiry = parse_exec_credential(
      R"({"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential",)"
      R"("status":{"token":"abc","expirationTimestamp":null}})",
      kExecApiV1beta1, "plugin");
  ASSERT_TRUE(no_expiry) << no_expiry.error().message;
  EXPECT_EQ(no_expiry->expires, std::nullopt);
}

TEST(ExecCredentialTest, UnusableAnswersSayWhyWithoutQuotingThem) {
  const auto error = [](std::string_view text) {
    auto c = parse_exec_credential(text, kExecApiV1, "exec credential plugin \"p\"");
    EXPECT_FALSE(c);
    if (c) {
      return std::string();
    }
    EXPECT_EQ(c.error().code, errc::scaler_error);
    EXPECT_THAT(c.error().message, HasSubstr("exec credential plugin \"p\": "));
    EXPECT_THAT(c.error().message, Not(HasSubstr("secret")));
    return c.error().message;
  };
  const std::string v1 = R"("apiVersion":"client.authentication.k8s.io/v1",)";
  EXPECT_THAT(error("token=secret"), HasSubstr("its output is not JSON"));
  EXPECT_THAT(error(R"(["secret"])"), HasSubstr("not a JSON object"));
  EXPECT_THAT(error(R"({"kind":"Secret","apiVersion":"v1"})"),
              HasSubstr("not an ExecCredential (kind \"Secret\")"));
  EXPECT_THAT(error(R"({"apiVersion":"client.authentication.k8s.io/v1beta1",)"
                    R"("kind":"ExecCredential","status":{"token":"secret"}})"),
              HasSubstr("it answered with apiVersion \"client.authentication.k8s.io/v1beta1\", "
                        "but the kubeconfig asks for \"client.authentication.k8s.io/v1\""));
  EXPECT_THAT(error("{" + v1 + R"("kind":"ExecCredential"})"), HasSubstr("has no status"));
  EXPECT_THAT(error("{" + v1 + R"("kind":"ExecCredential","status":{}})"),
              HasSubstr("has no status.token"));
  EXPECT_THAT(error("{" + v1 + R"("kind":"ExecCredential","status":{"token":1}})"),
              HasSubstr("status.token is not a string"));
  EXPECT_THAT(error("{" + v1 +
                    R"("kind":"ExecCredential","status":{"clientCertificateData":"secret",)"
                    R"("clientKeyData":"secret"}})"),
              HasSubstr("returned a client certificate (status.clientCertificateData/"
                        "clientKeyData) instead of a token: not supported"));
  EXPECT_THAT(error("{" + v1 +
                    R"("kind":"ExecCredential","status":{"token":"secret",)"
                    R"("expirationTimestamp":"tomorrow"}})"),
              HasSubstr("status.expirationTimestamp \"tomorrow\" is not an RFC 3339 time"));
}

TEST(ExecCredentialTest, AnErrorNeverQuotesTheTokenWhereverThePluginPutIt) {
  const auto error = [](const std::string& text) {
    auto c = parse_exec_credential(text, kExecApiV1, "plugin");
    EXPECT_FALSE(c) << text;
    return c ? std::string() : c.error().message;
  };
  const std::string status = R"("status":{"token":"s3cr\"et-tok"})";
  // In kind, in apiVersion, as it is and as JSON writes it.
  for (const auto* kind : {R"(s3cr\"et-tok)", R"(x-s3cr\u0022et-tok-x)"}) {
    const auto m = error(std::string(R"({"kind":")") + kind + R"(",)" + status + "}");
    EXPECT_THAT(m, HasSubstr("not an ExecCredential (kind (not quoted: it holds the token))"));
    EXPECT_THAT(m, Not(HasSubstr("et-tok")));
  }
  const auto m =
      error(R"({"kind":"ExecCredential","apiVersion":"v1/s3cr\"et-tok",)" + status + "}");
  EXPECT_THAT(m, HasSubstr("it answered with apiVersion (not quoted: it holds the token), but the "
                           "kubeconfig asks for \"client.authentication.k8s.io/v1\""));
  EXPECT_THAT(m, Not(HasSubstr("et-tok")));
  const auto t =
      error(R"({"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1",)"
            R"("status":{"token":"s3cr\"et-tok","expirationTimestamp":["s3cr\"et-tok"]}})");
  EXPECT_THAT(t, HasSubstr("status.expirationTimestamp (not quoted: it holds the token) is not"));
  EXPECT_THAT(t, Not(HasSubstr("et-tok")));
  // A value that does not hold it is still quoted.
  EXPECT_THAT(error(R"({"kind":"Secret",)" + status + "}"), HasSubstr("(kind \"Secret\")"));
}

TEST(ExecCredentialTest, ExecInfo) {
  ExecConfig e;
  e.api_version = kExecApiV1;
  e.command = "p";
  ClusterConfig c;
  c.server = "https://k8s.example:6443";
  c.host = "k8s.example";
  c.server_name = "k8s.example";
  EXPECT_EQ(exec_info(e, c),
            R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",)"
            R"("spec":{"interactive":false}})");
  e.provide_cluster_info = true;
  EXPECT_EQ(exec_info(e, c),
            R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",)"
            R"("spec":{"interactive":false,"cluster":{"server":"https://k8s.example:6443"}}})");
  c.server_name = "kubernetes";
  c.ca_pem = "PEM";
  c.insecure_skip_tls_verify = true;
  EXPECT_EQ(exec_info(e, c),
            R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",)"
            R"("spec":{"interactive":false,"cluster":{"server":"https://k8s.example:6443",)"
            R"("tls-server-name":"kubernetes","insecure-skip-tls-verify":true,)"
            R"("certificate-authority-data":"UEVN"}}})");
}

// Client against the in-process API server, with a /bin/sh plugin written at test time. The
// plugin appends a line to $RUNS each time it runs; cred TOKEN [EXTRA] prints an ExecCredential.
class ExecPluginTest : public testing::TlsApiTest {
 protected:
  std::string plugin(const std::string& body, const std::string& name = "plugin.sh") {
    const auto path = dir_.write(
        name,
        "#!/bin/sh\n"
        "echo run >> \"$RUNS\"\n"
        "n=$(wc -l < \"$RUNS\" | tr -d ' ')\n"
        "cred() { printf '{\"apiVersion\":\"%s\",\"kind\":\"ExecCredential\",\"status\":"
        "{\"token\":\"%s\"%s}}\\n' \"${API:-client.authentication.k8s.io/v1}\" \"$1\" \"$2\"; }\n" +
            body);
    fs::permissions(path, fs::perms::owner_all);
    return path;
  }

  ClusterConfig exec_cluster(const TlsServer& server, const std::string& command) {
    auto c = cluster(server);
    c.token.clear();
    c.server = "https://127.0.0.1:" + server.port();
    c.exec = ExecConfig{};
    c.exec->api_version = kExecApiV1;
    c.exec->command = command;
    c.exec->env = {{"RUNS", dir_.path("runs")}, {"DIR", dir_.path()}};
    c.exec->interactive_mode = "Never";
    return c;
  }

  int runs() const {
    std::ifstream in(dir_.path("runs"));
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
    }
    return n;
  }

  std::string read(const std::string& name) const {
    std::ifstream in(dir_.path(name));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string bearer(std::size_t i) const {
    return std::string(server_->received.at(i).request[http::field::authorization]);
  }

  TlsServer& serve_ok() {
    server_.emplace(ioc_, server_cert_,
                    [](const Request&) { return reply(http::status::ok, kNamespace); });
    return *server_;
  }

  TempDir dir_;
  std::optional<TlsServer> server_;
};

TEST_F(ExecPluginTest, TokenReachesTheServerAndTheEnvironmentReachesThePlugin) {
  auto& server = serve_ok();
  auto c = exec_cluster(
      server, plugin("printf '%s' \"$KUBERNETES_EXEC_INFO\" > \"$DIR/exec-info\"\n"
                     "printf '%s|%s|%s|%s\\n' \"$GREETING\" \"$#\" \"$1\" \"$2\" > \"$DIR/env\"\n"
                     "read line; echo \"stdin:$?\" >> \"$DIR/env\"\n"
                     "cred tok-$n\n"));
  c.exec->args = {"first arg", "second"};
  c.exec->env.emplace_back("GREETING", "hello world");
  Client client(c, ioc_.get_executor());
  for (int i = 0; i < 2; ++i) {
    auto r = run(client.request(http::verb::get, "/api"));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200u);
  }
  ASSERT_EQ(server.received.size(), 2u);
  EXPECT_EQ(bearer(0), "Bearer tok-1");
  EXPECT_EQ(bearer(1), "Bearer tok-1");
  EXPECT_EQ(runs(), 1);  // no expirationTimestamp: kept until a 401
  EXPECT_EQ(read("exec-info"),
            R"({"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",)"
            R"("spec":{"interactive":false}})");
  EXPECT_EQ(read("env"), "hello world|2|first arg|second\nstdin:1\n");  // stdin is /dev/null
}

TEST_F(ExecPluginTest, ProvideClusterInfoAndV1beta1) {
  auto& server = serve_ok();
  auto c = exec_cluster(server, plugin("printf '%s' \"$KUBERNETES_EXEC_INFO\" > \"$DIR/info\"\n"
                                       "cred beta-token\n"));
  c.server_name = "kubernetes.default.svc";
  c.exec->api_version = kExecApiV1beta1;
  c.exec->provide_cluster_info = true;
  c.exec->env.emplace_back("API", kExecApiV1beta1);
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(bearer(0), "Bearer beta-token");
  const auto info = json::parse(read("info"));
  EXPECT_EQ(info.at("apiVersion").as_string(), kExecApiV1beta1);
  EXPECT_EQ(info.at("kind").as_string(), "ExecCredential");
  EXPECT_EQ(info.at("spec").at("interactive").as_bool(), false);
  const auto& cl = info.at("spec").at("cluster");
  EXPECT_EQ(cl.at("server").as_string(), "https://127.0.0.1:" + server.port());
  EXPECT_EQ(cl.at("tls-server-name").as_string(), "kubernetes.default.svc");
  EXPECT_EQ(base64_decode(cl.at("certificate-authority-data").as_string()), ca_.cert_pem);
  EXPECT_EQ(cl.as_object().if_contains("insecure-skip-tls-verify"), nullptr);
}

TEST_F(ExecPluginTest, TokenIsCachedUntilItExpires) {
  auto& server = serve_ok();
  const auto command = plugin("cred tok-$n \",\\\"expirationTimestamp\\\":\\\"$EXPIRES\\\"\"\n");
  const auto requests = [&](const std::string& expires, Client::Settings s = {}) {
    auto c = exec_cluster(server, command);
    c.exec->env.emplace_back("EXPIRES", expires);
    Client client(c, ioc_.get_executor(), s);
    for (int i = 0; i < 3; ++i) {
      auto r = run(client.request(http::verb::get, "/api"));
      EXPECT_TRUE(r) << r.error().message;
    }
  };
  requests(rfc3339(system_clock::now() + std::chrono::hours(1)));
  EXPECT_EQ(runs(), 1);
  EXPECT_EQ(bearer(2), "Bearer tok-1");

  requests("2000-01-01T00:00:00Z");  // expired: every request runs the plugin
  EXPECT_EQ(runs(), 4);
  EXPECT_EQ(bearer(3), "Bearer tok-2");
  EXPECT_EQ(bearer(5), "Bearer tok-4");

  // Expiring within the margin counts as expired.
  const auto soon = rfc3339(system_clock::now() + std::chrono::seconds(30));
  Client::Settings margin;
  margin.exec_expiry_margin = std::chrono::seconds(60);
  requests(soon, margin);
  EXPECT_EQ(runs(), 7);
  requests(soon);  // the default margin (10 s) leaves it usable
  EXPECT_EQ(runs(), 8);
}

TEST_F(ExecPluginTest, UnauthorizedRunsThePluginAgainAndRetriesOnce) {
  bool always_refuse = false;
  TlsServer& server = server_.emplace(ioc_, server_cert_, [&](const Request& req) {
    if (!always_refuse && req[http::field::authorization] == "Bearer tok-2") {
      return reply(http::status::ok, kNamespace);
    }
    return reply(http::status::unauthorized, kUnauthorized);
  });
  Client client(exec_cluster(server, plugin("cred tok-$n\n")), ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  ASSERT_EQ(server.received.size(), 2u);
  EXPECT_EQ(bearer(0), "Bearer tok-1");
  EXPECT_EQ(bearer(1), "Bearer tok-2");
  EXPECT_EQ(runs(), 2);

  auto cached = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(cached);
  EXPECT_EQ(bearer(2), "Bearer tok-2");
  EXPECT_EQ(runs(), 2);

  // Refused again after the re-run: the 401 is the answer.
  always_refuse = true;
  auto refused = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 401u);
  EXPECT_EQ(server.received.size(), 5u);
  EXPECT_EQ(runs(), 3);

  // A watch does the same.
  always_refuse = false;
  auto w = run(client.watch("/w", std::chrono::seconds(10), [](WatchEvent&&) { return true; }));
  ASSERT_TRUE(w) << w.error().message;
  EXPECT_EQ(w->status, 401u);  // tok-3, then tok-4: neither is tok-2
  EXPECT_EQ(bearer(5), "Bearer tok-3");
  EXPECT_EQ(bearer(6), "Bearer tok-4");
  EXPECT_EQ(runs(), 4);
}

TEST_F(ExecPluginTest, ConcurrentRequestsShareOneRun) {
  auto& server = serve_ok();
  Client client(exec_cluster(server, plugin("sleep 0.05\ncred tok-$n\n")), ioc_.get_executor());
  constexpr int kRequests = 5;
  int done = 0;
  for (int i = 0; i < kRequests; ++i) {
    net::co_spawn(ioc_, client.request(http::verb::get, "/api"),
                  [&](std::exception_ptr e, outcome<Response> r) {
                    EXPECT_FALSE(e);
                    EXPECT_TRUE(r && r->status == 200u);
                    if (++done == kRequests) {
                      ioc_.stop();
                    }
                  });
  }
  ioc_.run_for(std::chrono::seconds(10));
  ASSERT_EQ(done, kRequests);
  EXPECT_EQ(runs(), 1);
  ASSERT_EQ(server.received.size(), static_cast<std::size_t>(kRequests));
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(bearer(i), "Bearer tok-1");
  }
}

TEST_F(ExecPluginTest, ConcurrentCallersShareAFailureToo) {
  auto& server = serve_ok();
  Client client(exec_cluster(server, plugin("echo 'no network' >&2\nexit 1\n")),
                ioc_.get_executor());
  int failures = 0;
  for (int i = 0; i < 3; ++i) {
    net::co_spawn(ioc_, client.bearer_token(), [&](std::exception_ptr, outcome<std::string> t) {
      EXPECT_FALSE(t);
      if (!t && t.error().code == errc::scaler_unavailable && ++failures == 3) {
        ioc_.stop();
      }
    });
  }
  ioc_.run_for(std::chrono::seconds(10));
  EXPECT_EQ(failures, 3);
  EXPECT_EQ(runs(), 1);
  EXPECT_TRUE(server.received.empty());
}

TEST_F(ExecPluginTest, CallersOnSeveralThreadsShareOneRun) {
  auto& server = serve_ok();  // not contacted: bearer_token() only
  net::io_context ioc(2);
  Client client(exec_cluster(server, plugin("sleep 0.05\ncred tok-$n\n")), ioc.get_executor());
  constexpr int kCallers = 8;
  std::atomic<int> good{0};
  for (int i = 0; i < kCallers; ++i) {
    net::co_spawn(ioc, client.bearer_token(), [&](std::exception_ptr e, outcome<std::string> t) {
      if (!e && t && *t == "tok-1") {
        ++good;
      }
    });
  }
  std::thread other([&] { ioc.run_for(std::chrono::seconds(10)); });
  ioc.run_for(std::chrono::seconds(10));  // both return when all callers are done
  other.join();
  EXPECT_EQ(good, kCallers);
  EXPECT_EQ(runs(), 1);
}

TEST_F(ExecPluginTest, ACancelledCallerLeavesTheRunToTheOthers) {
  auto& server = serve_ok();
  Client client(exec_cluster(server, plugin("sleep 0.3\ntouch \"$DIR/done\"\ncred tok-$n\n")),
                ioc_.get_executor());
  auto race = [](Client& client, net::io_context& ioc) -> task<outcome<Response>> {
    using namespace net::experimental::awaitable_operators;
    Timer timer(ioc, std::chrono::milliseconds(20));
    auto r =
        co_await (client.request(http::verb::get, "/api") || timer.async_wait(use_nothrow_task));
    if (r.index() == 0) {
      co_return std::get<0>(std::move(r));
    }
    co_return Failure{errc::client_gone, "timer"};
  };
  auto cancelled = run(race(client, ioc_));
  ASSERT_FALSE(cancelled);
  EXPECT_EQ(cancelled.error().message, "timer");
  EXPECT_FALSE(fs::exists(dir_.path("done")));            // it did not wait for the plugin
  auto r = run(client.request(http::verb::get, "/api"));  // joins the run still going
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(bearer(0), "Bearer tok-1");
  EXPECT_EQ(runs(), 1);
}

TEST_F(ExecPluginTest, NonZeroExitIsUnavailableWithTheLastStderrLine) {
  auto& server = serve_ok();
  const auto command =
      plugin("echo 'starting' >&2\necho 'error: no credentials in profile' >&2\nexit 3\n");
  Client client(exec_cluster(server, command), ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_unavailable);
  EXPECT_EQ(r.error().message, "test: exec credential plugin \"" + command +
                                   "\": exited with status 3: error: no credentials in profile");
  EXPECT_TRUE(server.received.empty());

  // Not cached: the next request runs it again.
  EXPECT_FALSE(run(client.request(http::verb::get, "/api")));
  EXPECT_EQ(runs(), 2);
}

TEST_F(ExecPluginTest, BadOutputIsAnError) {
  auto& server = serve_ok();
  const auto command = plugin("echo 'token=secret'\necho 'deprecated flag' >&2\n");
  Client client(exec_cluster(server, command), ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_error);
  EXPECT_THAT(r.error().message,
              HasSubstr("exec credential plugin \"" + command + "\": its output is not JSON"));
  EXPECT_THAT(r.error().message, HasSubstr("(its last stderr line: deprecated flag)"));
  EXPECT_THAT(r.error().message, Not(HasSubstr("secret")));
  EXPECT_TRUE(server.received.empty());
}

TEST_F(ExecPluginTest, ClientCertificateFromThePluginIsNotSupported) {
  auto& server = serve_ok();
  Client client(exec_cluster(server, plugin("cred '' ',\"clientCertificateData\":\"C\","
                                            "\"clientKeyData\":\"K\"'\n")),
                ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_error);
  EXPECT_THAT(r.error().message, HasSubstr("instead of a token: not supported"));
  EXPECT_TRUE(server.received.empty());
}

TEST_F(ExecPluginTest, SlowPluginIsKilledAfterTheTimeout) {
  auto& server = serve_ok();
  // A child of the plugin keeps its stdout open: the whole process group goes.
  const auto command = plugin("echo 'waiting for the browser' >&2\nsleep 30 &\nwait\n");
  Client::Settings s;
  s.exec_timeout = std::chrono::milliseconds(200);
  Client client(exec_cluster(server, command), ioc_.get_executor(), s);
  const auto started = std::chrono::steady_clock::now();
  auto r = run(client.request(http::verb::get, "/api"));
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_unavailable);
  EXPECT_EQ(r.error().message, "test: exec credential plugin \"" + command +
                                   "\": no answer within 200ms, killed: waiting for the browser");
  EXPECT_TRUE(server.received.empty());
}

TEST_F(ExecPluginTest, MissingCommandNamesTheInstallHint) {
  auto& server = serve_ok();
  auto c = exec_cluster(server, dir_.path("no-such-plugin"));
  c.exec->install_hint = "Install it with: apt install no-such-plugin";
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::scaler_error);
  EXPECT_EQ(r.error().message, "test: exec credential plugin \"" + dir_.path("no-such-plugin") +
                                   "\": not found; Install it with: apt install no-such-plugin");

  c.exec->command = "va-test-no-such-plugin";
  Client bare(c, ioc_.get_executor());
  auto b = run(bare.request(http::verb::get, "/api"));
  ASSERT_FALSE(b);
  EXPECT_THAT(b.error().message, HasSubstr("\"va-test-no-such-plugin\": not found in PATH; "));
  EXPECT_TRUE(server.received.empty());
}

TEST_F(ExecPluginTest, PluginInheritsNoDescriptorOfOurs) {
  auto& server = serve_ok();
  const int fd = ::open("/dev/null", O_RDONLY);  // deliberately not close-on-exec
  ASSERT_GE(fd, 3);
  auto c = exec_cluster(server, plugin("ls /proc/$$/fd > \"$DIR/fds\"\n"
                                       "if [ -e /proc/$$/fd/$FD ]; then echo yes > \"$DIR/leak\"; "
                                       "fi\ncred tok\n"));
  c.exec->env.emplace_back("FD", std::to_string(fd));
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ::close(fd);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read("leak"), "") << "open in the plugin: " << read("fds");
}

}  // namespace
}  // namespace va::k8s
