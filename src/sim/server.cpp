#include "sim/server.hpp"

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <initializer_list>
#include <optional>
#include <utility>

#include "core/log.hpp"
#include "core/spawn.hpp"
#include "sim/text.hpp"

namespace va::sim {

namespace {

constexpr std::size_t kBodyLimit = 64 * 1024 * 1024;
constexpr std::size_t kHeaderLimit = 64 * 1024;

struct Route {
  std::string_view path;
  std::initializer_list<http::verb> methods;
};

const Route kRoutes[] = {
    {"/health", {http::verb::get}},          {"/ping", {http::verb::get, http::verb::post}},
    {"/version", {http::verb::get}},         {"/metrics", {http::verb::get}},
    {"/v1/models", {http::verb::get}},       {"/v1/chat/completions", {http::verb::post}},
    {"/v1/completions", {http::verb::post}}, {"/sim/last-request", {http::verb::get}},
};

// vLLM's development routes, served only with VLLM_SERVER_DEV_MODE=1 (sleep.cpp).
const Route kDevRoutes[] = {
    {"/sleep", {http::verb::post}},
    {"/wake_up", {http::verb::post}},
    {"/is_sleeping", {http::verb::get}},
    {"/collective_rpc", {http::verb::post}},
};

const Route* find_route(std::string_view path, bool dev_mode) {
  for (const auto& r : kRoutes) {
    if (r.path == path) {
      return &r;
    }
  }
  for (const auto& r : kDevRoutes) {
    if (dev_mode && r.path == path) {
      return &r;
    }
  }
  return nullptr;
}

bool is_dev_route(const Route* route) {
  return route >= std::begin(kDevRoutes) && route < std::end(kDevRoutes);
}

Response method_not_allowed(const Request& req, const Route& route) {
  auto res = make_json(req, http::status::method_not_allowed, R"({"detail":"Method Not Allowed"})");
  std::string allow;
  for (auto m : route.methods) {
    allow += (allow.empty() ? "" : ", ") + std::string(http::to_string(m));
  }
  res.set(http::field::allow, allow);
  return res;
}

task<void> reply_bad_http(TcpStream& stream) {
  Response res{http::status::bad_request, 11};
  res.set(http::field::content_type, "text/plain; charset=utf-8");
  res.set(http::field::connection, "close");
  res.body() = "Invalid HTTP request received.";
  res.prepare_payload();
  co_await http::async_write(stream, res, use_nothrow);
}

// Reads the next request of a connection. nullopt: the connection is done (closed, idle too
// long, or not HTTP, which has then been answered with a 400).
task<std::optional<Request>> read_request(TcpStream& stream, beast::flat_buffer& buffer,
                                          std::chrono::nanoseconds keep_alive_timeout, bool first) {
  http::request_parser<http::string_body> parser;
  parser.header_limit(kHeaderLimit);
  parser.body_limit(kBodyLimit);
  // uvicorn closes idle keep-alive connections; the first request has no such limit.
  if (first) {
    stream.expires_never();
  } else {
    stream.expires_after(keep_alive_timeout);
  }
  auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_nothrow);
  stream.expires_never();
  if (ec) {
    if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
        ec != net::error::connection_reset && ec != net::error::eof) {
      co_await reply_bad_http(stream);
    }
    co_return std::nullopt;
  }
  if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
    http::response<http::empty_body> cont{http::status::continue_, 11};
    auto [write_error, wn] = co_await http::async_write(stream, cont, use_nothrow);
    if (write_error) {
      co_return std::nullopt;
    }
  }
  if (!parser.is_done()) {
    auto [body_error, bn] = co_await http::async_read(stream, buffer, parser, use_nothrow);
    if (body_error) {
      if (body_error != http::error::end_of_stream && body_error != net::error::connection_reset &&
          body_error != net::error::eof) {
        co_await reply_bad_http(stream);
      }
      co_return std::nullopt;
    }
  }
  co_return parser.release();
}

std::string fmt_number(double v) {
  // Python's prometheus_client prints floats ("3.0"); so do we.
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

}  // namespace

task<void> sleep_for(std::chrono::nanoseconds d) {
  if (d <= std::chrono::nanoseconds::zero()) {
    co_return;
  }
  Timer timer(co_await net::this_coro::executor, d);
  co_await timer.async_wait(use_nothrow);
}

Response make_json(const Request& req, http::status status, std::string body) {
  Response res{status, req.version()};
  res.set(http::field::content_type, "application/json");
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  return res;
}

task<bool> send(TcpStream& stream, Response res) {
  res.prepare_payload();
  auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
  co_return !ec && res.keep_alive();
}

int Server::run() {
  net::signal_set signals(ioc_, SIGINT, SIGTERM);
  Timer drain(ioc_);
  signals.async_wait([this, &signals, &drain](error_code ec, int sig) {
    if (ec) {
      return;
    }
    log::info("Shutting down", {{"signal", sig}});
    if (settings_.shutdown_delay <= std::chrono::nanoseconds::zero()) {
      ioc_.stop();
      return;
    }
    // Refuse new connections now; in-flight requests go on until the delay has passed. A
    // second signal ends the wait.
    error_code ignored;
    acceptor_.close(ignored);
    drain.expires_after(settings_.shutdown_delay);
    drain.async_wait([this](error_code) { ioc_.stop(); });
    signals.async_wait([this](error_code signal_error, int) {
      if (!signal_error) {
        ioc_.stop();
      }
    });
  });
  if (settings_.dev_mode) {
    log::warn(
        "SECURITY WARNING: Development endpoints are enabled! This should not be used "
        "in production!");
  }
  spawn(ioc_.get_executor(), start(), "sim start");
  ioc_.run();
  return exit_code_;
}

// Loads the "model" (waits), then listens. Like vLLM, the socket is bound early but listen()
// only runs once loading is done, so connects are refused meanwhile.
task<void> Server::start() {
  if (!bind_acceptor()) {
    co_return;
  }
  log::info(
      "vllm-sim loading model",
      {{"model", settings_.model},
       {"startup_delay_ms",
        std::chrono::duration_cast<std::chrono::milliseconds>(settings_.startup_delay).count()}});
  co_await sleep_for(settings_.startup_delay);
  if (!acceptor_.is_open()) {
    co_return;  // stopped (--shutdown-delay) while still loading
  }
  if (settings_.fail_at_start) {
    fail_start(*settings_.fail_at_start, settings_.fail_message);
    co_return;
  }
  if (!claim_model_memory()) {
    co_return;
  }
  error_code ec;
  acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    fail_start(1, "cannot listen: " + ec.message());
    co_return;
  }
  const auto port = acceptor_.local_endpoint().port();
  log::info("Starting vLLM API server on http://" + settings_.host + ":" + std::to_string(port));
  log::info("Application startup complete.");
  co_await accept_loop();
}

// Opens and binds the acceptor (no listen yet); on failure reports it and returns false.
bool Server::bind_acceptor() {
  error_code ec;
  const auto address = net::ip::make_address(settings_.host, ec);
  if (ec) {
    fail_start(1, "invalid --host " + settings_.host + ": " + ec.message());
    return false;
  }
  const tcp::endpoint endpoint(address, settings_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor_.set_option(net::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor_.bind(endpoint, ec);
  }
  if (ec) {
    fail_start(1, "cannot bind " + settings_.host + ":" + std::to_string(settings_.port) + ": " +
                      ec.message());
    return false;
  }
  return true;
}

task<void> Server::accept_loop() {
  for (;;) {
    auto [accept_error, socket] = co_await acceptor_.async_accept(use_nothrow);
    if (accept_error == net::error::operation_aborted) {
      co_return;
    }
    if (accept_error) {
      // Out of descriptors and the like: back off instead of spinning.
      log::warn("accept failed", {{"error", accept_error.message()}});
      co_await sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    ++connections_total_;
    error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    spawn(ioc_.get_executor(), session(std::move(socket)), "sim session");
  }
}

void Server::fail_start(int status, const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  exit_code_ = status;
  ioc_.stop();
}

task<void> Server::session(Socket socket) {
  std::string peer;
  {
    error_code ec;
    const auto ep = socket.remote_endpoint(ec);
    peer = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  TcpStream stream(std::move(socket));
  beast::flat_buffer buffer;
  for (bool first = true;; first = false) {
    auto req = co_await read_request(stream, buffer, settings_.keep_alive_timeout, first);
    if (!req || !co_await handle(stream, *req, peer)) {
      break;
    }
  }
  error_code ec;
  stream.socket().shutdown(Socket::shutdown_send, ec);
  stream.close();
}

// Routes one request and writes its response; returns whether the connection stays open.
task<bool> Server::handle(TcpStream& stream, Request& req, const std::string& peer) {
  ++requests_total_;
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (!path.starts_with("/sim/") && path != "/health" && path != "/metrics") {
    record_last_request(req);
  }
  if (!settings_.api_keys.empty() && path.starts_with("/v1") &&
      req.method() != http::verb::options && !authorized(req)) {
    access_log(peer, req, 401);
    co_return co_await send(
        stream, make_json(req, http::status::unauthorized, R"({"error":"Unauthorized"})"));
  }
  const Route* route = find_route(path, settings_.dev_mode);
  if (route == nullptr) {
    access_log(peer, req, 404);
    co_return co_await send(stream,
                            make_json(req, http::status::not_found, R"({"detail":"Not Found"})"));
  }
  if (std::find(route->methods.begin(), route->methods.end(), req.method()) ==
      route->methods.end()) {
    auto res = method_not_allowed(req, *route);
    access_log(peer, req, 405);
    co_return co_await send(stream, std::move(res));
  }
  if (is_dev_route(route)) {
    co_return co_await sleep_route(stream, req, peer, path);
  }
  if (path == "/v1/chat/completions" || path == "/v1/completions") {
    co_return co_await complete(stream, req, peer, path == "/v1/chat/completions");
  }
  auto res = answer(req, path);
  if (path != "/health" && path != "/metrics" && path != "/ping") {
    access_log(peer, req, 200);
  }
  co_return co_await send(stream, std::move(res));
}

// The 200 answer of a routed path other than the completions.
Response Server::answer(const Request& req, std::string_view path) const {
  Response res{http::status::ok, req.version()};
  res.keep_alive(req.keep_alive());
  if (path == "/health" || path == "/ping") {
    // vLLM answers an empty 200.
  } else if (path == "/version") {
    res = make_json(req, http::status::ok, R"({"version":"0.0.0-sim"})");
  } else if (path == "/metrics") {
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.body() = metrics_text();
  } else if (path == "/v1/models") {
    json::object model{{"id", settings_.model},         {"object", "model"},
                       {"created", unix_seconds()},     {"owned_by", "vllm"},
                       {"root", settings_.model},       {"parent", nullptr},
                       {"max_model_len", kMaxModelLen}, {"permission", json::array{}}};
    res = make_json(
        req, http::status::ok,
        json::serialize(json::object{{"object", "list"}, {"data", json::array{std::move(model)}}}));
  } else if (path == "/sim/last-request") {
    res = make_json(req, http::status::ok,
                    last_request_.is_null() ? "{}" : json::serialize(last_request_));
  }
  return res;
}

void Server::access_log(const std::string& peer, const Request& req, unsigned status) const {
  if (!settings_.access_log) {
    return;
  }
  log::info(peer + " - \"" + std::string(req.method_string()) + " " + std::string(req.target()) +
            " HTTP/" + std::to_string(req.version() / 10) + "." +
            std::to_string(req.version() % 10) + "\" " + std::to_string(status));
}

void Server::record_last_request(const Request& req) {
  json::object headers;
  for (const auto& field : req) {
    const auto name = to_lower(field.name_string());
    const std::string_view value = field.value();
    if (auto* existing = headers.if_contains(name)) {
      auto& s = existing->get_string();
      s.append(", ");
      s.append(value);
    } else {
      headers[name] = value;
    }
  }
  last_request_ = json::object{{"method", req.method_string()},
                               {"target", req.target()},
                               {"headers", std::move(headers)},
                               {"body_bytes", req.body().size()}};
}

bool Server::authorized(const Request& req) const {
  const std::string_view auth = req[http::field::authorization];
  const auto space = auth.find(' ');
  if (space == std::string_view::npos || !beast::iequals(auth.substr(0, space), "bearer")) {
    return false;
  }
  const auto token = auth.substr(space + 1);
  for (const auto& key : settings_.api_keys) {
    if (token == key) {
      return true;
    }
  }
  return false;
}

std::string Server::metrics_text() const {
  const std::string m = "model_name=\"" + settings_.model + "\"";
  std::string out;
  auto metric = [&out](std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP " + std::string(name) + " " + std::string(help) + "\n";
    out += "# TYPE " + std::string(name) + " " + std::string(type) + "\n";
  };
  auto sample = [&out](std::string_view name, const std::string& labels, double value) {
    out += std::string(name) + "{" + labels + "} " + fmt_number(value) + "\n";
  };
  auto plain = [&out](std::string_view name, double value) {
    out += std::string(name) + " " + fmt_number(value) + "\n";
  };
  metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.");
  sample("vllm:num_requests_running", m, static_cast<double>(engine_.running));
  metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
  sample("vllm:num_requests_waiting", m, 0);
  metric("vllm:request_success_total", "counter", "Count of successfully processed requests.");
  sample("vllm:request_success_total", "finished_reason=\"stop\"," + m,
         static_cast<double>(engine_.finished_stop));
  sample("vllm:request_success_total", "finished_reason=\"length\"," + m,
         static_cast<double>(engine_.finished_length));
  sample("vllm:request_success_total", "finished_reason=\"abort\"," + m,
         static_cast<double>(engine_.finished_abort));
  metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
  sample("vllm:prompt_tokens_total", m, static_cast<double>(engine_.prompt_tokens_total));
  metric("vllm:prefix_cache_queries_total", "counter",
         "Prefix cache queries, in terms of number of queried tokens.");
  sample("vllm:prefix_cache_queries_total", m, static_cast<double>(engine_.prefix_cache_queries));
  metric("vllm:prefix_cache_hits_total", "counter",
         "Prefix cache hits, in terms of number of cached tokens.");
  sample("vllm:prefix_cache_hits_total", m, static_cast<double>(engine_.prefix_cache_hits));
  metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.");
  sample("vllm:generation_tokens_total", m, static_cast<double>(engine_.generation_tokens_total));
  metric("vllm_sim_connections_total", "counter", "Accepted TCP connections.");
  plain("vllm_sim_connections_total", static_cast<double>(connections_total_));
  metric("vllm_sim_requests_total", "counter", "HTTP requests received.");
  plain("vllm_sim_requests_total", static_cast<double>(requests_total_));
  sleep_metrics(out);
  return out;
}

}  // namespace va::sim
