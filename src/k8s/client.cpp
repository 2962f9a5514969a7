#include "k8s/client.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json.hpp>

#include "core/config_error.hpp"
#include "core/connect.hpp"
#include "k8s/watch.hpp"

namespace va::k8s {
namespace {

namespace ssl = net::ssl;
using Stream = beast::ssl_stream<TcpStream>;

bool is_ip(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

std::unique_ptr<ssl::context> make_context(const ClusterConfig& c) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  std::vector<std::string> problems;
  error_code ec;
  if (c.insecure_skip_tls_verify) {
    ctx->set_verify_mode(ssl::verify_none);
  } else {
    ctx->set_verify_mode(ssl::verify_peer);
    if (!c.ca_pem.empty()) {
      ctx->add_certificate_authority(net::buffer(c.ca_pem), ec);
      if (ec) {
        problems.push_back(c.source + ": certificate authority: not a usable PEM certificate (" +
                           ec.message() + ")");
      }
    } else {
      ctx->set_default_verify_paths(ec);
      if (ec) {
        problems.push_back(c.source + ": the system's CA certificates: " + ec.message());
      }
    }
  }
  if (!c.client_cert_pem.empty()) {
    ctx->use_certificate_chain(net::buffer(c.client_cert_pem), ec);
    if (ec) {
      problems.push_back(c.source + ": client certificate: not a usable PEM certificate (" +
                         ec.message() + ")");
    }
    ctx->use_private_key(net::buffer(c.client_key_pem), ssl::context::pem, ec);
    if (ec) {
      problems.push_back(c.source + ": client key: not a usable PEM private key (" + ec.message() +
                         ")");
    }
  }
  if (!problems.empty()) {
    throw ConfigError(std::move(problems));
  }
  return ctx;
}

// An idle keep-alive connection is reusable if the peer has not closed it (FIN or TLS alert).
bool still_open(Stream& s) {
  char c;
  const auto n =
      ::recv(beast::get_lowest_layer(s).socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

// The errors a reused keep-alive connection shows when the server closed it while idle.
bool stale_connection(const error_code& ec) {
  return ec == http::error::end_of_stream || ec == net::error::eof ||
         ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == ssl::error::stream_truncated;
}

}  // namespace

struct Client::Connection {
  explicit Connection(Executor ex, ssl::context& ctx) : stream(ex, ctx) {}
  Stream stream;
  beast::flat_buffer buffer;
  Clock::time_point idle_since{};
  bool reused = false;
};

Failure api_failure(http::verb verb, std::string_view target, const Response& r) {
  std::string msg = "kubernetes API: " + std::string(http::to_string(verb)) + " " +
                    std::string(target) + ": " + std::to_string(r.status);
  if (const auto reason = http::obsolete_reason(http::int_to_status(r.status)); !reason.empty()) {
    msg += " " + std::string(reason);
  }
  error_code ec;
  const auto v = boost::json::parse(r.body, ec);
  const auto* obj = !ec ? v.if_object() : nullptr;
  const auto* kind = obj ? obj->if_contains("kind") : nullptr;
  const auto* message = obj ? obj->if_contains("message") : nullptr;
  if (kind && kind->is_string() && kind->get_string() == "Status" && message &&
      message->is_string()) {
    msg += ": " + std::string(message->get_string());
  } else if (!r.body.empty()) {
    constexpr std::size_t kMax = 200;
    msg += ": " + r.body.substr(0, kMax) + (r.body.size() > kMax ? "..." : "");
  }
  return Failure{errc::scaler_error, std::move(msg)};
}

Client::Client(ClusterConfig cluster, Executor ex) : Client(std::move(cluster), ex, Settings{}) {}

Client::Client(ClusterConfig cluster, Executor ex, Settings settings)
    : cluster_(std::move(cluster)),
      ex_(ex),
      settings_(std::move(settings)),
      tokens_(TokenSource::Settings{cluster_.token, cluster_.token_file}),
      ssl_(make_context(cluster_)) {
  if (cluster_.exec) {
    exec_ = std::make_unique<ExecTokenSource>(
        ExecTokenSource::Settings{.exec = *cluster_.exec,
                                  .exec_info = exec_info(*cluster_.exec, cluster_),
                                  .source = cluster_.source,
                                  .timeout = settings_.exec_timeout,
                                  .expiry_margin = settings_.exec_expiry_margin},
        ex_);
  }
}

Client::~Client() = default;

std::string Client::describe(http::verb verb, std::string_view target) const {
  return "kubernetes API https://" + cluster_.host_header() + ": " +
         std::string(http::to_string(verb)) + " " + std::string(target);
}

std::unique_ptr<Client::Connection> Client::take_idle() {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  while (!idle_.empty()) {
    auto c = std::move(idle_.back());
    idle_.pop_back();
    if (now - c->idle_since < settings_.max_idle && still_open(c->stream)) {
      c->reused = true;
      return c;
    }
  }
  return nullptr;
}

void Client::put_idle(std::unique_ptr<Connection> c) {
  std::lock_guard lock(mu_);
  c->idle_since = Clock::now();
  if (idle_.size() < settings_.max_idle_connections) {
    idle_.push_back(std::move(c));
  }
}

task<outcome<std::unique_ptr<Client::Connection>>> Client::connect() {
  auto c = std::make_unique<Connection>(ex_, *ssl_);
  auto& tcp_stream = beast::get_lowest_layer(c->stream);
  tcp_stream.expires_after(settings_.connect_timeout);
  const std::string where = "kubernetes API https://" + cluster_.host_header();
  std::string step;
  if (const auto ec = co_await connect_tcp(tcp_stream, cluster_.host, cluster_.port, &step)) {
    co_return Failure{errc::scaler_error, where + ": " + step + ": " + ec.message()};
  }

  SSL* handle = c->stream.native_handle();
  const bool ip = is_ip(cluster_.server_name);
  // SNI carries names only (RFC 6066); an IP address is checked against the IP SANs.
  if (!ip && !cluster_.server_name.empty()) {
    SSL_set_tlsext_host_name(handle, cluster_.server_name.c_str());
  }
  if (!cluster_.insecure_skip_tls_verify) {
    X509_VERIFY_PARAM* param = SSL_get0_param(handle);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, cluster_.server_name.c_str())
                      : X509_VERIFY_PARAM_set1_host(param, cluster_.server_name.c_str(), 0);
    if (ok != 1) {
      co_return Failure{errc::scaler_error,
                        where + ": cannot verify against name \"" + cluster_.server_name + "\""};
    }
  }
  auto [ec] = co_await c->stream.async_handshake(ssl::stream_base::client, use_nothrow_task);
  if (ec) {
    std::string msg = where + ": TLS handshake: " + ec.message();
    if (const long v = SSL_get_verify_result(handle); v != X509_V_OK) {
      msg += " (" + std::string(X509_verify_cert_error_string(v)) + "; verified as \"" +
             cluster_.server_name + "\")";
    }
    co_return Failure{errc::scaler_error, std::move(msg)};
  }
  tcp_stream.expires_never();
  co_return std::move(c);
}

task<outcome<Response>> Client::send(http::verb verb, const std::string& target,
                                     const std::string& body, const std::string& content_type,
                                     const std::string& token) {
  http::request<http::string_body> req{verb, cluster_.path_prefix + target, 11};
  req.set(http::field::host, cluster_.host_header());
  req.set(http::field::user_agent, settings_.user_agent);
  req.set(http::field::accept, "application/json");
  if (!token.empty()) {
    req.set(http::field::authorization, "Bearer " + token);
  }
  if (!content_type.empty()) {
    req.set(http::field::content_type, content_type);
  }
  req.body() = body;
  req.keep_alive(true);
  req.prepare_payload();

  // A reused connection may have been closed by the server meanwhile: then once more on a new one.
  for (int attempt = 0;; ++attempt) {
    auto c = attempt == 0 ? take_idle() : nullptr;
    if (!c) {
      auto fresh = co_await connect();
      if (!fresh) {
        co_return fresh.error();
      }
      c = std::move(*fresh);
    }
    auto& tcp_stream = beast::get_lowest_layer(c->stream);
    tcp_stream.expires_after(settings_.request_timeout);
    auto [write_error, wn] = co_await http::async_write(c->stream, req, use_nothrow);
    if (write_error && c->reused && stale_connection(write_error)) {
      continue;
    }
    if (write_error) {
      co_return Failure{errc::scaler_error,
                        describe(verb, target) + ": write: " + write_error.message()};
    }
    http::response_parser<http::string_body> parser;
    parser.body_limit(settings_.body_limit);
    auto [read_error, rn] = co_await http::async_read(c->stream, c->buffer, parser, use_nothrow);
    if (read_error && c->reused && rn == 0 && stale_connection(read_error)) {
      continue;
    }
    if (read_error) {
      co_return Failure{errc::scaler_error, describe(verb, target) + ": " +
                                                (read_error == beast::error::timeout
                                                     ? std::string("timed out")
                                                     : "read: " + read_error.message())};
    }
    tcp_stream.expires_never();
    auto res = parser.release();
    Response out{res.result_int(), std::move(res.body()),
                 std::string(res[http::field::retry_after]),
                 std::string(res[http::field::content_type])};
    if (res.keep_alive()) {
      put_idle(std::move(c));
    }
    co_return out;
  }
}

task<outcome<std::string>> Client::bearer_token() {
  if (exec_) {
    co_return co_await exec_->token();
  }
  co_return tokens_.token();
}

bool Client::token_rejected(const std::string& token) {
  if (exec_) {
    exec_->invalidate(token);
    return true;
  }
  return tokens_.invalidate();
}

task<outcome<Response>> Client::request(http::verb verb, std::string target, std::string body,
                                        std::string content_type) {
  auto token = co_await bearer_token();
  if (!token) {
    co_return token.error();
  }
  auto r = co_await send(verb, target, body, content_type, *token);
  // As client-go: after a 401 the token file is re-read (it may have been rotated), or the exec
  // plugin run again, and the request sent once more.
  if (r && r->status == 401 && token_rejected(*token)) {
    token = co_await bearer_token();
    if (!token) {
      co_return token.error();
    }
    r = co_await send(verb, target, body, content_type, *token);
  }
  co_return r;
}

task<outcome<Response>> Client::stream_watch(const std::string& target,
                                             std::chrono::milliseconds limit,
                                             const WatchCallback& on_event,
                                             const std::string& token) {
  http::request<http::empty_body> req{http::verb::get, cluster_.path_prefix + target, 11};
  req.set(http::field::host, cluster_.host_header());
  req.set(http::field::user_agent, settings_.user_agent);
  req.set(http::field::accept, "application/json");
  if (!token.empty()) {
    req.set(http::field::authorization, "Bearer " + token);
  }
  req.keep_alive(true);

  // A connection of its own, closed (not reused) when the watch ends.
  auto fresh = co_await connect();
  if (!fresh) {
    co_return fresh.error();
  }
  auto c = std::move(*fresh);
  auto& tcp_stream = beast::get_lowest_layer(c->stream);
  const auto where = [&] { return describe(http::verb::get, target); };
  bool streaming = false;
  const auto transport = [&](const error_code& ec) -> Failure {
    if (ec == beast::error::timeout && streaming) {
      return {errc::scaler_error, where() + ": timed out: the watch had not ended " +
                                      std::to_string(limit.count()) +
                                      " ms after it was sent; the connection is taken as dead"};
    }
    if (ec == beast::error::timeout) {
      return {errc::scaler_error, where() + ": timed out"};
    }
    if (ec == net::error::operation_aborted) {
      return {errc::scaler_error, where() + ": cancelled"};
    }
    return {errc::scaler_error, where() + ": read: " + ec.message()};
  };

  // The server's timeoutSeconds runs from about now: the whole stream must end before `limit`.
  const auto deadline = Clock::now() + limit;
  tcp_stream.expires_after(settings_.request_timeout);
  auto [write_error, wn] = co_await http::async_write(c->stream, req, use_nothrow);
  if (write_error) {
    co_return Failure{errc::scaler_error, where() + ": write: " + write_error.message()};
  }
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);  // a watch has no end; the decoder bounds each line
  auto [head_error, hn] =
      co_await http::async_read_header(c->stream, c->buffer, parser, use_nothrow);
  if (head_error) {
    co_return transport(head_error);
  }
  const auto& head = parser.get();
  Response out{head.result_int(),
               {},
               std::string(head[http::field::retry_after]),
               std::string(head[http::field::content_type])};
  streaming = out.status == 200;

  WatchDecoder decoder(settings_.watch_max_line);
  std::vector<char> chunk(64 * 1024);
  while (!parser.is_done()) {
    auto& body = parser.get().body();
    body.data = chunk.data();
    body.size = chunk.size();
    if (streaming) {
      tcp_stream.expires_at(deadline);
    } else {
      tcp_stream.expires_after(settings_.request_timeout);
    }
    auto [read_error, rn] =
        co_await http::async_read_some(c->stream, c->buffer, parser, use_nothrow);
    if (read_error && read_error != http::error::need_buffer) {
      co_return transport(read_error);
    }
    const std::string_view got(chunk.data(), chunk.size() - parser.get().body().size);
    if (!streaming) {
      if (out.body.size() + got.size() > settings_.body_limit) {
        co_return Failure{errc::scaler_error, where() + ": " + std::to_string(out.status) +
                                                  " answer longer than " +
                                                  std::to_string(settings_.body_limit) + " bytes"};
      }
      out.body.append(got);
      continue;
    }
    decoder.feed(got);
    while (auto event = decoder.next()) {
      if (!*event) {
        auto f = event->error();
        f.message = where() + ": " + f.message;
        co_return f;
      }
      if (!on_event(std::move(**event))) {
        co_return out;  // the caller stopped watching
      }
    }
  }
  if (streaming && decoder.has_partial_line()) {
    co_return Failure{errc::bad_request,
                      where() + ": kubernetes watch: the stream ended inside an event"};
  }
  co_return out;
}

task<outcome<Response>> Client::watch(std::string target, std::chrono::milliseconds limit,
                                      WatchCallback on_event) {
  auto token = co_await bearer_token();
  if (!token) {
    co_return token.error();
  }
  auto r = co_await stream_watch(target, limit, on_event, *token);
  if (r && r->status == 401 && token_rejected(*token)) {
    token = co_await bearer_token();
    if (!token) {
      co_return token.error();
    }
    r = co_await stream_watch(target, limit, on_event, *token);
  }
  co_return r;
}

}  // namespace va::k8s
