#include "sim/sim.hpp"

#include <sys/socket.h>
#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/json.hpp>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "core/log.hpp"
#include "core/net.hpp"
#include "core/socket.hpp"
#include "core/spawn.hpp"

namespace va::sim {

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  if (text == "0") {
    return std::chrono::nanoseconds{0};
  }
  const char* end = text.data() + text.size();
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr == text.data() || value < 0) {
    return std::nullopt;
  }
  const std::string_view unit(ptr, static_cast<std::size_t>(end - ptr));
  double ns_per_unit = 0;
  if (unit == "ns") {
    ns_per_unit = 1;
  } else if (unit == "us") {
    ns_per_unit = 1e3;
  } else if (unit == "ms") {
    ns_per_unit = 1e6;
  } else if (unit == "s") {
    ns_per_unit = 1e9;
  } else if (unit == "m") {
    ns_per_unit = 60e9;
  } else if (unit == "h") {
    ns_per_unit = 3600e9;
  } else {
    return std::nullopt;
  }
  const double ns = value * ns_per_unit;
  if (!std::isfinite(ns) || ns > 1e18) {
    return std::nullopt;
  }
  return std::chrono::nanoseconds{static_cast<std::int64_t>(ns)};
}

namespace {

namespace json = boost::json;
using namespace net::experimental::awaitable_operators;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

constexpr std::size_t kBodyLimit = 64 * 1024 * 1024;
constexpr std::size_t kHeaderLimit = 64 * 1024;
constexpr int kMaxModelLen = 4096;

// Process-exit paths for the fault knobs: flush what the log has, say why on stderr, and leave
// without unwinding (a crash does not run destructors either).
[[noreturn]] void crash(int status, const std::string& why) {
  std::fflush(stdout);
  std::fprintf(stderr, "%s\n", why.c_str());
  std::fflush(stderr);
  std::_Exit(status);
}

std::int64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_hex(std::size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n, '0');
  for (auto& c : out) {
    c = kDigits[rng() % 16];
  }
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

int count_words(std::string_view s) {
  int n = 0;
  bool in_word = false;
  for (char c : s) {
    const bool space = std::isspace(static_cast<unsigned char>(c)) != 0;
    if (!space && !in_word) {
      ++n;
    }
    in_word = !space;
  }
  return n;
}

// A rough prompt length: one token per word of text, one per element of a token-id list.
int count_prompt_tokens(const json::object& body, bool chat) {
  int n = 0;
  auto text_tokens = [&n](const json::value& v) {
    if (v.is_string()) {
      n += count_words(v.get_string());
    } else if (v.is_array()) {
      for (const auto& part : v.get_array()) {
        if (part.is_string()) {
          n += count_words(part.get_string());
        } else if (part.is_int64() || part.is_uint64()) {
          ++n;
        } else if (part.is_array()) {
          n += static_cast<int>(part.get_array().size());
        } else if (part.is_object()) {
          if (const auto* t = part.get_object().if_contains("text"); t && t->is_string()) {
            n += count_words(t->get_string());
          }
        }
      }
    }
  };
  if (chat) {
    if (const auto* msgs = body.if_contains("messages"); msgs && msgs->is_array()) {
      for (const auto& m : msgs->get_array()) {
        if (m.is_object()) {
          if (const auto* c = m.get_object().if_contains("content")) {
            text_tokens(*c);
          }
        }
      }
    }
  } else if (const auto* p = body.if_contains("prompt")) {
    text_tokens(*p);
  }
  return std::max(n, 1);
}

std::string token_text(int i) { return "tok" + std::to_string(i) + " "; }

// One generation request, validated.
struct Generation {
  bool chat = true;
  std::string id;
  std::int64_t created = 0;
  int max_tokens = 0;
  int prompt_tokens = 0;
  bool stream = false;
  bool include_usage = false;
};

// Rejections carry vLLM's error shape; a Generation means "go ahead".
using Validated = std::variant<Generation, Response>;

class Server {
 public:
  explicit Server(Settings settings) : settings_(std::move(settings)) {}

  int run() {
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
      signals.async_wait([this](error_code sec, int) {
        if (!sec) {
          ioc_.stop();
        }
      });
    });
    spawn(ioc_.get_executor(), start(), "sim start");
    ioc_.run();
    return exit_code_;
  }

 private:
  // Loads the "model" (waits), then listens. Like vLLM, the socket is bound early but listen()
  // only runs once loading is done, so connects are refused meanwhile.
  task<void> start() {
    error_code ec;
    const auto address = net::ip::make_address(settings_.host, ec);
    if (ec) {
      fail_start(1, "invalid --host " + settings_.host + ": " + ec.message());
      co_return;
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
    acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      fail_start(1, "cannot listen: " + ec.message());
      co_return;
    }
    const auto port = acceptor_.local_endpoint().port();
    log::info("Starting vLLM API server on http://" + settings_.host + ":" + std::to_string(port));
    log::info("Application startup complete.");
    for (;;) {
      auto [aec, socket] = co_await acceptor_.async_accept(use_nothrow);
      if (aec == net::error::operation_aborted) {
        co_return;
      }
      if (aec) {
        // Out of descriptors and the like: back off instead of spinning.
        log::warn("accept failed", {{"error", aec.message()}});
        co_await sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      ++connections_total_;
      socket.set_option(tcp::no_delay(true), ec);
      spawn(ioc_.get_executor(), session(std::move(socket)), "sim session");
    }
  }

  void fail_start(int status, const std::string& message) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s\n", message.c_str());
    std::fflush(stderr);
    exit_code_ = status;
    ioc_.stop();
  }

  static task<void> sleep_for(std::chrono::nanoseconds d) {
    if (d <= std::chrono::nanoseconds::zero()) {
      co_return;
    }
    Timer timer(co_await net::this_coro::executor, d);
    co_await timer.async_wait(use_nothrow);
  }

  // Completes when the peer has closed or reset the connection; runs beside a generation, as
  // vLLM's listen_for_disconnect() does.
  static task<void> watch_disconnect(Socket& socket) {
    for (;;) {
      auto [ec] = co_await socket.async_wait(Socket::wait_read, use_nothrow);
      if (ec) {
        co_return;
      }
      const Peer peer = peek_peer(socket.native_handle());
      if (peer == Peer::closed) {
        co_return;
      }
      if (peer == Peer::sent_data) {
        // A pipelined request, not a disconnect: stop watching until the generation ends.
        Timer forever(co_await net::this_coro::executor, Timer::time_point::max());
        co_await forever.async_wait(use_nothrow);
        co_return;
      }
    }
  }

  task<void> session(Socket socket) {
    std::string peer;
    {
      error_code ec;
      const auto ep = socket.remote_endpoint(ec);
      peer = ec ? "?" : ep.address().to_string() + ":" + std::to_string(ep.port());
    }
    TcpStream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (bool first = true;; first = false) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kHeaderLimit);
      parser.body_limit(kBodyLimit);
      // uvicorn closes idle keep-alive connections; the first request has no such limit.
      if (first) {
        stream.expires_never();
      } else {
        stream.expires_after(settings_.keep_alive_timeout);
      }
      auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, use_nothrow);
      stream.expires_never();
      if (ec) {
        if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
            ec != net::error::connection_reset && ec != net::error::eof) {
          co_await reply_bad_http(stream);
        }
        break;
      }
      if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        http::response<http::empty_body> cont{http::status::continue_, 11};
        auto [wec, wn] = co_await http::async_write(stream, cont, use_nothrow);
        if (wec) {
          break;
        }
      }
      if (!parser.is_done()) {
        auto [bec, bn] = co_await http::async_read(stream, buffer, parser, use_nothrow);
        if (bec) {
          if (bec != http::error::end_of_stream && bec != net::error::connection_reset &&
              bec != net::error::eof) {
            co_await reply_bad_http(stream);
          }
          break;
        }
      }
      Request req = parser.release();
      if (!co_await handle(stream, req, peer)) {
        break;
      }
    }
    error_code ec;
    stream.socket().shutdown(Socket::shutdown_send, ec);
    stream.close();
  }

  static task<void> reply_bad_http(TcpStream& stream) {
    Response res{http::status::bad_request, 11};
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.set(http::field::connection, "close");
    res.body() = "Invalid HTTP request received.";
    res.prepare_payload();
    co_await http::async_write(stream, res, use_nothrow);
  }

  Response make_json(const Request& req, http::status status, std::string body) const {
    Response res{status, req.version()};
    res.set(http::field::content_type, "application/json");
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    return res;
  }

  Response make_error(const Request& req, http::status status, std::string_view type,
                      std::string_view message, std::string_view param = {}) const {
    json::object err;
    err["message"] = message;
    err["type"] = type;
    err["param"] = param.empty() ? json::value(nullptr) : json::value(param);
    err["code"] = static_cast<int>(status);
    return make_json(req, status, json::serialize(json::object{{"error", std::move(err)}}));
  }

  // Writes a complete response; returns whether the connection stays open.
  static task<bool> send(TcpStream& stream, Response res) {
    res.prepare_payload();
    auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
    co_return !ec && res.keep_alive();
  }

  void access_log(const std::string& peer, const Request& req, unsigned status) const {
    if (!settings_.access_log) {
      return;
    }
    log::info(peer + " - \"" + std::string(req.method_string()) + " " + std::string(req.target()) +
              " HTTP/" + std::to_string(req.version() / 10) + "." +
              std::to_string(req.version() % 10) + "\" " + std::to_string(status));
  }

  void record_last_request(const Request& req) {
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

  bool authorized(const Request& req) const {
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

  // Routes one request and writes its response; returns whether the connection stays open.
  task<bool> handle(TcpStream& stream, Request& req, const std::string& peer) {
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

    struct Route {
      std::string_view path;
      std::initializer_list<http::verb> methods;
    };
    static const Route kRoutes[] = {
        {"/health", {http::verb::get}},          {"/ping", {http::verb::get, http::verb::post}},
        {"/version", {http::verb::get}},         {"/metrics", {http::verb::get}},
        {"/v1/models", {http::verb::get}},       {"/v1/chat/completions", {http::verb::post}},
        {"/v1/completions", {http::verb::post}}, {"/sim/last-request", {http::verb::get}},
    };
    const Route* route = nullptr;
    for (const auto& r : kRoutes) {
      if (r.path == path) {
        route = &r;
      }
    }
    if (route == nullptr) {
      access_log(peer, req, 404);
      co_return co_await send(stream,
                              make_json(req, http::status::not_found, R"({"detail":"Not Found"})"));
    }
    if (std::find(route->methods.begin(), route->methods.end(), req.method()) ==
        route->methods.end()) {
      auto res =
          make_json(req, http::status::method_not_allowed, R"({"detail":"Method Not Allowed"})");
      std::string allow;
      for (auto m : route->methods) {
        allow += (allow.empty() ? "" : ", ") + std::string(http::to_string(m));
      }
      res.set(http::field::allow, allow);
      access_log(peer, req, 405);
      co_return co_await send(stream, std::move(res));
    }

    if (path == "/v1/chat/completions" || path == "/v1/completions") {
      co_return co_await complete(stream, req, peer, path == "/v1/chat/completions");
    }
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
      res = make_json(req, http::status::ok,
                      json::serialize(json::object{{"object", "list"},
                                                   {"data", json::array{std::move(model)}}}));
    } else if (path == "/sim/last-request") {
      res = make_json(req, http::status::ok,
                      last_request_.is_null() ? "{}" : json::serialize(last_request_));
    }
    if (path != "/health" && path != "/metrics" && path != "/ping") {
      access_log(peer, req, 200);
    }
    co_return co_await send(stream, std::move(res));
  }

  std::string metrics_text() const {
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
    sample("vllm:num_requests_running", m, static_cast<double>(running_));
    metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.");
    sample("vllm:num_requests_waiting", m, 0);
    metric("vllm:request_success_total", "counter", "Count of successfully processed requests.");
    sample("vllm:request_success_total", "finished_reason=\"stop\"," + m,
           static_cast<double>(finished_stop_));
    sample("vllm:request_success_total", "finished_reason=\"length\"," + m,
           static_cast<double>(finished_length_));
    sample("vllm:request_success_total", "finished_reason=\"abort\"," + m,
           static_cast<double>(finished_abort_));
    metric("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.");
    sample("vllm:prompt_tokens_total", m, static_cast<double>(prompt_tokens_total_));
    metric("vllm:generation_tokens_total", "counter", "Number of generation tokens processed.");
    sample("vllm:generation_tokens_total", m, static_cast<double>(generation_tokens_total_));
    metric("vllm_sim_connections_total", "counter", "Accepted TCP connections.");
    plain("vllm_sim_connections_total", static_cast<double>(connections_total_));
    metric("vllm_sim_requests_total", "counter", "HTTP requests received.");
    plain("vllm_sim_requests_total", static_cast<double>(requests_total_));
    return out;
  }

  static std::string fmt_number(double v) {
    // Python's prometheus_client prints floats ("3.0"); so do we.
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return buf;
  }

  Validated validate(const Request& req, bool chat) const {
    error_code ec;
    const json::value parsed = json::parse(req.body(), ec);
    if (ec || !parsed.is_object()) {
      return make_error(req, http::status::bad_request, "BadRequestError",
                        ec ? "JSON decode error: " + ec.message()
                           : std::string("Request body must be a JSON object"));
    }
    const auto& body = parsed.get_object();
    auto bad = [&](std::string message) {
      return make_error(req, http::status::bad_request, "BadRequestError", message);
    };
    if (const auto* model = body.if_contains("model"); model && !model->is_null()) {
      if (!model->is_string()) {
        return bad("model: Input should be a valid string");
      }
      if (model->get_string() != settings_.model) {
        return make_error(req, http::status::not_found, "NotFoundError",
                          "The model `" + std::string(model->get_string()) + "` does not exist.",
                          "model");
      }
    }
    if (chat) {
      const auto* messages = body.if_contains("messages");
      if (messages == nullptr || !messages->is_array()) {
        return bad("messages: Field required");
      }
    } else {
      const auto* prompt = body.if_contains("prompt");
      if (prompt == nullptr || !(prompt->is_string() || prompt->is_array())) {
        return bad("prompt: Field required");
      }
    }
    Generation g;
    g.chat = chat;
    g.id = (chat ? "chatcmpl-" : "cmpl-") + random_hex(32);
    g.created = unix_seconds();
    g.max_tokens = settings_.max_tokens;
    for (const char* key : {"max_completion_tokens", "max_tokens"}) {
      const auto* v = body.if_contains(key);
      if (v == nullptr || v->is_null()) {
        continue;
      }
      const auto n = v->is_int64() ? v->get_int64() : v->is_uint64() ? -1 : 0;
      if (n < 1 || n > 1'000'000) {
        return bad(std::string(key) + ": must be a positive integer");
      }
      g.max_tokens = static_cast<int>(n);
      break;
    }
    g.prompt_tokens = count_prompt_tokens(body, chat);
    if (const auto* s = body.if_contains("stream"); s && !s->is_null()) {
      if (!s->is_bool()) {
        return bad("stream: Input should be a valid boolean");
      }
      g.stream = s->get_bool();
    }
    if (const auto* so = body.if_contains("stream_options"); so && !so->is_null()) {
      if (!g.stream) {
        return bad("Stream options can only be defined when `stream=True`.");
      }
      if (!so->is_object()) {
        return bad("stream_options: Input should be an object");
      }
      g.include_usage = true;  // vLLM's StreamOptions default
      if (const auto* iu = so->get_object().if_contains("include_usage"); iu && iu->is_bool()) {
        g.include_usage = iu->get_bool();
      }
    }
    return g;
  }

  // Counts a request in num_requests_running for as long as it lives.
  struct Running {
    explicit Running(long& n) : n_(n) { ++n_; }
    ~Running() { --n_; }
    Running(const Running&) = delete;
    Running& operator=(const Running&) = delete;
    long& n_;
  };

  void on_abort(const Generation& g) {
    ++finished_abort_;
    log::info("Request " + g.id + " aborted.");
  }

  void on_answered() {
    if (settings_.exit_after > 0 && ++completions_answered_ >= settings_.exit_after) {
      crash(1, "simulated crash after " + std::to_string(settings_.exit_after) + " requests");
    }
  }

  json::object usage(const Generation& g, int completion_tokens) const {
    return json::object{{"prompt_tokens", g.prompt_tokens},
                        {"total_tokens", g.prompt_tokens + completion_tokens},
                        {"completion_tokens", completion_tokens}};
  }

  task<bool> complete(TcpStream& stream, const Request& req, const std::string& peer, bool chat) {
    auto validated = validate(req, chat);
    if (auto* rejected = std::get_if<Response>(&validated)) {
      access_log(peer, req, rejected->result_int());
      const bool keep = co_await send(stream, std::move(*rejected));
      on_answered();
      co_return keep;
    }
    const auto& g = std::get<Generation>(validated);
    Running running(running_);
    prompt_tokens_total_ += static_cast<unsigned long>(g.prompt_tokens);
    if (settings_.access_log) {
      log::info(
          "Received request " + g.id,
          {{"max_tokens", g.max_tokens}, {"stream", g.stream}, {"prompt_tokens", g.prompt_tokens}});
    }
    // Not a conditional expression: GCC 12 evaluates both co_await operands of `?:`.
    if (g.stream) {
      co_return co_await complete_stream(stream, req, peer, g);
    }
    co_return co_await complete_json(stream, req, peer, g);
  }

  task<bool> complete_json(TcpStream& stream, const Request& req, const std::string& peer,
                           const Generation& g) {
    const auto duration = settings_.ttft + settings_.itl * (g.max_tokens - 1);
    const auto raced = co_await (sleep_for(duration) || watch_disconnect(stream.socket()));
    if (raced.index() == 1) {
      on_abort(g);
      co_return false;
    }
    std::string text;
    for (int i = 0; i < g.max_tokens; ++i) {
      text += token_text(i);
    }
    json::object choice;
    choice["index"] = 0;
    if (g.chat) {
      choice["message"] =
          json::object{{"role", "assistant"}, {"content", text}, {"tool_calls", json::array{}}};
    } else {
      choice["text"] = text;
    }
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = "length";
    choice["stop_reason"] = nullptr;
    json::object body{{"id", g.id},
                      {"object", g.chat ? "chat.completion" : "text_completion"},
                      {"created", g.created},
                      {"model", settings_.model},
                      {"choices", json::array{std::move(choice)}},
                      {"usage", usage(g, g.max_tokens)}};
    generation_tokens_total_ += static_cast<unsigned long>(g.max_tokens);
    access_log(peer, req, 200);
    const bool keep =
        co_await send(stream, make_json(req, http::status::ok, json::serialize(body)));
    ++finished_length_;
    on_answered();
    co_return keep;
  }

  task<bool> complete_stream(TcpStream& stream, const Request& req, const std::string& peer,
                             const Generation& g) {
    http::response<http::empty_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "text/event-stream; charset=utf-8");
    res.keep_alive(req.keep_alive());
    res.chunked(true);
    http::response_serializer<http::empty_body> serializer{res};
    access_log(peer, req, 200);
    auto [ec, n] = co_await http::async_write_header(stream, serializer, use_nothrow);
    if (ec) {
      on_abort(g);
      co_return false;
    }
    // `finished` is set once the last token has gone out: like vLLM's engine, a client that
    // leaves after that (say, right after reading [DONE]) does not abort the request.
    bool finished = false;
    const auto raced =
        co_await (stream_events(stream, g, finished) || watch_disconnect(stream.socket()));
    if (!finished) {
      on_abort(g);
      co_return false;
    }
    const bool delivered = raced.index() == 0 && std::get<0>(raced);
    ++finished_length_;
    on_answered();
    co_return delivered&& res.keep_alive();
  }

  // Writes one chunk of the chunked body by itself, so each event leaves when it is generated.
  // The framing is done here and the bytes go straight to the socket: beast's chunk buffers
  // through basic_stream cost several times more CPU per event, which a benchmark would see.
  static task<bool> write_chunk(TcpStream& stream, std::string_view data) {
    char size[20];
    const auto len = std::to_chars(size, size + sizeof size, data.size(), 16).ptr - size;
    std::string framed;
    framed.reserve(static_cast<std::size_t>(len) + data.size() + 4);
    framed.append(size, static_cast<std::size_t>(len)).append("\r\n").append(data).append("\r\n");
    auto [ec, n] = co_await net::async_write(stream.socket(), net::buffer(framed), use_nothrow);
    co_return !ec;
  }

  // Writes `data: {<prefix>,<rest>}\n\n`, where `prefix` holds the fields every chunk of a
  // generation shares and `rest` the JSON members of this one.
  task<bool> write_event(TcpStream& stream, const std::string& prefix, std::string_view rest) {
    std::string event = "data: {";
    event.append(prefix).append(",").append(rest);
    if (settings_.event_timestamps) {
      event.append(",\"sim_sent_ns\":").append(std::to_string(realtime_ns()));
    }
    event.append("}\n\n");
    co_return co_await write_chunk(stream, event);
  }

  // `"id":…,"object":…,"created":…,"model":…`: the members every chunk starts with.
  std::string chunk_prefix(const Generation& g) const {
    auto text = json::serialize(
        json::object{{"id", g.id},
                     {"object", g.chat ? "chat.completion.chunk" : "text_completion"},
                     {"created", g.created},
                     {"model", settings_.model}});
    return text.substr(1, text.size() - 2);
  }

  // The SSE body after the header: returns false when the client went away mid-stream.
  task<bool> stream_events(TcpStream& stream, const Generation& g, bool& finished) {
    const auto prefix = chunk_prefix(g);
    co_await sleep_for(settings_.ttft);
    if (g.chat &&
        !co_await write_event(stream, prefix,
                              R"("choices":[{"index":0,"delta":{"role":"assistant","content":""},)"
                              R"("logprobs":null,"finish_reason":null}])")) {
      co_return false;
    }
    for (int i = 0; i < g.max_tokens; ++i) {
      if (i > 0) {
        co_await sleep_for(settings_.itl);
      }
      const bool last = i + 1 == g.max_tokens;
      // Token texts are plain ASCII, so no escaping is needed.
      std::string rest = g.chat ? R"("choices":[{"index":0,"delta":{"content":")"
                                : R"("choices":[{"index":0,"text":")";
      rest.append(token_text(i)).append(g.chat ? "\"}," : "\",");
      rest.append(last     ? R"("logprobs":null,"finish_reason":"length","stop_reason":null}])"
                  : g.chat ? R"("logprobs":null,"finish_reason":null}])"
                           : R"("logprobs":null,"finish_reason":null,"stop_reason":null}])");
      if (!co_await write_event(stream, prefix, rest)) {
        co_return false;
      }
      ++generation_tokens_total_;
      finished = last;
      if (settings_.die_mid_stream_after > 0 && i + 1 == settings_.die_mid_stream_after) {
        crash(1, "simulated crash mid-stream after " + std::to_string(i + 1) + " tokens");
      }
    }
    if (g.include_usage &&
        !co_await write_event(
            stream, prefix, R"("choices":[],"usage":)" + json::serialize(usage(g, g.max_tokens)))) {
      co_return false;
    }
    if (!co_await write_chunk(stream, "data: [DONE]\n\n")) {
      co_return false;
    }
    co_return co_await write_chunk_last(stream);
  }

  static task<bool> write_chunk_last(TcpStream& stream) {
    auto [ec, n] =
        co_await net::async_write(stream.socket(), net::buffer("0\r\n\r\n", 5), use_nothrow);
    co_return !ec;
  }

  // Destruction order matters: ioc_ is destroyed before the state its coroutine frames touch.
  Settings settings_;
  long running_ = 0;
  unsigned long finished_stop_ = 0;
  unsigned long finished_length_ = 0;
  unsigned long finished_abort_ = 0;
  unsigned long prompt_tokens_total_ = 0;
  unsigned long generation_tokens_total_ = 0;
  unsigned long connections_total_ = 0;
  unsigned long requests_total_ = 0;
  int completions_answered_ = 0;
  json::value last_request_;
  int exit_code_ = 0;
  net::io_context ioc_{1};
  Acceptor acceptor_{ioc_};
};

}  // namespace

int run(const Settings& settings) {
  Server server(settings);
  return server.run();
}

int main(int argc, char** argv) {
  Settings s;
  CLI::App app{"vllm-sim: a GPU-free stand-in for vLLM's OpenAI-compatible server"};
  std::string startup_delay = "0", ttft = "0ms", itl = "10ms", keep_alive = "5s",
              shutdown_delay = "0";
  int fail_at_start = -1;
  const auto duration = CLI::Validator(
      [](std::string& v) {
        return parse_duration(v) ? std::string() : "not a duration (e.g. 250ms, 5s): " + v;
      },
      "DURATION");
  app.add_option("--host", s.host, "Address to listen on")->capture_default_str();
  app.add_option("--port", s.port, "Port to listen on (0: the kernel picks)")
      ->capture_default_str();
  app.add_option("--model", s.model, "Served model name")->capture_default_str();
  app.add_option("--startup-delay", startup_delay, "Time before the port listens")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--ttft", ttft, "Time to first token")->check(duration)->capture_default_str();
  app.add_option("--itl", itl, "Inter-token latency")->check(duration)->capture_default_str();
  app.add_option("--keep-alive-timeout", keep_alive, "Idle keep-alive connection timeout")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--shutdown-delay", shutdown_delay,
                 "On SIGTERM stop listening, serve open connections this long, then exit 0")
      ->check(duration)
      ->capture_default_str();
  app.add_option("--max-tokens", s.max_tokens, "Tokens per completion unless the request says")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--api-key", s.api_keys,
                 "Require `Authorization: Bearer KEY` on /v1 (repeatable)");
  app.add_option("--exit-after", s.exit_after,
                 "exit(1) after the Nth completion request has been answered")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--fail-at-start", fail_at_start,
                 "After the startup delay, print --fail-message and exit with this status")
      ->check(CLI::Range(0, 255));
  app.add_option("--fail-message", s.fail_message, "stderr message for --fail-at-start");
  app.add_option("--die-mid-stream-after", s.die_mid_stream_after,
                 "exit(1) after a stream has sent N tokens")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--event-timestamps", s.event_timestamps,
               "Add sim_sent_ns (CLOCK_REALTIME) to every SSE chunk");
  app.add_flag("!--disable-access-log", s.access_log, "Do not log each request");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  s.startup_delay = *parse_duration(startup_delay);
  s.ttft = *parse_duration(ttft);
  s.itl = *parse_duration(itl);
  s.keep_alive_timeout = *parse_duration(keep_alive);
  s.shutdown_delay = *parse_duration(shutdown_delay);
  if (fail_at_start >= 0) {
    s.fail_at_start = fail_at_start;
  }
  log::init(log::Level::info, log::Format::text);
  return run(s);
}

}  // namespace va::sim
