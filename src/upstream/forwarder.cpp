#include "upstream/forwarder.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <boost/container/small_vector.hpp>
#include <span>
#include <tuple>

#include "core/deadline.hpp"
#include "core/log.hpp"
#include "wire/wire.hpp"

namespace va::upstream {
namespace {

using namespace net::experimental::awaitable_operators;

// The names a message's Connection headers nominate (RFC 9110 §7.6.1; a message may have more
// than one), split once: each field of the message is checked against them, and Beast's
// token_list would parse the lists again for each (bench/README.md, "Tenth round"). Up to eight
// are kept in place; a longer list spills to the heap.
class Nominated {
 public:
  explicit Nominated(const wire::Fields& fields) {
    for (const auto& f : fields) {
      if (f.name() == http::field::connection) {
        for (const auto token : http::token_list(f.value())) {
          tokens_.emplace_back(token.data(), token.size());
        }
      }
    }
  }
  bool contains(std::string_view name) const {
    return std::any_of(tokens_.begin(), tokens_.end(),
                       [name](std::string_view t) { return beast::iequals(t, name); });
  }

 private:
  boost::container::small_vector<std::string_view, 8> tokens_;
};

// A field that applies to one connection only (RFC 9110 §7.6.1): the fixed list, and those the
// message's own Connection header names. A Connection header may not nominate the message's
// framing or Host away: that would let a client make the upstream read its body as further
// requests (callers handle those three before asking).
template <class Field>
bool hop_by_hop(const Field& f, const Nominated& nominated) {
  return is_hop_by_hop(f.name(), f.name_string()) || nominated.contains(f.name_string());
}

// Watches the client while the upstream works on its request: a client that closes its
// connection cuts the upstream one, so vLLM aborts the generation, even before it has sent a
// byte. A plain completion handler rather than a coroutine run beside the exchange: one wait per
// exchange, no coroutine frames. Bytes from the client (a pipelined request) end the watch, since
// only a write can tell then. Started only when the exchange is about to wait for the upstream
// (start()): an answer that is already there needs no watch, and the watch costs a syscall.
// stop() before the upstream stream goes away.
class ClientWatch {
 public:
  ClientWatch(Socket& client, Socket& upstream) : client_(client), upstream_(upstream) {}
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  ~ClientWatch() { stop(); }

  // Once: a watch that was stopped stays stopped. Its state exists only once it starts.
  void start() {
    if (state_) {
      return;
    }
    state_ = std::make_shared<State>(State{&upstream_});
    // A peek, not async_wait: a wait always re-registers the socket with epoll (a syscall per
    // exchange); a read is first tried at once and then queued without one.
    client_.async_receive(
        net::buffer(&state_->byte, 1), Socket::message_peek,
        [s = state_](error_code ec, std::size_t n) {
          if (!s->active || ec == net::error::operation_aborted || (!ec && n > 0)) {
            return;  // stopped, or pipelined bytes: only a write can tell now
          }
          // End of stream (the client's FIN) or an error (a reset): the client left.
          s->gone = true;
          error_code ignored;
          s->upstream->shutdown(Socket::shutdown_both, ignored);
          s->upstream->cancel(ignored);
        });
  }
  void stop() {
    if (state_ && state_->active) {
      state_->active = false;
      error_code ignored;
      client_.cancel(ignored);  // the handler runs later, sees inactive, does nothing
    }
  }
  bool gone() const { return state_ && state_->gone; }

 private:
  struct State {
    Socket* upstream;
    bool active = true;
    bool gone = false;
    char byte = 0;  // the peek's buffer
  };
  Socket& client_;
  Socket& upstream_;
  std::shared_ptr<State> state_;  // shared with the handler, which may run after we are gone
};

// What a failed write to the client means. One that made no progress for send_timeout (the
// client stopped reading) has the client's connection reset rather than closed, as nginx's
// reset_timedout_connection does: a close would leave the unsent bytes queued in the kernel for a
// window that never opens.
ForwardResult::Outcome client_failure(Socket& client, error_code ec) {
  if (ec != net::error::timed_out) {
    return ForwardResult::Outcome::client_gone;
  }
  error_code ignored;
  client.set_option(net::socket_base::linger(true, 0), ignored);
  return ForwardResult::Outcome::client_send_timeout;
}

// Writes the error event vLLM itself sends when a stream breaks, then ends the chunked body.
task<void> end_broken_stream(Socket& client, const wire::Patience& patience) {
  static constexpr std::string_view kTail =
      "data: {\"error\":{\"message\":\"upstream connection lost mid-stream\",\"type\":"
      "\"BadGatewayError\",\"param\":null,\"code\":502}}\n\ndata: [DONE]\n\n";
  const wire::ChunkFrame frame(kTail.size());
  const std::array<net::const_buffer, 4> pieces = {frame.head(), net::buffer(kTail),
                                                   net::buffer(wire::kChunkEnd),
                                                   net::buffer(wire::kLastChunk)};
  co_await wire::write(client, pieces, patience);
}

// Whether the backend's upstream_headers set a field named `name` (the client's is dropped).
bool replaced(const Target& t, beast::string_view name) {
  return std::any_of(t.headers.begin(), t.headers.end(),
                     [&](const auto& h) { return beast::iequals(h.first, name); });
}

}  // namespace

std::pmr::string upstream_head(const http::request_header<wire::Fields>& req, const Target& t,
                               std::string_view client_address,
                               std::optional<std::uint64_t> content_length) {
  std::pmr::string out(req.get_allocator());
  {  // the writer cuts `out` to its size when it goes
    // Room for what is kept and for the fields added below; the rest grows.
    wire::HeadWriter w(out, wire::fields_size(req) + req.target().size() + t.host_header.size() +
                                client_address.size() + 160);
    wire::append_request_line(w, req, 11);
    const Nominated nominated(req);
    bool upgrade = false;
    std::optional<std::string_view> host;
    std::pmr::string xff(out.get_allocator());
    for (const auto& f : req) {
      const auto name = f.name_string();
      if (!t.headers.empty() && replaced(t, name)) {
        continue;
      }
      switch (f.name()) {
        case http::field::host:
          host = f.value();
          continue;
        case http::field::content_length:
        case http::field::transfer_encoding:
          continue;  // the framing is written below
        case http::field::upgrade:
          upgrade = true;
          break;  // kept: a tunnel needs it
        case http::field::unknown:
          if (beast::iequals(name, "x-forwarded-for")) {
            xff += xff.empty() ? "" : ", ";
            xff += f.value();
            continue;
          }
          if (beast::iequals(name, "x-forwarded-proto") ||
              beast::iequals(name, "x-forwarded-host")) {
            continue;
          }
          [[fallthrough]];
        default:
          if (hop_by_hop(f, nominated)) {
            continue;
          }
      }
      wire::append_field(w, name, f.value());
    }
    for (const auto& [name, value] : t.headers) {
      wire::append_field(w, name, value);
    }
    wire::append_field(w, "Host", t.host_header);
    if (host) {
      wire::append_field(w, "X-Forwarded-Host", *host);
    }
    xff += xff.empty() ? "" : ", ";
    xff += client_address;
    wire::append_field(w, "X-Forwarded-For", xff);
    wire::append_field(w, "X-Forwarded-Proto", "http");
    if (upgrade) {
      wire::append_field(w, "Connection", "upgrade");
    }
    if (content_length) {
      wire::append_field(w, "Content-Length", std::to_string(*content_length));
    }
    w += "\r\n";
  }
  return out;
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

// The response head for the client: the upstream's, with its hop-by-hop fields out (a 101 keeps
// its Connection: upgrade and Upgrade: the client needs them), the client connection's own
// framing and keep-alive, and Server-Timing after a wake. In the request's memory.
std::pmr::string client_head(const http::response_header<wire::Fields>& res, bool switching,
                             bool chunked, bool keep_alive, std::optional<double> wake_ms) {
  std::pmr::string out(res.get_allocator());
  {  // the writer cuts `out` to its size when it goes
    // Room for the upstream's fields and those added below; the rest grows.
    wire::HeadWriter w(out, wire::fields_size(res) + res.reason().size() + 96);
    wire::append_status_line(w, res);
    const Nominated nominated(res);
    for (const auto& f : res) {
      if (!switching) {
        const auto n = f.name();
        if (n == http::field::transfer_encoding) {
          continue;  // written below
        }
        if (n != http::field::content_length && n != http::field::host &&
            hop_by_hop(f, nominated)) {
          continue;
        }
      }
      wire::append_field(w, f.name_string(), f.value());
    }
    if (!switching) {
      if (chunked) {
        wire::append_field(w, "Transfer-Encoding", "chunked");
      }
      // As Beast's keep_alive() writes it: 1.1 closes by saying so, 1.0 keeps by saying so.
      if (res.version() >= 11 && !keep_alive) {
        wire::append_field(w, "Connection", "close");
      } else if (res.version() < 11 && keep_alive) {
        wire::append_field(w, "Connection", "keep-alive");
      }
    }
    if (wake_ms) {
      wire::append_field(w, "Server-Timing",
                         "wake;dur=" + std::to_string(static_cast<long long>(*wake_ms)));
    }
    w += "\r\n";
  }
  return out;
}

// One request/response exchange with the upstream. Its two blocks: `in` holds upstream bytes as
// read (room for a whole small response in one read), `out` the body bytes parsed from them. The
// response's fields go in the request's memory (`alloc`).
struct Exchange {
  Exchange(Pool& pool, Connection c, http::verb method, wire::Alloc alloc)
      : pool(pool),
        conn(std::move(c)),
        buf(in.data(), wire::Block::kSize),
        parser(std::piecewise_construct, std::make_tuple(), std::make_tuple(alloc)),
        silence(conn.stream->silence) {
    parser.body_limit(boost::none);
    if (method == http::verb::head) {
      parser.skip(true);
    }
  }
  Socket& socket() { return conn.stream->socket; }
  // The upstream is expected to answer from now on (pause() while it is not our turn to read).
  void expect_upstream() { silence.watch(socket(), Clock::now() + pool.upstream_timeout()); }
  // Takes what the upstream has sent so far into `buf`, without waiting: false when it has sent
  // nothing yet (an error or its close counts as an answer; the read that follows reports it).
  bool take_ready() {
    error_code ec;
    wire::make_non_blocking(socket(), ec);
    const auto n = socket().read_some(buf.prepare(buf.max_size() - buf.size()), ec);
    buf.commit(n);
    return n > 0 || (ec && ec != net::error::would_block && ec != net::error::try_again);
  }
  Pool& pool;
  Connection conn;
  wire::Block in;
  wire::Block out;
  beast::flat_static_buffer_base buf;
  http::response_parser<http::buffer_body, wire::Alloc> parser;
  MovingDeadline& silence;  // the connection's
};

// What a tunnel's two directions share: the client connection's patience for writes to the
// client (limits.send_timeout), and the upstream connection's own deadline as the tunnel's idle
// clock (backends[].upstream_timeout), moved on by every byte either way. One timer for both
// directions, set again only when it fires. It watches a socket that a direction reads from (the
// upstream, or the client once the upstream has half-closed), and the upstream while a write to
// it waits: whichever it cuts, that direction ends, and cut() ends the other.
struct Tunnel {
  Socket& client;
  Socket& up;
  wire::Patience to_client;
  MovingDeadline& quiet;
  Clock::duration idle;
  Socket* watched = &up;
  bool idle_cut = false;  // closed because nothing moved for `idle`
  bool too_slow = false;  // closed because the client took nothing for send_timeout

  void moved() { quiet.watch(*watched, Clock::now() + idle); }
  // Ends both directions: whatever either waits for, on either socket, returns.
  void cut() {
    error_code ignored;
    for (Socket* s : {&client, &up}) {
      s->shutdown(Socket::shutdown_both, ignored);
      s->cancel(ignored);
    }
  }
};

// One direction of a tunnel. Its peer's close is passed on as a half-close and the other
// direction goes on; anything else (an error, either deadline) ends both.
task<void> pipe_bytes(Socket& from, Socket& to, Tunnel& t) {
  wire::Block buf;
  error_code ec;
  error_code wec;
  while (!ec && !wec) {
    std::size_t n = 0;
    std::tie(ec, n) = co_await from.async_read_some(buf.buffer(), use_nothrow);
    if (n > 0) {
      t.moved();
      const std::array<net::const_buffer, 1> piece = {net::buffer(buf.data(), n)};
      wec = co_await wire::write(to, piece,
                                 &to == &t.client ? t.to_client : wire::Patience{t.quiet, t.idle});
      if (!wec) {
        t.moved();  // (a write that waited paused the clock)
      }
    }
  }
  if (ec == net::error::eof && !wec) {
    error_code ignored;
    to.shutdown(Socket::shutdown_send, ignored);
    t.watched = &to;  // what the other direction reads from
    t.moved();
    co_return;
  }
  t.too_slow = t.too_slow || (&to == &t.client && wec == net::error::timed_out);
  t.idle_cut = t.idle_cut || t.quiet.expired();
  t.cut();
}

// WebSocket and friends, after a 101: what came with its head, then bytes both ways until either
// side closes, or until nothing moves either way for upstream_timeout. A coroutine of its own, so
// that answer()'s frame, which every exchange allocates, does not carry what only a tunnel needs
// (bench/README.md, "Ninth round").
task<ForwardResult::Outcome> tunnel(Socket& client, Exchange& ex, const wire::Patience& to_client) {
  Tunnel t{client, ex.socket(), to_client, ex.silence, ex.pool.upstream_timeout()};
  if (ex.buf.size() > 0) {
    const std::array<net::const_buffer, 1> pieces = {ex.buf.data()};
    if (auto ec = co_await wire::write(client, pieces, to_client)) {
      t.cut();
      co_return client_failure(client, ec);
    }
  }
  t.moved();
  co_await (pipe_bytes(client, t.up, t) && pipe_bytes(t.up, client, t));
  ex.silence.pause();
  if (t.too_slow) {
    co_return client_failure(client, net::error::timed_out);
  }
  co_return t.idle_cut ? ForwardResult::Outcome::tunnel_idle : ForwardResult::Outcome::done;
}

std::string silence_error(const Exchange& ex) {
  return fmt::format("sent nothing for {} (backends[].upstream_timeout)",
                     ex.pool.upstream_timeout());
}

// Whether a failure before any response byte may be sent again on a fresh connection: as Go's
// http.Transport does, a reused connection that failed so was closed by the server as idle (a
// keep-alive server closes only between requests, so the request cannot have been processed).
bool stale(const Exchange& ex) {
  return ex.conn.reused && !ex.parser.got_some() && !ex.silence.expired();
}

// What a failure before the response head is: a timeout, something to send again, or not.
ForwardResult head_failure(const Exchange& ex, error_code read_ec, error_code write_ec) {
  if (ex.silence.expired()) {
    return {.outcome = ForwardResult::Outcome::upstream_timeout, .error = silence_error(ex)};
  }
  return {.outcome = write_ec && !ex.conn.reused ? ForwardResult::Outcome::connect_failed
                                                 : ForwardResult::Outcome::upstream_failed,
          .error = read_ec.message()};
}

// The request went out on `ex`: reads the response head (after the others ran, see
// wire::let_others_run; only an upstream that has not answered yet makes the client watched),
// then relays the response to the client, piece by piece as it is read, while `watch` looks for
// the client to leave. One coroutine for both, so an exchange costs one frame here. `again` (when
// given) is set instead of a result when the connection was stale(): the caller sends again.
task<ForwardResult> answer(Socket& client, Exchange& ex, const ForwardOptions& r,
                           ClientWatch& watch, bool* again) {
  if (wire::InProgress::others(true)) {
    co_await wire::let_others_run();
    if (!ex.take_ready()) {
      watch.start();
    }
  } else {
    watch.start();  // alone on this thread: the upstream cannot have answered yet
  }
  error_code hec;
  if (!wire::parse_buffered(ex.buf, ex.parser, wire::Until::header, hec)) {
    ex.expect_upstream();  // only a read from the socket waits, so only it needs the deadline
    hec = co_await wire::read(ex.socket(), ex.buf, ex.parser, wire::Until::header);
    ex.silence.pause();
  }
  if (watch.gone()) {
    co_return ForwardResult{.outcome = ForwardResult::Outcome::client_gone, .error = {}};
  }
  if (hec) {
    if (again != nullptr && stale(ex)) {
      *again = true;
      co_return ForwardResult{};
    }
    co_return head_failure(ex, hec, {});
  }

  ForwardResult result;
  auto& up = ex.socket();
  auto& p = ex.parser;
  auto& res = p.get();
  result.status = res.result_int();
  // The parser's own flags, not the header's keep_alive() and chunked(): those look the fields
  // up again.
  const bool upstream_keep_alive = p.keep_alive();
  const bool switching = res.result() == http::status::switching_protocols;
  result.keep_alive = r.client_keep_alive && !switching;
  bool chunked = !switching && p.chunked();
  if (!switching) {
    if (r.client_version < 11 && chunked) {
      chunked = false;  // HTTP/1.0 has no chunked coding: the close ends the body
      result.keep_alive = false;
    }
    if (p.need_eof()) {
      result.keep_alive = false;  // the upstream's body ends with its close; so must ours
    }
  }
  const auto head = client_head(res, switching, chunked, result.keep_alive, r.wake_ms);

  // When body bytes came with the head, head and body go out in one write (the relay's first);
  // otherwise the head goes at once, so that a client sees it before a slow first token.
  bool head_pending = true;
  if (switching || ex.buf.size() == 0 || p.is_done()) {
    const std::array<net::const_buffer, 1> pieces = {net::buffer(head)};
    auto w = wire::write_at_once(client, pieces);
    if (!w.done) {
      w.ec = co_await wire::write_rest(client, pieces, w.written, r.client);
    }
    if (w.ec) {
      result.outcome = client_failure(client, w.ec);
      co_return result;
    }
    head_pending = false;
    result.response_started = true;
  }

  if (switching) {
    watch.stop();
    result.outcome = co_await tunnel(client, ex, r.client);
    result.keep_alive = false;
    if (result.outcome == ForwardResult::Outcome::tunnel_idle) {
      result.error = fmt::format("no byte either way for {} (backends[].upstream_timeout)",
                                 ex.pool.upstream_timeout());
    }
    co_return result;
  }

  bool write_failed = false;  // a write to the client failed (result.outcome says how)
  // The rest of the body may be long coming (a generation): the client is watched from the first
  // read that goes to the socket.
  auto start_watch = [&watch] { watch.start(); };
  while (!p.is_done()) {
    res.body().data = ex.out.data();
    res.body().size = wire::Block::kSize;
    error_code ec;
    if (!wire::parse_buffered(ex.buf, p, wire::Until::some, ec)) {
      ex.expect_upstream();
      ec = co_await wire::read(up, ex.buf, p, wire::Until::some, &wire::accept_any_head,
                               start_watch);
      ex.silence.pause();
    }
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      if (!watch.gone()) {
        result.outcome = ex.silence.expired() ? ForwardResult::Outcome::upstream_timeout
                                              : ForwardResult::Outcome::upstream_failed;
        result.error = ex.silence.expired() ? silence_error(ex) : ec.message();
        // Before the head went out the client gets the proxy's 502 instead; after it, a chunked
        // stream ends with vLLM's own error event.
        if (chunked && !head_pending) {
          co_await end_broken_stream(client, r.client);
        }
      }
      break;
    }
    const std::size_t got = wire::Block::kSize - res.body().size;
    result.bytes += got;
    // A read that parsed only framing (a chunk header) yields no bytes: nothing to write unless
    // the head is still waiting or the body just ended.
    std::array<net::const_buffer, 5> pieces;
    std::size_t k = 0;
    if (head_pending) {
      pieces[k++] = net::buffer(head);
    }
    const wire::ChunkFrame frame(chunked ? got : 0);
    if (got > 0) {
      if (chunked) {
        pieces[k++] = frame.head();
      }
      pieces[k++] = net::buffer(ex.out.data(), got);
      if (chunked) {
        pieces[k++] = net::buffer(wire::kChunkEnd);
      }
    }
    if (chunked && p.is_done()) {
      pieces[k++] = net::buffer(wire::kLastChunk);
    }
    if (k == 0) {
      continue;
    }
    const auto some = std::span(pieces.data(), k);
    auto w = wire::write_at_once(client, some);
    if (!w.done) {
      w.ec = co_await wire::write_rest(client, some, w.written, r.client);
    }
    if (w.ec) {
      write_failed = true;
      result.outcome = client_failure(client, w.ec);
      break;
    }
    head_pending = false;
    result.response_started = true;
  }
  watch.stop();
  const bool client_gone = write_failed || watch.gone();

  if (client_gone) {
    if (!write_failed) {
      result.outcome = ForwardResult::Outcome::client_gone;
    }
    result.keep_alive = false;
  } else if (result.outcome != ForwardResult::Outcome::done) {
    result.keep_alive = false;
  } else if (upstream_keep_alive && p.is_done()) {
    ex.pool.release(std::move(ex.conn));
  }
  co_return result;
}

}  // namespace

task<ForwardResult> forward(Socket& client, Pool& pool, const UpstreamRequest& up_req,
                            ForwardOptions r) {
  const std::array<net::const_buffer, 2> request = {net::buffer(up_req.head),
                                                    net::buffer(up_req.body)};
  // A reused connection may have been closed by the upstream meanwhile: if it fails before any
  // response byte, the request goes again on a fresh connection (it cannot have been processed:
  // a keep-alive server closes only between requests).
  for (int attempt = 0;; ++attempt) {
    auto idle = pool.take_idle(client.get_executor());
    if (!idle) {
      auto [cec, stream] = co_await pool.open();
      if (cec) {
        co_return ForwardResult{.outcome = ForwardResult::Outcome::connect_failed,
                                .error = cec.message()};
      }
      idle.emplace(Connection{std::move(stream), false});
    }
    Exchange ex(pool, std::move(*idle), up_req.method, up_req.head.get_allocator());
    ClientWatch watch(client, ex.socket());
    auto w = wire::write_at_once(ex.socket(), request);
    if (!w.done) {
      ex.expect_upstream();  // a write that waits is bounded by the upstream's silence too
      w.ec = co_await wire::write_rest(ex.socket(), request, w.written);
      ex.silence.pause();
    }
    if (w.ec) {
      if (attempt == 0 && stale(ex)) {
        continue;
      }
      co_return head_failure(ex, w.ec, w.ec);
    }
    bool again = false;
    auto result = co_await answer(client, ex, r, watch, attempt == 0 ? &again : nullptr);
    if (again) {
      continue;
    }
    co_return result;
  }
}

task<ForwardResult> forward_streamed(Socket& client, StreamedBody body,
                                     std::string_view client_address, Stream upstream, Pool& pool,
                                     const ForwardOptions& r) {
  auto& in = body.parser;
  Exchange ex(pool, Connection{std::move(upstream), false}, in.get().method(),
              in.get().get_allocator());
  auto& up = ex.socket();
  {
    const auto head = upstream_head(in.get().base(), pool.target(), client_address,
                                    std::optional<std::uint64_t>(*in.content_length()));
    const std::array<net::const_buffer, 1> pieces = {net::buffer(head)};
    if (auto ec = co_await wire::write(up, pieces)) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::upstream_failed,
                              .error = ec.message()};
    }
  }
  // The body passes through the exchange's `out` block: it is not needed before the response.
  while (!in.is_done()) {
    auto& piece = in.get().body();
    piece.data = ex.out.data();
    piece.size = wire::Block::kSize;
    body.deadline.watch(client, Clock::now() + body.idle);
    auto ec = co_await wire::read(client, body.buf, in, wire::Until::some);
    body.deadline.pause();
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::request_body_failed,
                              .error = "request body: " + ec.message(),
                              .body_error = ec};
    }
    const std::size_t got = wire::Block::kSize - piece.size;
    if (got == 0) {
      continue;
    }
    const std::array<net::const_buffer, 1> pieces = {net::buffer(ex.out.data(), got)};
    if (auto wec = co_await wire::write(up, pieces)) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::upstream_failed,
                              .error = wec.message()};
    }
  }
  ClientWatch watch(client, up);
  co_return co_await answer(client, ex, r, watch, nullptr);
}

}  // namespace va::upstream
