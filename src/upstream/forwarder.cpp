#include "upstream/forwarder.hpp"

#include <fmt/format.h>

#include <array>

#include "core/log.hpp"
#include "core/socket.hpp"

namespace va::upstream {
namespace {

using namespace net::experimental::awaitable_operators;

constexpr std::size_t kChunk = 16 * 1024;

// Removes the hop-by-hop fields: the fixed list, those the message's own Connection header names
// (RFC 9110 §7.6.1), and `also`.
void drop_hop_by_hop(http::fields& h, bool keep_upgrade, bool keep_transfer_encoding,
                     std::initializer_list<std::string_view> also = {}) {
  http::token_list nominated(h[http::field::connection]);
  std::vector<std::string> drop;
  for (const auto& f : h) {
    const auto name = f.name_string();
    const bool keep = (keep_upgrade && f.name() == http::field::upgrade) ||
                      (keep_transfer_encoding && f.name() == http::field::transfer_encoding);
    // A Connection header may not nominate the message's framing or Host away: that would let a
    // client make the upstream read its body as further requests.
    const bool protected_field = f.name() == http::field::content_length ||
                                 f.name() == http::field::transfer_encoding ||
                                 f.name() == http::field::host;
    bool hop = is_hop_by_hop(f.name(), name) || (nominated.exists(name) && !protected_field);
    for (auto a : also) {
      hop = hop || beast::iequals(name, a);
    }
    if (hop && !keep) {
      drop.emplace_back(name);
    }
  }
  for (const auto& d : drop) {
    h.erase(d);
  }
}

// Watches the client while the upstream works on its request: a client that closes its
// connection cuts the upstream one, so vLLM aborts the generation, even before it has sent a
// byte. A plain completion handler rather than a coroutine run beside the exchange: one wait per
// exchange, no coroutine frames. Bytes from the client (a pipelined request) end the watch, since
// only a write can tell then. stop() before the upstream stream goes away.
class ClientWatch {
 public:
  ClientWatch(beast::tcp_stream& client, beast::tcp_stream& upstream)
      : client_(client), state_(std::make_shared<State>(State{&upstream.socket()})) {
    client_.socket().async_wait(tcp::socket::wait_read, [s = state_, &client](error_code ec) {
      if (!s->active || ec) {
        return;
      }
      if (peek_peer(client.socket().native_handle()) == Peer::closed) {
        s->gone = true;
        error_code ignored;
        s->upstream->shutdown(tcp::socket::shutdown_both, ignored);
        s->upstream->cancel(ignored);
      }
    });
  }
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  ~ClientWatch() { stop(); }

  void stop() {
    if (state_->active) {
      state_->active = false;
      error_code ignored;
      client_.socket().cancel(ignored);  // the handler runs later, sees inactive, does nothing
    }
  }
  bool gone() const { return state_->gone; }

 private:
  struct State {
    tcp::socket* upstream;
    bool active = true;
    bool gone = false;
  };
  beast::tcp_stream& client_;
  std::shared_ptr<State> state_;  // shared with the handler, which may run after we are gone
};

task<void> pipe_bytes(beast::tcp_stream& from, beast::tcp_stream& to) {
  std::array<char, kChunk> buf;
  for (;;) {
    auto [ec, n] = co_await from.async_read_some(net::buffer(buf), use_nothrow);
    if (n > 0) {
      auto [wec, wn] = co_await net::async_write(to, net::buffer(buf.data(), n), use_nothrow);
      if (wec) {
        break;
      }
    }
    if (ec) {
      break;
    }
  }
  error_code ignored;
  to.socket().shutdown(tcp::socket::shutdown_send, ignored);
}

// Writes the error event vLLM itself sends when a stream breaks, then ends the chunked body.
task<void> end_broken_stream(beast::tcp_stream& client,
                             http::response_serializer<http::buffer_body>& sr,
                             http::response_parser<http::buffer_body>& p) {
  static const std::string kTail =
      "data: {\"error\":{\"message\":\"upstream connection lost mid-stream\",\"type\":"
      "\"BadGatewayError\",\"param\":null,\"code\":502}}\n\ndata: [DONE]\n\n";
  auto& body = p.get().body();
  body.data = const_cast<char*>(kTail.data());
  body.size = kTail.size();
  body.more = false;
  for (;;) {
    auto [ec, n] = co_await http::async_write(client, sr, use_nothrow);
    if (ec != http::error::need_buffer || sr.is_done()) {
      break;
    }
  }
}

}  // namespace

void rewrite_upstream_headers(http::request_header<>& req, const Target& t,
                              std::string_view client_address) {
  const bool chunked = http::token_list(req[http::field::transfer_encoding]).exists("chunked");
  const bool upgrade = req.count(http::field::upgrade) > 0;
  std::string xff;
  for (const auto& f : req) {
    if (beast::iequals(f.name_string(), "x-forwarded-for")) {
      xff += (xff.empty() ? "" : ", ") + std::string(f.value());
    }
  }
  drop_hop_by_hop(req, upgrade, false,
                  {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"});
  if (auto host = req.find(http::field::host); host != req.end()) {
    req.set("X-Forwarded-Host", host->value());
  }
  req.set(http::field::host, t.host_header);
  req.set("X-Forwarded-For",
          xff.empty() ? std::string(client_address) : xff + ", " + std::string(client_address));
  req.set("X-Forwarded-Proto", "http");
  if (upgrade) {
    req.set(http::field::connection, "upgrade");
  }
  if (chunked) {
    // Transfer-Encoding is hop-by-hop, but a streamed body keeps its framing (see
    // forward_streamed).
    req.set(http::field::transfer_encoding, "chunked");
  }
  req.version(11);
}

void prepare_upstream_request(http::request<http::string_body>& req, const Target& t,
                              std::string_view client_address) {
  rewrite_upstream_headers(req.base(), t, client_address);
  req.erase(http::field::transfer_encoding);
  req.prepare_payload();
}

bool is_hop_by_hop(http::field f, beast::string_view name) {
  switch (f) {
    case http::field::connection:
    case http::field::keep_alive:
    case http::field::proxy_connection:
    case http::field::proxy_authenticate:
    case http::field::te:
    case http::field::trailer:
    case http::field::transfer_encoding:
    case http::field::upgrade:
    case http::field::expect:
      return true;
    default:
      return beast::iequals(name, "proxy-authorization");
  }
}

namespace {

// One request/response exchange with the upstream.
struct Exchange {
  Exchange(Connection c, http::verb method) : conn(std::move(c)) {
    // Room for a whole small response in one read (a fresh flat_buffer reads 512 bytes at a time).
    buf.reserve(kChunk);
    parser.body_limit(boost::none);
    if (method == http::verb::head) {
      parser.skip(true);
    }
  }
  Connection conn;
  beast::flat_buffer buf;
  http::response_parser<http::buffer_body> parser;
};

// The request went out and the response head is in `ex.parser`: relay the response to the client,
// chunk by chunk, while watching for the client to leave.
task<ForwardResult> relay_response(beast::tcp_stream& client, Pool& pool, Exchange& ex,
                                   const ForwardOptions& r) {
  ForwardResult result;
  auto& up = ex.conn.stream;
  auto& ubuf = ex.buf;
  auto& p = ex.parser;
  auto& conn = ex.conn;
  auto& res = p.get();
  result.status = res.result_int();
  const bool upstream_keep_alive = res.keep_alive();
  const bool switching = res.result() == http::status::switching_protocols;
  result.keep_alive = r.client_keep_alive && !switching;
  if (!switching) {
    // A 101 keeps its Connection: upgrade and Upgrade headers: the client needs them.
    drop_hop_by_hop(res, false, true);
    if (r.client_version < 11 && res.chunked()) {
      res.chunked(false);  // HTTP/1.0 has no chunked coding: the close ends the body
      result.keep_alive = false;
    }
    if (p.need_eof()) {
      result.keep_alive = false;  // the upstream's body ends with its close; so must ours
    }
    res.keep_alive(result.keep_alive);
  }
  if (r.wake_ms) {
    res.set("Server-Timing", "wake;dur=" + std::to_string(static_cast<long long>(*r.wake_ms)));
  }

  http::response_serializer<http::buffer_body> sr{res};
  // When body bytes came with the head, head and body go out in one write (the relay's first);
  // otherwise the head goes at once, so that a client sees it before a slow first token.
  if (switching || ubuf.size() == 0 || p.is_done()) {
    auto [hwec, hwn] = co_await http::async_write_header(client, sr, use_nothrow);
    if (hwec) {
      result.outcome = ForwardResult::Outcome::client_gone;
      co_return result;
    }
  }
  result.response_started = true;

  if (switching) {
    // WebSocket and friends: bytes both ways until either side closes.
    if (ubuf.size() > 0) {
      co_await net::async_write(client, ubuf.data(), use_nothrow);
    }
    co_await (pipe_bytes(client, up) && pipe_bytes(up, client));
    result.keep_alive = false;
    co_return result;
  }

  ClientWatch watch(client, up);
  bool write_failed = false;
  {
    std::array<char, kChunk> buf;
    do {
      if (!p.is_done()) {
        res.body().data = buf.data();
        res.body().size = buf.size();
        auto [ec, n] = co_await http::async_read_some(up, ubuf, p, use_nothrow);
        if (ec == http::error::need_buffer) {
          ec = {};
        }
        if (ec) {
          if (!watch.gone()) {
            result.outcome = ForwardResult::Outcome::upstream_failed;
            result.error = ec.message();
            if (res.chunked() && !p.is_header_done()) {
              break;
            }
            if (res.chunked()) {
              co_await end_broken_stream(client, sr, p);
            }
          }
          break;
        }
        res.body().size = buf.size() - res.body().size;
        // A read that parsed only framing (a chunk header) yields no bytes. An empty buffer
        // would be serialized as a zero-size chunk, which ends a chunked body early; without
        // data the serializer waits for more (or writes the last chunk when the body is done).
        res.body().data = res.body().size > 0 ? buf.data() : nullptr;
        res.body().more = !p.is_done();
        result.bytes += res.body().size;
      } else {
        res.body().data = nullptr;
        res.body().size = 0;
      }
      auto [wec2, wn2] = co_await http::async_write(client, sr, use_nothrow);
      if (wec2 == http::error::need_buffer) {
        wec2 = {};
      }
      if (wec2) {
        write_failed = true;
        break;
      }
    } while (!p.is_done() || !sr.is_done());
  }
  watch.stop();
  const bool client_gone = write_failed || watch.gone();

  if (client_gone) {
    result.outcome = ForwardResult::Outcome::client_gone;
    result.keep_alive = false;
  } else if (result.outcome == ForwardResult::Outcome::upstream_failed) {
    result.keep_alive = false;
  } else if (upstream_keep_alive && p.is_done()) {
    pool.release(std::move(conn));
  }
  co_return result;
}

}  // namespace

task<ForwardResult> forward(beast::tcp_stream& client, Pool& pool,
                            const http::request<http::string_body>& up_req, ForwardOptions r) {
  // A reused connection may have been closed by the upstream meanwhile: if it fails before any
  // response byte, the request goes again on a fresh connection (it cannot have been processed:
  // a keep-alive server closes only between requests).
  for (int attempt = 0;; ++attempt) {
    auto [cec, conn] = co_await pool.acquire();
    if (cec) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::connect_failed,
                              .error = cec.message()};
    }
    auto ex = std::make_unique<Exchange>(std::move(conn), up_req.method());
    error_code wec;
    auto send = [&]() -> task<error_code> {
      std::tie(wec, std::ignore) = co_await http::async_write(ex->conn.stream, up_req, use_nothrow);
      if (wec) {
        co_return wec;
      }
      auto [ec, n] =
          co_await http::async_read_header(ex->conn.stream, ex->buf, ex->parser, use_nothrow);
      co_return ec;
    };
    ClientWatch watch(client, ex->conn.stream);
    const error_code hec = co_await send();
    watch.stop();
    if (watch.gone()) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::client_gone, .error = {}};
    }
    if (hec) {
      // As Go's http.Transport does: a reused connection that failed before any response byte
      // was closed by the server as idle; the request goes once more on a fresh one.
      if (ex->conn.reused && attempt == 0 && !ex->parser.got_some()) {
        continue;
      }
      co_return ForwardResult{.outcome = wec && !ex->conn.reused
                                             ? ForwardResult::Outcome::connect_failed
                                             : ForwardResult::Outcome::upstream_failed,
                              .error = hec.message()};
    }
    co_return co_await relay_response(client, pool, *ex, r);
  }
}

task<ForwardResult> forward_streamed(beast::tcp_stream& client, beast::flat_buffer& client_buf,
                                     http::request_parser<http::buffer_body>& in,
                                     beast::tcp_stream stream, Pool& pool, ForwardOptions r) {
  auto ex = std::make_unique<Exchange>(Connection{std::move(stream), false}, in.get().method());
  auto& up = ex->conn.stream;
  const bool chunked = in.get().chunked();
  {
    http::request<http::empty_body> head{in.get().base()};
    http::request_serializer<http::empty_body> sr{head};
    auto [ec, n] = co_await http::async_write_header(up, sr, use_nothrow);
    if (ec) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::upstream_failed,
                              .error = ec.message()};
    }
  }
  std::array<char, kChunk> buf;
  while (!in.is_done()) {
    auto& body = in.get().body();
    body.data = buf.data();
    body.size = buf.size();
    client.expires_after(60s);  // an idle limit per read, not a total one
    auto [ec, n] = co_await http::async_read_some(client, client_buf, in, use_nothrow);
    client.expires_never();
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::request_body_failed,
                              .error = ec == http::error::body_limit
                                           ? "request body exceeds limits.max_body_bytes"
                                           : "request body: " + ec.message()};
    }
    const std::size_t got = buf.size() - body.size;
    if (got == 0) {
      continue;
    }
    error_code wec;
    if (chunked) {
      const auto size_line = fmt::format("{:x}\r\n", got);
      const std::array<net::const_buffer, 3> pieces = {
          net::buffer(size_line), net::buffer(buf.data(), got), net::buffer("\r\n", 2)};
      std::tie(wec, std::ignore) = co_await net::async_write(up, pieces, use_nothrow);
    } else {
      std::tie(wec, std::ignore) =
          co_await net::async_write(up, net::buffer(buf.data(), got), use_nothrow);
    }
    if (wec) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::upstream_failed,
                              .error = wec.message()};
    }
  }
  if (chunked) {
    auto [ec, n] = co_await net::async_write(up, net::buffer("0\r\n\r\n", 5), use_nothrow);
    if (ec) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::upstream_failed,
                              .error = ec.message()};
    }
  }
  auto read_head = [&]() -> task<error_code> {
    auto [ec, n] = co_await http::async_read_header(up, ex->buf, ex->parser, use_nothrow);
    co_return ec;
  };
  ClientWatch watch(client, up);
  const error_code hec = co_await read_head();
  watch.stop();
  if (watch.gone()) {
    co_return ForwardResult{.outcome = ForwardResult::Outcome::client_gone, .error = {}};
  }
  if (hec) {
    co_return ForwardResult{.outcome = ForwardResult::Outcome::upstream_failed,
                            .error = hec.message()};
  }
  co_return co_await relay_response(client, pool, *ex, r);
}

}  // namespace va::upstream
