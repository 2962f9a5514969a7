#pragma once
// A small Kubernetes REST client: HTTPS (OpenSSL, verified against the cluster's CA and name),
// bearer tokens from a TokenSource, an exec credential plugin (ExecTokenSource) or a client
// certificate, keep-alive connections reused, and one retry after a 401 with a re-read token or a
// re-run plugin (as client-go). Every HTTP answer is a Response; only transport failures
// (resolve, connect, TLS, timeout) and credential plugin failures are errors. api_failure() turns
// a non-2xx Response into a Failure naming the API error.
//
// Thread-safety: request(), watch() and bearer_token() may be called concurrently from coroutines
// on any thread; each request uses its own connection, idle connections are shared under a
// mutex, the token sources have their own.
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/errors.hpp"
#include "core/net.hpp"
#include "k8s/config.hpp"
#include "k8s/exec_credential.hpp"

namespace boost::asio::ssl {
class context;
}

namespace va::k8s {

struct WatchEvent;  // k8s/watch.hpp

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
    std::size_t watch_max_line = 16 * 1024 * 1024;  // the longest event line accepted
    std::string user_agent = "vllm-autoscaler/" VA_VERSION;
    // An exec credential plugin is killed when it has not answered within this time.
    std::chrono::milliseconds exec_timeout = std::chrono::seconds(30);
    // A plugin's token is used until this long before its expirationTimestamp.
    std::chrono::seconds exec_expiry_margin = std::chrono::seconds(10);
  };

  // Throws ConfigError if the CA, client certificate or key is not usable PEM.
  Client(ClusterConfig cluster, Executor ex);
  Client(ClusterConfig cluster, Executor ex, Settings settings);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // `target` is the path and query ("/api/v1/namespaces/default"); the server URL's path prefix
  // is put in front. A request on a reused connection that the server had closed is sent again
  // on a new one.
  task<outcome<Response>> request(http::verb verb, std::string target, std::string body = {},
                                  std::string content_type = {});

  // Streams a watch: GET `target` (which carries watch=1, resourceVersion, timeoutSeconds and
  // allowWatchBookmarks=true) on a connection of its own, calling on_event for each event as it
  // arrives; on_event returns false to stop watching. The answer is a Response: status 200 with
  // an empty body when the stream ended (the server's timeoutSeconds, on_event stopping it),
  // otherwise the server's error answer with its body (see is_expired_response, api_failure). A
  // Failure for transport errors, a cut stream, a stream not ended `limit` after the request was
  // sent, cancellation (errc::scaler_error) and malformed events (errc::bad_request,
  // errc::body_too_large). `limit` is the target's timeoutSeconds plus a margin: a healthy server
  // always ends the watch first, and a connection gone silent without a reset (a dead apiserver,
  // a partition, a proxy that dropped it) is found right after. A 401 is retried once with a
  // re-read token, as request().
  using WatchCallback = std::function<bool(WatchEvent&&)>;
  task<outcome<Response>> watch(std::string target, std::chrono::milliseconds limit,
                                WatchCallback on_event);

  // The bearer token to send ("" for none): from the exec plugin when the cluster config has one
  // (cached until it expires; concurrent callers share one run of the plugin), else from the
  // TokenSource. A Failure only from the plugin (errc::scaler_unavailable when it exited non-zero
  // or timed out, errc::scaler_error when it cannot run or its answer is unusable).
  task<outcome<std::string>> bearer_token();

  const ClusterConfig& cluster() const { return cluster_; }

 private:
  struct Connection;
  task<outcome<std::unique_ptr<Connection>>> connect();
  task<outcome<Response>> send(http::verb verb, const std::string& target, const std::string& body,
                               const std::string& content_type, const std::string& token);
  task<outcome<Response>> stream_watch(const std::string& target, std::chrono::milliseconds limit,
                                       const WatchCallback& on_event, const std::string& token);
  std::unique_ptr<Connection> take_idle();
  void put_idle(std::unique_ptr<Connection> c);
  std::string describe(http::verb verb, std::string_view target) const;
  // The server answered 401 to `token`: true if asking again may give another one.
  bool token_rejected(const std::string& token);

  ClusterConfig cluster_;
  Executor ex_;
  Settings settings_;
  TokenSource tokens_;
  std::unique_ptr<ExecTokenSource> exec_;  // set when cluster_.exec is
  std::unique_ptr<net::ssl::context> ssl_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;
};

}  // namespace va::k8s
