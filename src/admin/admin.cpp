#include "admin/admin.hpp"

#include <boost/json.hpp>

#include "http/errors.hpp"
#include "http/session.hpp"

namespace va::admin {
namespace {

using front::error_response;
using front::json_response;
using front::Response;

Response text_response(unsigned status, std::string body, std::string_view type, bool keep_alive,
                       unsigned version) {
  Response res{static_cast<http::status>(status), version};
  res.set(http::field::content_type, type);
  res.body() = std::move(body);
  res.keep_alive(keep_alive);
  res.prepare_payload();
  return res;
}

// Every backend's setup problems and the coordination's, as one sentence ("backend 'qwen': cannot
// patch ...; coordination: cannot update ..."), or "".
std::string setup_problems(const Admin& admin) {
  std::string out;
  const auto add = [&out](const std::string& who, const std::vector<std::string>& problems) {
    for (const auto& p : problems) {
      out.append(out.empty() ? "" : "; ").append(who).append(": ").append(p);
    }
  };
  for (const auto* b : admin.backends) {
    add(std::string("backend '").append(b->name()).append("'"), b->setup_problems());
  }
  if (admin.coordination_problems) {
    add("coordination", admin.coordination_problems());
  }
  return out;
}

Response handle(const http::request<http::string_body>& req, Admin& admin) {
  const bool ka = req.keep_alive();
  const unsigned v = req.version();
  const std::string_view target = req.target();
  const auto path = target.substr(0, target.find('?'));
  const bool get = req.method() == http::verb::get;

  if (get && path == "/healthz") {
    return text_response(200, "ok\n", "text/plain", ka, v);
  }
  if (get && path == "/readyz") {
    if (!admin.ready) {
      return error_response(503, "not ready (starting or shutting down)", ka, v);
    }
    if (auto problems = setup_problems(admin); !problems.empty()) {
      return error_response(503, "not ready: " + problems, ka, v);
    }
    return text_response(200, "ready\n", "text/plain", ka, v);
  }
  if (get && path == "/metrics") {
    for (auto* b : admin.backends) {
      b->account_awake();
      admin.metrics.setup_problems.with({b->name()})
          .set(static_cast<double>(b->setup_problems().size()));
    }
    return text_response(200, admin.metrics.render(), "text/plain; version=0.0.4; charset=utf-8",
                         ka, v);
  }
  if (get && path == "/status") {
    boost::json::array backends;
    for (auto* b : admin.backends) {
      backends.push_back(b->status());
    }
    boost::json::object o{
        {"version", VA_VERSION}, {"ready", admin.ready.load()}, {"backends", std::move(backends)}};
    if (admin.coordination) {
      o["coordination"] = admin.coordination();
    }
    return json_response(200, boost::json::serialize(o), ka, v);
  }
  constexpr std::string_view kPrefix = "/admin/backends/";
  if (path.starts_with(kPrefix)) {
    const auto rest = path.substr(kPrefix.size());
    const auto slash = rest.find('/');
    const auto name = rest.substr(0, slash);
    const auto action = slash == std::string_view::npos ? "" : rest.substr(slash + 1);
    activator::Backend* backend = nullptr;
    for (auto* b : admin.backends) {
      if (b->name() == name) {
        backend = b;
      }
    }
    if (backend == nullptr) {
      return error_response(404, "no backend named '" + std::string(name) + "'", ka, v);
    }
    if (req.method() != http::verb::post || (action != "wake" && action != "sleep")) {
      return error_response(405, "use POST /admin/backends/{name}/wake or /sleep", ka, v);
    }
    if (action == "wake") {
      backend->wake("admin wake");
    } else if (auto refused = backend->sleep("admin sleep")) {
      return error_response(409, *refused, ka, v);
    }
    return json_response(202, boost::json::serialize(backend->status()), ka, v);
  }
  return error_response(404, "no admin route for " + std::string(path), ka, v);
}

}  // namespace

task<void> serve_admin(Socket socket, Admin& admin) {
  TcpStream stream(std::move(socket));
  front::Registered registered(admin.connections, stream.socket());
  beast::flat_buffer buf;
  MovingDeadline deadline(stream.get_executor());  // for the answers
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    stream.expires_after(30s);
    auto [ec, n] = co_await http::async_read(stream, buf, parser, use_nothrow);
    stream.expires_never();
    if (ec) {
      if (ec != http::error::end_of_stream && ec != beast::error::timeout &&
          ec != net::error::connection_reset && ec != net::error::eof) {
        co_await front::send(stream.socket(), deadline,
                             error_response(400, "malformed request: " + ec.message(), false));
      }
      co_return;
    }
    auto res = handle(parser.get(), admin);
    const bool keep_alive = res.keep_alive();
    co_await front::send(stream.socket(), deadline, std::move(res));
    if (!keep_alive) {
      co_return;
    }
  }
}

}  // namespace va::admin
