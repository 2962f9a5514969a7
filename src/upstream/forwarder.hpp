#pragma once
// Sends one client request to the upstream and relays the response back, chunk by chunk, never
// buffering a whole response: each upstream read is written to the client before the next one,
// so SSE events pass one by one. A client that leaves closes the upstream connection (that is how
// vLLM learns to abort the generation), and so does one that stops reading for
// limits.send_timeout. Upgrade (101) responses become a byte tunnel, closed after
// backends[].upstream_timeout with no byte either way.
#include <optional>
#include <string>

#include "core/deadline.hpp"
#include "upstream/pool.hpp"
#include "wire/wire.hpp"

namespace va::upstream {

struct ForwardOptions {
  // The client connection's deadline and limits.send_timeout: a write to the client that makes
  // no progress this long cuts the response (Outcome::client_send_timeout).
  wire::Patience client;
  bool client_keep_alive = true;
  unsigned client_version = 11;   // 10: no chunked coding towards the client
  std::optional<double> wake_ms;  // adds `Server-Timing: wake;dur=<ms>` when set
};

// A request whose body is in memory, ready to send.
struct UpstreamRequest {
  // upstream_head() (upstream/heads.hpp), in the request's memory (wire::Scratch), where the
  // response's fields go too.
  std::pmr::string head;
  std::string_view body;
  http::verb method;
};

struct ForwardResult {
  enum class Outcome {
    done,              // the whole response was relayed
    connect_failed,    // no request byte reached the upstream: safe to retry after a re-check
    upstream_failed,   // the upstream broke (before or after the status line: see response_started)
    upstream_timeout,  // the upstream sent nothing for upstream_timeout (before or after the head)
    client_gone,       // the client disconnected; the upstream connection was closed
    // The client took no byte for limits.send_timeout: its connection is reset, the upstream one
    // closed (the response is cut; nothing else can reach a client that does not read).
    client_send_timeout,
    tunnel_idle,  // a tunnel moved no byte either way for upstream_timeout: both sides closed
    request_body_failed,  // streamed body: the client body broke off or exceeded the limit
  };
  Outcome outcome = Outcome::done;
  unsigned status = 0;
  std::uint64_t bytes = 0;        // response body bytes written to the client
  bool response_started = false;  // the status line went to the client
  bool keep_alive = false;        // the client connection may serve another request
  std::string error;
  error_code body_error{};  // request_body_failed: the read's error (see the deadline)
};

// Sends a request whose body is in memory (retried once on a stale pooled connection).
task<ForwardResult> forward(Socket& client, Pool& pool, const UpstreamRequest& req,
                            ForwardOptions o);

// The client's side of a body still arriving: the connection's buffer and deadline, the parser
// that has its head, and how long each read may wait (an idle limit, not a total one).
struct StreamedBody {
  beast::flat_buffer& buf;
  http::request_parser<http::buffer_body, wire::Alloc>& parser;
  MovingDeadline& deadline;
  Clock::duration idle;
};

// Sends a request whose body is still arriving: the head (upstream_head()) goes upstream at
// once and each piece of body is passed on as it is read from the client. Only for a body with a
// Content-Length (a chunked one is read whole first, so a malformed chunk never reaches the
// upstream). `upstream` is a fresh connection (Pool::connect): a streamed body cannot be sent
// twice, so a stale pooled connection must not get the chance to fail mid-body. `o` by
// reference (the caller's, alive until this returns): by value it took this coroutine's frame
// past the 1 020 bytes Asio's frame cache recycles.
task<ForwardResult> forward_streamed(Socket& client, StreamedBody body,
                                     std::string_view client_address, Stream upstream, Pool& pool,
                                     const ForwardOptions& o);

}  // namespace va::upstream
