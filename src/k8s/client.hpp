#pragma once
// A small Kubernetes REST client: HTTPS (OpenSSL, verified against the cluster's CA and name),
// bearer tokens from a TokenSource or a client certificate, keep-alive connections reused, and
// one retry after a 401 with a re-read token (as client-go). Every HTTP answer is a Response;
// only transport failures (resolve, connect, TLS, timeout) are errors. api_failure() turns a
// non-2xx Response into a Failure naming the API error.
//
// Thread-safety: request() may be called concurrently from coroutines on any thread; each
// request uses its own connection, idle connections are shared under a mutex.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/errors.hpp"
#include "core/net.hpp"
#include "k8s/config.hpp"

namespace boost::asio::ssl {
class context;
}

namespace va::k8s {

struct Response {
  unsigned status = 0;
  std::string body;
  std::string retry_after;   // the Retry-After header, if any (429, 503)
  std::string content_type;  // the Content-Type header
};

// "kubernetes API: GET /x: 409 Conflict: <Status.message>" (the body itself, shortened, when it is
// not a Status object). errc::scaler_error.
Failure api_failure(http::verb verb, std::string_view target, const Response& r);

class Client {
 public:
  struct Settings {
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(5);   // TCP + TLS handshake
    std::chrono::milliseconds request_timeout = std::chrono::seconds(30);  // write + read
    std::size_t max_idle_connections = 4;
    std::chrono::milliseconds max_idle = std::chrono::seconds(60);
    std::uint64_t body_limit = 64 * 1024 * 1024;
    std::string user_agent = "vllm-autoscaler/" VA_VERSION;
  };

  // Throws config::ConfigError if the CA, client certificate or key is not usable PEM.
  Client(ClusterConfig cluster, net::any_io_executor ex);
  Client(ClusterConfig cluster, net::any_io_executor ex, Settings settings);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // `target` is the path and query ("/api/v1/namespaces/default"); the server URL's path prefix
  // is put in front. A request on a reused connection that the server had closed is sent again
  // on a new one.
  task<outcome<Response>> request(http::verb verb, std::string target, std::string body = {},
                                  std::string content_type = {});

  const ClusterConfig& cluster() const { return cluster_; }

 private:
  struct Connection;
  task<outcome<std::unique_ptr<Connection>>> connect();
  task<outcome<Response>> send(http::verb verb, const std::string& target, const std::string& body,
                               const std::string& content_type, const std::string& token);
  std::unique_ptr<Connection> take_idle();
  void put_idle(std::unique_ptr<Connection> c);
  std::string describe(http::verb verb, std::string_view target) const;

  ClusterConfig cluster_;
  net::any_io_executor ex_;
  Settings settings_;
  TokenSource tokens_;
  std::unique_ptr<net::ssl::context> ssl_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;
};

}  // namespace va::k8s
