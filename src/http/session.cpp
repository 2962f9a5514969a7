#include "http/session.hpp"

#include "core/deadline.hpp"
#include "core/log.hpp"
#include "http/errors.hpp"
#include "upstream/forwarder.hpp"
#include "upstream/heads.hpp"
#include "wire/wire.hpp"

namespace va::front {
namespace {

constexpr int kMaxConnectRetries = 3;
// Bodies above this size stream upstream when the route does not depend on them.
constexpr std::size_t kStreamBodyThreshold = 64 * 1024;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Registers a connection (limits.max_connections, shutdown) and counts it in the gauge.
class ConnectionCount {
 public:
  ConnectionCount(Frontend& fe, Socket& s) : fe_(fe), registered_(fe.connections, s) {
    fe_.metrics.open_connections.with({}).add(1);
  }
  ~ConnectionCount() { fe_.metrics.open_connections.with({}).add(-1); }

 private:
  Frontend& fe_;
  Registered registered_;
};

class ActiveRequest {
 public:
  explicit ActiveRequest(Frontend& fe) : fe_(fe) { ++fe_.requests_active; }
  ~ActiveRequest() { --fe_.requests_active; }

 private:
  Frontend& fe_;
};

struct Outcome {
  unsigned status = 0;
  std::string backend = "none";
  std::string model;
  std::string reason;  // errc name when the proxy answered with an error
  std::uint64_t bytes = 0;
  std::optional<double> wait_ms;
};

}  // namespace

task<void> send(Socket& socket, MovingDeadline& deadline, http::response<http::string_body> res) {
  const bool close = !res.keep_alive();
  std::string head;
  wire::append_head(head, res.base());
  const std::array<net::const_buffer, 2> pieces = {net::buffer(head), net::buffer(res.body())};
  deadline.watch(socket, Clock::now() + 30s);
  co_await wire::write(socket, pieces);
  if (close) {
    // Half-close and drain briefly, so the client reads the answer instead of a reset.
    error_code ec;
    socket.shutdown(Socket::shutdown_send, ec);
    std::array<char, 4096> sink;
    deadline.watch(socket, Clock::now() + 1s);
    for (int i = 0; i < 64; ++i) {
      auto [drain_error, n] = co_await socket.async_read_some(net::buffer(sink), use_nothrow);
      if (drain_error) {
        break;
      }
    }
  }
  deadline.pause();
}

// A coroutine of its own, so that the session's frame (alive as long as the connection) does not
// carry the answer.
task<void> refuse(Socket& socket, MovingDeadline& deadline, Refusal r, unsigned version = 11) {
  co_await send(socket, deadline, error_response(r.status, r.message, false, version));
}

// What a request needs of its connection.
struct Connection {
  Socket& socket;
  beast::flat_buffer& buf;
  Frontend& fe;
  const std::string& client_address;
  // The head's, the body's, then the proxy's own answer's, or limits.send_timeout for the writes
  // of a forwarded response that wait.
  MovingDeadline& deadline;
};

// How long a write to the client may make no progress: limits.send_timeout, by the connection's
// deadline (idle while a request is forwarded: the head and body have been read).
wire::Patience patience(const Connection& c) {
  return wire::Patience{c.deadline, c.fe.limits.send_timeout};
}

// What the proxy answers itself, before any backend (never activity, never a wake): /health,
// /v1/models, 404 for a path not exposed, 401 without a valid API key. `reusable`: the
// connection may go on after it (any body is left unread).
std::optional<Response> local_answer(const RequestHeader& h, std::string_view path, Frontend& fe,
                                     bool reusable, unsigned version) {
  if (path == "/health" && (h.method() == http::verb::get || h.method() == http::verb::head)) {
    auto res = json_response(200, "", reusable, version);
    res.erase(http::field::content_type);
    return res;
  }
  const bool models_list = path == "/v1/models" && h.method() == http::verb::get;
  if (!models_list && !is_exposed(path)) {
    return error_response(404, "no route for " + std::string(path), reusable, version);
  }
  if (!fe.api_keys.empty() &&
      !authorized(wire::field_value(h, http::field::authorization), fe.api_keys)) {
    fe.metrics.rejected_requests_total.with({"none", "unauthorized"}).inc();
    auto res = error_response(401, "missing or invalid API key", reusable, version);
    res.set(http::field::www_authenticate, "Bearer");
    return res;
  }
  if (models_list) {
    return json_response(200, fe.router.models_json(), reusable, version);
  }
  return std::nullopt;
}

// A request on its way to a backend: what handle(), proxy_streamed() and proxy_buffered() share.
// The proxy's own answer, if any, is built into `reply` by plain functions and sent by handle()
// at one place: an answer built inside a co_await takes a slot of its own in the coroutine's
// frame, and Asio's frame cache never reuses a frame over 1 KiB (a malloc per request).
struct Proxied {
  Connection& c;
  unsigned version;
  bool keep_alive;  // the client connection goes on after this request
  Outcome out;
  std::optional<Response> reply;

  // The proxy's error answer for `f` (none to a client that left), counted.
  void fail(const Failure& f) {
    out.status = status_for(f.code);
    out.reason = name(f.code);
    c.fe.metrics.rejected_requests_total.with({out.backend, out.reason}).inc();
    if (f.code != errc::client_gone) {
      reply = error_response(f, keep_alive, version);
    }
  }

  // The client took no byte for limits.send_timeout: the forwarder reset its connection and
  // closed the upstream one; said and counted here, where the backend is known.
  void cut_for_send_timeout(const upstream::ForwardResult& fwd) {
    out.reason = "client_send_timeout";
    keep_alive = false;
    c.fe.metrics.client_send_timeouts_total.with({out.backend}).inc();
    log::warn("client stopped reading",
              {{"backend", out.backend},
               {"send_timeout_ms", static_cast<std::int64_t>(c.fe.limits.send_timeout.count())},
               {"bytes", fwd.bytes},
               {"client", c.client_address}});
  }

  // After forward(): what the client saw, whether the connection goes on, and the proxy's own
  // answer when the client saw nothing of the upstream's.
  void settle(const upstream::ForwardResult& fwd) {
    using O = upstream::ForwardResult::Outcome;
    out.bytes = fwd.bytes;
    keep_alive = fwd.keep_alive;
    if (fwd.outcome == O::client_gone) {
      out.reason = "client_gone";
    } else if (fwd.outcome == O::client_send_timeout) {
      cut_for_send_timeout(fwd);
    } else if (fwd.outcome == O::tunnel_idle) {
      log::info("tunnel idle",
                {{"backend", out.backend}, {"error", fwd.error}, {"client", c.client_address}});
    }
    if (fwd.response_started) {
      out.status = fwd.status;
    } else if (fwd.outcome == O::client_gone || fwd.outcome == O::client_send_timeout) {
      out.status = 499;
      keep_alive = false;
    } else if (fwd.outcome == O::request_body_failed) {
      // The same answers as for a body read whole: 408, 413, 400, or none to a client gone.
      keep_alive = false;
      auto refusal = body_failure(fwd.body_error, c.deadline.expired());
      out.status = refusal ? refusal->status : 499;
      if (refusal) {
        reply = error_response(refusal->status, refusal->message, false, version);
      }
    } else if (fwd.outcome != O::done) {
      const bool timeout = fwd.outcome == O::upstream_timeout;
      fail(Failure{
          timeout ? errc::upstream_timeout : errc::upstream_failed,
          "upstream of backend '" + out.backend + "' " + (timeout ? "" : "failed: ") + fwd.error});
    }
  }
};

// A large body for the only backend while it is ready: streamed upstream as it arrives. The
// body cannot change the route (the backend itself answers an unknown model), and nothing is
// held, so nothing needs to be in memory. Only a body with a Content-Length: a chunked one is
// read whole first, so that a malformed chunk is refused with 400 before any byte of the
// request reaches the backend. False when it did not stream (the caller reads the body whole).
// Only for a request that may_stream(): most do not, and need no coroutine frame to say so.
bool may_stream(const Proxied& p, const HeadParser& head) {
  return p.c.fe.router.only_backend() != nullptr && !head.chunked() &&
         head.content_length().value_or(0) > kStreamBodyThreshold;
}

task<bool> proxy_streamed(Proxied& p, HeadParser& head) {
  auto* only = p.c.fe.router.only_backend();
  auto lease = only->try_acquire();
  if (!lease) {
    co_return false;
  }
  auto route = only->route();
  auto [connect_error, upstream_stream] = co_await route.pool->open();
  if (connect_error) {
    // One pod gone is the routing's business; every pod, or the backend's URL, the backend's.
    if (!route.pod || route.pod->connect_failed()) {
      only->suspect();  // then the buffered path holds the request while it is re-checked
    }
    co_return false;
  }
  p.out.backend = only->name();
  const auto& limits = p.c.fe.limits;
  http::request_parser<http::buffer_body, wire::Alloc> in(std::move(head));
  in.body_limit(limits.max_body_bytes);
  p.settle(co_await upstream::forward_streamed(
      p.c.socket, upstream::StreamedBody{p.c.buf, in, p.c.deadline, body_timeout(limits)},
      p.c.client_address, std::move(upstream_stream), *route.pool,
      upstream::ForwardOptions{.client = patience(p.c),
                               .client_keep_alive = p.keep_alive,
                               .client_version = p.version,
                               .wake_ms = {}}));
  co_return true;
}

// The body read whole (needed to route: its "model"; held in memory while a backend wakes),
// then forwarded. False when the body could not be read (answered here; the connection ends).
task<bool> proxy_buffered(Proxied& p, HeadParser& head) {
  auto& c = p.c;
  const auto& limits = c.fe.limits;
  const auto alloc = head.get().get_allocator();
  BodyParser full(std::move(head), alloc);  // the body in the request's memory too
  prepare_body(full, limits);
  error_code
      body_error;  // a body that came with its head needs no read's coroutine, nor a deadline
  if (!wire::parse_buffered(c.buf, full, wire::Until::message, body_error)) {
    c.deadline.watch(c.socket, Clock::now() + body_timeout(limits));
    body_error = co_await read_body(c.socket, c.buf, full);
    c.deadline.pause();
  }
  if (body_error) {
    if (auto refusal = body_failure(body_error, c.deadline.expired())) {
      co_await refuse(c.socket, c.deadline, std::move(*refusal), p.version);
    }
    co_return false;
  }
  const auto& req = full.get();
  auto route = c.fe.router.route(wire::field_value(req, http::field::content_type), req.body());
  if (!route) {
    p.fail(route.error());
    co_return true;
  }
  auto* backend = route->backend;
  p.out.backend = backend->name();
  p.out.model = route->model;
  const upstream::UpstreamRequest up{
      upstream::upstream_head(req.base(), backend->pool().target(), c.client_address,
                              upstream_length(req)),
      req.body(), req.method()};
  const auto key = backend->route_key(req.body());
  for (int attempt = 0;; ++attempt) {
    // A ready backend leases at once; only one that is not needs the coroutine that holds the
    // request through a wake.
    auto lease = backend->try_acquire();
    if (!lease) {
      auto acquired = co_await backend->acquire(req.body().size(), c.socket);
      if (!acquired) {
        if (acquired.error().code == errc::client_gone) {
          p.keep_alive = false;
        }
        p.fail(acquired.error());
        co_return true;
      }
      if (acquired->waited_ms) {
        p.out.wait_ms = p.out.wait_ms.value_or(0) + *acquired->waited_ms;
      }
      lease.emplace(std::move(acquired->lease));
    }
    auto route = backend->route(key);
    auto fwd =
        co_await upstream::forward(c.socket, *route.pool, up,
                                   upstream::ForwardOptions{.client = patience(c),
                                                            .client_keep_alive = p.keep_alive,
                                                            .client_version = p.version,
                                                            .wake_ms = p.out.wait_ms});
    if (fwd.outcome == upstream::ForwardResult::Outcome::connect_failed &&
        attempt < kMaxConnectRetries) {
      // Nothing reached the upstream: the request is tried again. A pod is passed over for a
      // while (the others serve); the backend's URL, or the last pod, has the backend re-checked
      // (re-woken if it died) first.
      const bool recheck = !route.pod || route.pod->connect_failed();
      log::info("upstream connect failed",
                {{"backend", p.out.backend},
                 {"pod", route.pod ? route.pod->address().pod : std::string()},
                 {"recheck", recheck},
                 {"error", fwd.error}});
      if (recheck) {
        backend->suspect();
      }
      continue;
    }
    p.settle(fwd);
    co_return true;
  }
}

// One request whose head is in `head`: answered here or forwarded, then accounted. True when the
// connection goes on. A coroutine of its own, so that its frame exists only while a request
// does: an idle keep-alive connection holds just the loop's.
task<bool> handle(Connection& c, HeadParser& head) {
  auto& socket = c.socket;
  auto& fe = c.fe;
  const auto& client_address = c.client_address;
  ActiveRequest active(fe);
  const auto started = Clock::now();
  auto& h = head.get();
  const std::pmr::string target(h.target(), h.get_allocator());
  const std::string method(h.method_string());
  const auto path = path_of(target);
  // The parser's flags rather than the header's keep_alive() and chunked(), which look the fields
  // up again (wire::field_value).
  Proxied p{c, h.version(), head.keep_alive() && !fe.shutting_down, {}, {}};

  // A request answered here has its body left unread, so no other can follow it.
  const bool has_body = head.chunked() || (head.content_length() && *head.content_length() > 0);
  const bool answered_keep_alive = p.keep_alive && !has_body;
  p.reply = local_answer(h, path, fe, answered_keep_alive, p.version);
  if (p.reply) {
    co_await send(socket, c.deadline, std::move(*p.reply));
    co_return answered_keep_alive;
  }
  if (beast::iequals(wire::field_value(h, http::field::expect), "100-continue")) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    const std::array<net::const_buffer, 1> pieces = {net::buffer(kContinue)};
    co_await wire::write(socket, pieces, patience(c));
  }
  bool streamed = false;
  if (may_stream(p, head)) {
    streamed = co_await proxy_streamed(p, head);
  }
  if (!streamed && !co_await proxy_buffered(p, head)) {
    co_return false;  // the body could not be read: answered, and the connection ends
  }
  if (p.reply) {
    co_await send(socket, c.deadline, std::move(*p.reply));
  }
  const auto& out = p.out;

  const double duration_ms = ms_since(started);
  fe.metrics.requests_total.with({out.backend, std::to_string(out.status)}).inc();
  fe.metrics.request_duration_seconds.with({out.backend}).observe(duration_ms / 1000);
  if (log::enabled(log::Level::info)) {
    log::info("request", {{"method", method},
                          {"path", std::string(path)},
                          {"backend", out.backend},
                          {"model", out.model},
                          {"status", out.status},
                          {"bytes", out.bytes},
                          {"duration_ms", duration_ms},
                          {"wait_for_wake_ms", out.wait_ms.value_or(0)},
                          {"client", client_address}});
  }
  if (!p.keep_alive) {
    error_code ec;
    socket.shutdown(Socket::shutdown_send, ec);
    co_return false;
  }
  co_return true;
}

task<void> serve_public(Socket socket, Frontend& fe) {
  std::string client_address;
  {
    error_code ec;
    auto ep = socket.remote_endpoint(ec);
    client_address = ec ? "unknown" : ep.address().to_string();
  }
  socket.set_option(tcp::no_delay(true));
  ConnectionCount count(fe, socket);
  const auto& limits = fe.limits;
  beast::flat_buffer buf(buffer_limit(limits));
  // The deadline for a request's head, its body, then the proxy's own answer. Not tcp_stream's
  // own timeout: that one closes the socket, and the client would never see its 408; this one
  // only cancels the read.
  MovingDeadline deadline(socket.get_executor());

  for (bool first = true;; first = false) {
    wire::Scratch scratch;  // the request's memory; none taken until its head begins
    HeadParser head(std::piecewise_construct, std::make_tuple(),
                    std::make_tuple(wire::Alloc(&scratch)));
    prepare_head(head, limits);
    // Between two requests the connection may idle for limits.keepalive_timeout (longer than a
    // balancer keeps its idle connections to us, so we never close one as it sends on it); a head
    // that has begun, and the first one, must arrive within limits.header_timeout.
    bool idle = !first && buf.size() == 0;
    deadline.watch(socket,
                   Clock::now() + (idle ? limits.keepalive_timeout : limits.header_timeout));
    bool folded = false;
    const auto head_error = co_await read_head(socket, buf, head, folded, [&] {
      if (idle && (buf.size() > 0 || head.got_some())) {
        idle = false;  // some of the head is here: the rest within header_timeout
        deadline.watch(socket, Clock::now() + limits.header_timeout);
      }
    });
    deadline.pause();
    auto refusal = head_error ? head_failure(head_error, folded, deadline.expired(),
                                             head.got_some() || buf.size() > 0)
                              : unusable_head(head);
    if (head_error || refusal) {
      if (refusal) {
        co_await refuse(socket, deadline, std::move(*refusal));
      }
      co_return;
    }
    Connection c{socket, buf, fe, client_address, deadline};
    bool more = false;
    {
      const wire::InProgress counted;
      more = co_await handle(c, head);
    }
    if (!more) {
      co_return;
    }
    if (buf.size() == 0) {
      buf.shrink_to_fit();  // an idle keep-alive connection holds no buffer
      if (wire::InProgress::others(false)) {
        co_await wire::let_others_run();  // the client's next request answers ours
      }
    }
  }
}

}  // namespace va::front
