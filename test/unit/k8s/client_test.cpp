#include "k8s/client.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/config_error.hpp"
#include "unit/k8s/temp_dir.hpp"
#include "unit/k8s/tls_server.hpp"

namespace va::k8s {
namespace {

using ::testing::HasSubstr;
using testing::KeyPair;
using testing::kNamespace;
using testing::kUnauthorized;
using testing::make_cert;
using testing::reply;
using testing::Reply;
using testing::Request;
using testing::TempDir;
using testing::TlsServer;

using ClientTest = testing::TlsApiTest;

TEST_F(ClientTest, VerifiedRequestSendsBearerTokenAndReusesTheConnection) {
  TlsServer server(ioc_, server_cert_,
                   [](const Request&) { return reply(http::status::ok, kNamespace); });
  Client client(cluster(server), ioc_.get_executor());
  for (int i = 0; i < 3; ++i) {
    auto r = run(client.request(http::verb::get, "/api/v1/namespaces/default"));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->status, 200u);
    EXPECT_EQ(r->body, kNamespace);
    EXPECT_EQ(r->content_type, "application/json");
  }
  ASSERT_EQ(server.received.size(), 3u);
  EXPECT_EQ(server.connections, 1);  // keep-alive
  const auto& req = server.received[0].request;
  EXPECT_EQ(req.method(), http::verb::get);
  EXPECT_EQ(req.target(), "/api/v1/namespaces/default");
  EXPECT_EQ(req[http::field::authorization], "Bearer static-token");
  EXPECT_EQ(req[http::field::accept], "application/json");
  EXPECT_EQ(req[http::field::host], "127.0.0.1:" + server.port());
  EXPECT_THAT(std::string(req[http::field::user_agent]), HasSubstr("vllm-autoscaler/"));
  EXPECT_EQ(server.received[0].sni, "");  // no SNI for an IP address
}

TEST_F(ClientTest, Ipv6Server) {
  TlsServer server(
      ioc_, server_cert_, [](const Request&) { return reply(http::status::ok, kNamespace); },
      "::1");
  auto c = cluster(server);
  c.host = "::1";
  c.server_name = "::1";
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(server.received.size(), 1u);
  EXPECT_EQ(server.received[0].request[http::field::host], "[::1]:" + server.port());
}

TEST_F(ClientTest, PatchSendsBodyAndContentTypeUnderThePathPrefix) {
  TlsServer server(ioc_, server_cert_,
                   [](const Request& req) { return reply(http::status::ok, req.body()); });
  auto c = cluster(server);
  c.path_prefix = "/k8s/clusters/c-1";
  Client client(c, ioc_.get_executor());
  const std::string patch = R"({"spec":{"replicas":1}})";
  auto r =
      run(client.request(http::verb::patch, "/apis/apps/v1/namespaces/llm/deployments/vllm/scale",
                         patch, "application/merge-patch+json"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body, patch);
  ASSERT_EQ(server.received.size(), 1u);
  const auto& req = server.received[0].request;
  EXPECT_EQ(req.method(), http::verb::patch);
  EXPECT_EQ(req.target(), "/k8s/clusters/c-1/apis/apps/v1/namespaces/llm/deployments/vllm/scale");
  EXPECT_EQ(req[http::field::content_type], "application/merge-patch+json");
}

TEST_F(ClientTest, TlsServerNameIsSentAsSniAndVerified) {
  TlsServer server(ioc_, server_cert_,
                   [](const Request&) { return reply(http::status::ok, kNamespace); });
  auto c = cluster(server);
  c.server_name = "kubernetes.default.svc";
  Client good(c, ioc_.get_executor());
  auto r = run(good.request(http::verb::get, "/api"));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(server.received.size(), 1u);
  EXPECT_EQ(server.received[0].sni, "kubernetes.default.svc");

  c.server_name = "other.example";
  Client wrong(c, ioc_.get_executor());
  auto w = run(wrong.request(http::verb::get, "/api"));
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().code, errc::scaler_error);
  EXPECT_THAT(w.error().message, HasSubstr("TLS handshake"));
  EXPECT_THAT(w.error().message, HasSubstr("hostname mismatch"));
  EXPECT_EQ(server.received.size(), 1u);
}

TEST_F(ClientTest, WrongCaIsAnError) {
  TlsServer server(ioc_, server_cert_,
                   [](const Request&) { return reply(http::status::ok, kNamespace); });
  auto c = cluster(server);
  c.ca_pem = make_cert("other-ca", nullptr).cert_pem;
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message,
              HasSubstr("kubernetes API https://127.0.0.1:" + server.port() + ": TLS handshake"));
  EXPECT_THAT(r.error().message, HasSubstr("unable to get local issuer certificate"));
  EXPECT_TRUE(server.received.empty());

  // insecure-skip-tls-verify accepts it.
  c.insecure_skip_tls_verify = true;
  Client insecure(c, ioc_.get_executor());
  auto i = run(insecure.request(http::verb::get, "/api"));
  ASSERT_TRUE(i) << i.error().message;
  EXPECT_EQ(i->status, 200u);
}

TEST_F(ClientTest, UnusablePemIsAConfigError) {
  ClusterConfig c;
  c.host = "127.0.0.1";
  c.port = "1";
  c.source = "kubeconfig /x, context dev";
  c.ca_pem = "not a certificate";
  EXPECT_THROW(Client(c, ioc_.get_executor()), ConfigError);
  c.ca_pem = ca_.cert_pem;
  c.client_cert_pem = "junk";
  c.client_key_pem = "junk";
  try {
    Client client(c, ioc_.get_executor());
    ADD_FAILURE() << "no ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.problems().size(), 2u);
    EXPECT_THAT(e.what(), HasSubstr("kubeconfig /x, context dev: client certificate"));
  }
}

TEST_F(ClientTest, ClientCertificateIsPresented) {
  TlsServer server(ioc_, server_cert_,
                   [](const Request&) { return reply(http::status::ok, kNamespace); });
  const KeyPair client_ca = make_cert("client-ca", nullptr);
  const KeyPair admin = make_cert("admin", &client_ca);
  server.require_client_cert(client_ca);
  auto c = cluster(server);
  c.token.clear();
  {
    Client no_cert(c, ioc_.get_executor());
    EXPECT_FALSE(run(no_cert.request(http::verb::get, "/api")));
  }
  c.client_cert_pem = admin.cert_pem;
  c.client_key_pem = admin.key_pem;
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(server.client_cert_cn, "admin");
  ASSERT_EQ(server.received.size(), 1u);
  EXPECT_EQ(server.received[0].request.count(http::field::authorization), 0u);
}

TEST_F(ClientTest, UnauthorizedReReadsTheTokenFileAndRetriesOnce) {
  TempDir dir;
  const auto token_file = dir.write("token", "old-token\n");
  TlsServer server(ioc_, server_cert_, [&](const Request& req) {
    if (req[http::field::authorization] == "Bearer new-token") {
      return reply(http::status::ok, kNamespace);
    }
    dir.write("token", "new-token\n");  // the kubelet rotates it meanwhile
    return reply(http::status::unauthorized, kUnauthorized);
  });
  auto c = cluster(server);
  c.token.clear();
  c.token_file = token_file;
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 200u);
  ASSERT_EQ(server.received.size(), 2u);
  EXPECT_EQ(server.received[0].request[http::field::authorization], "Bearer old-token");
  EXPECT_EQ(server.received[1].request[http::field::authorization], "Bearer new-token");
}

TEST_F(ClientTest, UnauthorizedIsRetriedOnlyOnce) {
  TempDir dir;
  const auto token_file = dir.write("token", "bad");
  TlsServer server(ioc_, server_cert_,
                   [](const Request&) { return reply(http::status::unauthorized, kUnauthorized); });
  auto c = cluster(server);
  c.token.clear();
  c.token_file = token_file;
  Client client(c, ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->status, 401u);
  EXPECT_EQ(server.received.size(), 2u);
  EXPECT_EQ(api_failure(http::verb::get, "/api", *r).message,
            "kubernetes API: GET /api: 401 Unauthorized: Unauthorized");

  // A static token cannot change: no retry.
  c.token = "static";
  c.token_file.clear();
  Client static_client(c, ioc_.get_executor());
  auto s = run(static_client.request(http::verb::get, "/api"));
  ASSERT_TRUE(s);
  EXPECT_EQ(s->status, 401u);
  EXPECT_EQ(server.received.size(), 3u);
}

TEST_F(ClientTest, ReconnectsWhenTheServerClosedTheConnection) {
  TlsServer server(ioc_, server_cert_,
                   [](const Request&) { return reply(http::status::ok, kNamespace); });
  server.close_after_each_response();
  Client client(cluster(server), ioc_.get_executor());
  for (int i = 0; i < 3; ++i) {
    auto r = run(client.request(http::verb::get, "/api"));
    ASSERT_TRUE(r) << r.error().message;
  }
  EXPECT_EQ(server.connections, 3);
  EXPECT_EQ(server.received.size(), 3u);
}

TEST_F(ClientTest, RetryAfterAndStatusErrors) {
  TlsServer server(ioc_, server_cert_, [](const Request&) {
    auto r = reply(http::status::too_many_requests,
                   R"({"kind":"Status","apiVersion":"v1","status":"Failure",)"
                   R"("message":"Too many requests, please try again later.",)"
                   R"("reason":"TooManyRequests","code":429})");
    r.set(http::field::retry_after, "3");
    return r;
  });
  Client client(cluster(server), ioc_.get_executor());
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429u);
  EXPECT_EQ(r->retry_after, "3");
  EXPECT_EQ(api_failure(http::verb::get, "/api", *r).message,
            "kubernetes API: GET /api: 429 Too Many Requests: Too many requests, please try again "
            "later.");
}

TEST(ApiFailureTest, NonStatusBodyIsQuotedShortened) {
  Response r;
  r.status = 502;
  r.body = std::string(300, 'x');
  const auto f = api_failure(http::verb::patch, "/x", r);
  EXPECT_EQ(f.code, errc::scaler_error);
  EXPECT_EQ(f.message,
            "kubernetes API: PATCH /x: 502 Bad Gateway: " + std::string(200, 'x') + "...");
  EXPECT_EQ(api_failure(http::verb::get, "/y", Response{503, {}, {}, {}}).message,
            "kubernetes API: GET /y: 503 Service Unavailable");
}

TEST_F(ClientTest, TimeoutAndConnectErrors) {
  TlsServer server(ioc_, server_cert_, [](const Request&) { return std::optional<Reply>{}; });
  Client::Settings s;
  s.request_timeout = std::chrono::milliseconds(200);
  Client client(cluster(server), ioc_.get_executor(), s);
  auto r = run(client.request(http::verb::get, "/api"));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr(": GET /api: timed out"));

  // Nothing listens on the port of a closed acceptor.
  Acceptor closed(ioc_, tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  auto c = cluster(server);
  c.port = std::to_string(closed.local_endpoint().port());
  closed.close();
  Client refused(c, ioc_.get_executor());
  auto e = run(refused.request(http::verb::get, "/api"));
  ASSERT_FALSE(e);
  EXPECT_THAT(e.error().message, HasSubstr("connect: Connection refused"));
}

}  // namespace
}  // namespace va::k8s
