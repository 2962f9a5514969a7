#include "upstream/forwarder.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <array>
#include <span>
#include <tuple>

#include "core/deadline.hpp"
#include "core/log.hpp"
#include "upstream/client_watch.hpp"
#include "upstream/heads.hpp"
#include "wire/wire.hpp"

namespace va::upstream {
namespace {

using namespace net::experimental::awaitable_operators;

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
  // The body's next piece is parsed into `out`; piece_size() is then how much of it came.
  void next_piece() {
    parser.get().body().data = out.data();
    parser.get().body().size = wire::Block::kSize;
  }
  std::size_t piece_size() const { return wire::Block::kSize - parser.get().body().size; }
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
  error_code write_error;
  while (!ec && !write_error) {
    std::size_t n = 0;
    std::tie(ec, n) = co_await from.async_read_some(buf.buffer(), use_nothrow);
    if (n > 0) {
      t.moved();
      const std::array<net::const_buffer, 1> piece = {net::buffer(buf.data(), n)};
      write_error = co_await wire::write(
          to, piece, &to == &t.client ? t.to_client : wire::Patience{t.quiet, t.idle});
      if (!write_error) {
        t.moved();  // (a write that waited paused the clock)
      }
    }
  }
  if (ec == net::error::eof && !write_error) {
    error_code ignored;
    to.shutdown(Socket::shutdown_send, ignored);
    t.watched = &to;  // what the other direction reads from
    t.moved();
    co_return;
  }
  t.too_slow = t.too_slow || (&to == &t.client && write_error == net::error::timed_out);
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

// What a head that did not come means: a result, or none with `*again` set when the connection
// was stale() and `again` is given (the caller sends again).
ForwardResult no_head(const Exchange& ex, error_code head_error, bool* again) {
  if (again != nullptr && stale(ex)) {
    *again = true;
    return {};
  }
  return head_failure(ex, head_error, {});
}

// A response on its way to the client, from the upstream's head to its end: what the steps of
// answer() share. relay_head() decides, from the upstream's head, the framing towards the client
// and writes the client's head; the relay passes the body on (pieces(), wrote(), upstream_broke());
// finish() settles the result and the upstream connection. Plain functions around answer()'s one
// coroutine: as coroutines of their own they would cost each exchange more frames (bench/README.md,
// "Ninth round").
struct Relay {
  // Whether the head goes out alone, at once, so that a client sees it before a slow first token.
  // When body bytes came with it, head and body go out in one write (the relay's first).
  bool head_alone(const Exchange& ex) const {
    return switching || ex.buf.size() == 0 || ex.parser.is_done();
  }

  // The relay's next write, in `out`: the head while it waits, `body` (the bytes just parsed, in
  // their chunk's framing towards a chunked client) and the last chunk when the body is `done`.
  // Empty when a read parsed only framing (a chunk header).
  std::span<const net::const_buffer> pieces(std::array<net::const_buffer, 5>& out,
                                            const wire::ChunkFrame& frame, net::const_buffer body,
                                            bool done) const {
    std::size_t k = 0;
    if (head_pending) {
      out[k++] = net::buffer(head);
    }
    if (body.size() > 0) {
      if (chunked) {
        out[k++] = frame.head();
      }
      out[k++] = body;
      if (chunked) {
        out[k++] = net::buffer(wire::kChunkEnd);
      }
    }
    if (chunked && done) {
      out[k++] = net::buffer(wire::kLastChunk);
    }
    return std::span(out.data(), k);
  }

  // What a write to the client did: false when it failed (`result.outcome` says how).
  bool wrote(Socket& client, error_code client_error) {
    if (client_error) {
      write_failed = true;
      result.outcome = client_failure(client, client_error);
      return false;
    }
    head_pending = false;
    result.response_started = true;
    return true;
  }

  // A read of the body failed: true when the client, still there, is to get vLLM's own error
  // event (a chunked stream whose head went out). Before the head went out the client gets the
  // proxy's 502 instead.
  bool upstream_broke(const Exchange& ex, const ClientWatch& watch, error_code upstream_error) {
    if (watch.gone()) {
      return false;
    }
    result.outcome = ex.silence.expired() ? ForwardResult::Outcome::upstream_timeout
                                          : ForwardResult::Outcome::upstream_failed;
    result.error = ex.silence.expired() ? silence_error(ex) : upstream_error.message();
    return chunked && !head_pending;
  }

  // After a 101, once the tunnel has ended (`result.outcome` says how).
  ForwardResult tunnelled(const Exchange& ex) {
    result.keep_alive = false;
    if (result.outcome == ForwardResult::Outcome::tunnel_idle) {
      result.error = fmt::format("no byte either way for {} (backends[].upstream_timeout)",
                                 ex.pool.upstream_timeout());
    }
    return std::move(result);
  }

  // The finish step: how the relay ended; an upstream connection that may serve another exchange
  // goes back to the pool.
  ForwardResult finish(Exchange& ex, ClientWatch& watch) {
    watch.stop();
    if (write_failed || watch.gone()) {
      if (!write_failed) {
        result.outcome = ForwardResult::Outcome::client_gone;
      }
      result.keep_alive = false;
    } else if (result.outcome != ForwardResult::Outcome::done) {
      result.keep_alive = false;
    } else if (upstream_keep_alive && ex.parser.is_done()) {
      ex.pool.release(std::move(ex.conn));
    }
    return std::move(result);
  }

  ForwardResult result;
  std::pmr::string head;   // client_head(), in the request's memory
  bool switching = false;  // a 101: the exchange becomes a tunnel
  bool chunked = false;    // towards the client
  bool upstream_keep_alive = false;
  bool head_pending = true;   // the head has not gone out yet
  bool write_failed = false;  // a write to the client failed (result.outcome says how)
};

// The head step: the response's framing towards the client, from the upstream's head (the
// parser's own flags, not the header's keep_alive() and chunked(): those look the fields up
// again), and the client's head.
Relay relay_head(const Exchange& ex, const ForwardOptions& r) {
  const auto& p = ex.parser;
  const auto& res = p.get();
  const bool switching = res.result() == http::status::switching_protocols;
  bool keep_alive = r.client_keep_alive && !switching;
  bool chunked = !switching && p.chunked();
  if (!switching) {
    if (r.client_version < 11 && chunked) {
      chunked = false;  // HTTP/1.0 has no chunked coding: the close ends the body
      keep_alive = false;
    }
    if (p.need_eof()) {
      keep_alive = false;  // the upstream's body ends with its close; so must ours
    }
  }
  return Relay{.result = {.status = res.result_int(), .keep_alive = keep_alive, .error = {}},
               .head = client_head(res, switching, chunked, keep_alive, r.wake_ms),
               .switching = switching,
               .chunked = chunked,
               .upstream_keep_alive = p.keep_alive()};
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
  error_code head_error;
  if (!wire::parse_buffered(ex.buf, ex.parser, wire::Until::header, head_error)) {
    ex.expect_upstream();  // only a read from the socket waits, so only it needs the deadline
    head_error = co_await wire::read(ex.socket(), ex.buf, ex.parser, wire::Until::header);
    ex.silence.pause();
  }
  if (watch.gone()) {
    co_return ForwardResult{.outcome = ForwardResult::Outcome::client_gone, .error = {}};
  }
  if (head_error) {
    co_return no_head(ex, head_error, again);
  }

  Relay relay = relay_head(ex, r);
  if (relay.head_alone(ex)) {
    const std::array<net::const_buffer, 1> pieces = {net::buffer(relay.head)};
    auto w = wire::write_at_once(client, pieces);
    if (!w.done) {
      w.ec = co_await wire::write_rest(client, pieces, w.written, r.client);
    }
    if (!relay.wrote(client, w.ec)) {
      co_return std::move(relay.result);
    }
  }
  if (relay.switching) {
    watch.stop();
    // (In a statement of its own: awaited inside the call, the outcome took a slot of its own in
    // this frame.)
    relay.result.outcome = co_await tunnel(client, ex, r.client);
    co_return relay.tunnelled(ex);
  }

  // The rest of the body may be long coming (a generation): the client is watched from the first
  // read that goes to the socket.
  auto start_watch = [&watch] { watch.start(); };
  while (!ex.parser.is_done()) {
    ex.next_piece();
    error_code upstream_error;
    if (!wire::parse_buffered(ex.buf, ex.parser, wire::Until::some, upstream_error)) {
      ex.expect_upstream();
      upstream_error = co_await wire::read(ex.socket(), ex.buf, ex.parser, wire::Until::some,
                                           &wire::accept_any_head, start_watch);
      ex.silence.pause();
    }
    if (upstream_error && upstream_error != http::error::need_buffer) {
      if (relay.upstream_broke(ex, watch, upstream_error)) {
        co_await end_broken_stream(client, r.client);
      }
      break;
    }
    const std::size_t got = ex.piece_size();
    relay.result.bytes += got;
    std::array<net::const_buffer, 5> pieces;
    const wire::ChunkFrame frame(relay.chunked ? got : 0);
    const auto some =
        relay.pieces(pieces, frame, net::buffer(ex.out.data(), got), ex.parser.is_done());
    if (some.empty()) {
      continue;
    }
    auto w = wire::write_at_once(client, some);
    if (!w.done) {
      w.ec = co_await wire::write_rest(client, some, w.written, r.client);
    }
    if (!relay.wrote(client, w.ec)) {
      break;
    }
  }
  co_return relay.finish(ex, watch);
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
      auto [connect_error, stream] = co_await pool.open();
      if (connect_error) {
        co_return ForwardResult{.outcome = ForwardResult::Outcome::connect_failed,
                                .error = connect_error.message()};
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
    if (auto upstream_error = co_await wire::write(up, pieces)) {
      co_return ForwardResult{.outcome = ForwardResult::Outcome::upstream_failed,
                              .error = upstream_error.message()};
    }
  }
  ClientWatch watch(client, up);
  co_return co_await answer(client, ex, r, watch, nullptr);
}

}  // namespace va::upstream
