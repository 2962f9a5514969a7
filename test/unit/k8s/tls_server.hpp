#pragma once
#include <gtest/gtest.h>

#include "k8s/client.hpp"
// Test PKI made with OpenSSL at test time, and an in-process HTTPS server (Beast) on
// 127.0.0.1:0 that records what it receives and answers through a handler (or a streamer that
// writes the raw response itself, for chunked watch streams).
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/net.hpp"

namespace va::k8s::testing {

// Runs `ioc` (restarted) until `done` or for at most `limit`: the loop of the tests that talk to
// a TlsServer in real time.
inline void run_until(net::io_context& ioc, const std::function<bool()>& done,
                      std::chrono::milliseconds limit) {
  ioc.restart();
  const auto deadline = Clock::now() + limit;
  while (!done() && Clock::now() < deadline) {
    ioc.run_for(std::chrono::milliseconds(5));
  }
}

struct KeyPair {
  std::string cert_pem;
  std::string key_pem;
  std::shared_ptr<X509> cert;
  std::shared_ptr<EVP_PKEY> key;
};

// A P-256 certificate for `cn`: self-signed CA when issuer is null, else a leaf signed by it with
// the given subjectAltName ("IP:127.0.0.1,DNS:kubernetes").
inline KeyPair make_cert(const std::string& cn, const KeyPair* issuer,
                         const std::string& san = {}) {
  KeyPair out;
  out.key.reset(EVP_EC_gen("P-256"), EVP_PKEY_free);
  out.cert.reset(X509_new(), X509_free);
  X509* x = out.cert.get();
  static long serial = 1;
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, out.key.get());
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer->cert.get()) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer ? issuer->cert.get() : x, x, nullptr, nullptr, 0);
  auto add = [&](int nid, const std::string& value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (ext == nullptr) {
      throw std::runtime_error("X509V3_EXT_conf_nid failed for " + value);
    }
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  };
  if (issuer == nullptr) {
    add(NID_basic_constraints, "critical,CA:TRUE");
    add(NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add(NID_basic_constraints, "critical,CA:FALSE");
    if (!san.empty()) {
      add(NID_subject_alt_name, san);
    }
  }
  X509_sign(x, issuer ? issuer->key.get() : out.key.get(), EVP_sha256());

  auto pem = [](auto write) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), BIO_free);
    write(bio.get());
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
  };
  out.cert_pem = pem([&](BIO* b) { PEM_write_bio_X509(b, x); });
  out.key_pem = pem([&](BIO* b) {
    PEM_write_bio_PrivateKey(b, out.key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  });
  return out;
}

using Request = http::request<http::string_body>;
using Reply = http::response<http::string_body>;

struct Received {
  Request request;
  std::string sni;
  int connection = 0;  // 1 for the first connection accepted, 2 for the second, ...
};

class TlsServer {
 public:
  // nullopt: never answer (the client must time out).
  using Handler = std::function<std::optional<Reply>(const Request&)>;

  TlsServer(net::io_context& ioc, const KeyPair& server, Handler handler,
            const std::string& address = "127.0.0.1")
      : ctx_(net::ssl::context::tls_server),
        acceptor_(ioc, tcp::endpoint(net::ip::make_address(address), 0)),
        handler_(std::move(handler)) {
    ctx_.use_certificate_chain(net::buffer(server.cert_pem));
    ctx_.use_private_key(net::buffer(server.key_pem), net::ssl::context::pem);
    net::co_spawn(ioc, accept_loop(), net::detached);
  }

  // The client must present a certificate signed by `ca`.
  void require_client_cert(const KeyPair& ca) {
    ctx_.add_certificate_authority(net::buffer(ca.cert_pem));
    ctx_.set_verify_mode(net::ssl::verify_peer | net::ssl::verify_fail_if_no_peer_cert);
  }
  // Close each connection after one response, without saying so (a server-side idle timeout).
  void close_after_each_response() { close_after_each_ = true; }

  using Stream = beast::ssl_stream<TcpStream>;
  // Answers every request (or those `which` picks) with `streamer` instead of the handler: it
  // writes the raw response itself (see chunk()); the connection is closed when it returns.
  using Streamer = std::function<task<void>(const Request&, Stream&)>;
  void stream_with(Streamer streamer, std::function<bool(const Request&)> which = {}) {
    streamer_ = std::move(streamer);
    stream_which_ = std::move(which);
  }

  std::string port() const { return std::to_string(acceptor_.local_endpoint().port()); }
  std::vector<Received> received;
  int connections = 0;
  int handshake_failures = 0;
  std::string client_cert_cn;

 private:
  task<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_.async_accept(use_nothrow);
      if (ec) {
        co_return;
      }
      net::co_spawn(acceptor_.get_executor(), session(std::move(socket)), net::detached);
    }
  }

  task<void> session(Socket socket) {
    // Asio's TLS stream writes a response's header and body as two records: without this, Nagle
    // holds the second until the client's delayed ACK (40 ms per response).
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    beast::ssl_stream<TcpStream> stream(std::move(socket), ctx_);
    const int id = ++connections;
    auto [hec] = co_await stream.async_handshake(net::ssl::stream_base::server, use_nothrow_task);
    if (hec) {
      ++handshake_failures;
      co_return;
    }
    const char* sni = SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name);
    if (X509* peer = SSL_get1_peer_certificate(stream.native_handle())) {
      char cn[256] = {};
      X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
      client_cert_cn = cn;
      X509_free(peer);
    }
    beast::flat_buffer buffer;
    for (;;) {
      Request req;
      auto [rec, rn] = co_await http::async_read(stream, buffer, req, use_nothrow);
      if (rec) {
        co_return;
      }
      received.push_back(Received{req, sni ? sni : "", id});
      if (streamer_ && (!stream_which_ || stream_which_(req))) {
        co_await streamer_(req, stream);
        beast::get_lowest_layer(stream).socket().close();
        co_return;
      }
      auto reply = handler_(req);
      if (!reply) {
        Timer forever(stream.get_executor(), std::chrono::hours(1));
        co_await forever.async_wait(use_nothrow);
        co_return;
      }
      reply->version(11);
      reply->keep_alive(req.keep_alive());
      reply->prepare_payload();
      auto [wec, wn] = co_await http::async_write(stream, *reply, use_nothrow);
      if (wec || !reply->keep_alive() || close_after_each_) {
        beast::get_lowest_layer(stream).socket().close();
        co_return;
      }
    }
  }

  net::ssl::context ctx_;
  Acceptor acceptor_;
  Handler handler_;
  Streamer streamer_;
  std::function<bool(const Request&)> stream_which_;
  bool close_after_each_ = false;
};

// Bodies the tests answer with: a GET of the namespace, and a 401 as the apiserver words it.
constexpr const char* kNamespace =
    R"({"kind":"Namespace","apiVersion":"v1","metadata":{"name":"default"}})";
constexpr const char* kUnauthorized =
    R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
    R"("message":"Unauthorized","reason":"Unauthorized","code":401})";

inline Reply reply(http::status status, std::string body,
                   std::string content_type = "application/json") {
  Reply r{status, 11};
  r.set(http::field::content_type, content_type);
  r.body() = std::move(body);
  return r;
}

// One HTTP/1.1 chunk carrying `data` (empty: the last chunk).
inline std::string chunk(std::string_view data) {
  if (data.empty()) {
    return "0\r\n\r\n";
  }
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + std::string(data) + "\r\n";
}

// A fixture for client tests against TlsServer: a test CA, a server certificate for the loopback
// names, a ClusterConfig trusting it, and run() to drive one request on ioc_.
class TlsApiTest : public ::testing::Test {
 protected:
  TlsApiTest()
      : ca_(make_cert("test-ca", nullptr)),
        server_cert_(make_cert("kube-apiserver", &ca_,
                               "IP:127.0.0.1,IP:::1,DNS:kubernetes.default.svc,DNS:localhost")) {}

  ClusterConfig cluster(const TlsServer& server) const {
    ClusterConfig c;
    c.host = "127.0.0.1";
    c.port = server.port();
    c.server_name = "127.0.0.1";
    c.ca_pem = ca_.cert_pem;
    c.token = "static-token";
    c.source = "test";
    return c;
  }

  // Runs `t` to completion on ioc_ (at most 10 s).
  outcome<Response> run(task<outcome<Response>> t) {
    std::optional<outcome<Response>> out;
    net::co_spawn(ioc_, std::move(t), [&](std::exception_ptr e, outcome<Response> r) {
      if (e) {
        std::rethrow_exception(e);
      }
      out = std::move(r);
      ioc_.stop();
    });
    ioc_.restart();
    ioc_.run_for(std::chrono::seconds(10));
    if (!out) {
      ADD_FAILURE() << "request did not complete";
      return Failure{errc::scaler_error, "did not complete"};
    }
    return std::move(*out);
  }

  net::io_context ioc_;
  KeyPair ca_;
  KeyPair server_cert_;
};

}  // namespace va::k8s::testing
