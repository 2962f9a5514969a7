// Fuzz target: the request front. The input is what a client sends on one connection. It is read
// by the session's own code (http/request.hpp) over a socket pair, request after request: head
// within the limits, refusals, the public paths, the API key, the body, the model. Every request
// the proxy would forward is written as it would go upstream and parsed back by a fresh parser:
// it must read as the same request (method, target, body) with one framing, and nothing after it.
// That is the smuggling oracle: no input may reach a backend in a form it could read differently.
// And the first request, when Beast's parser alone takes it whole from the same bytes, must be
// accepted with the same body, unless it is one the proxy refuses on purpose (obs-fold, a
// Transfer-Encoding other than chunked, a chunk extension over 4 KiB): the read loop around the
// parser must not lose or invent a request.
#include "http/request.hpp"

#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstdint>

#include "fuzz/check.hpp"
#include "upstream/heads.hpp"

namespace va::front {
namespace {

using Socket = net::local::stream_protocol::socket;

config::Limits fuzz_limits() {
  config::Limits l;
  l.max_header_bytes = 2048;  // small, so that the limits are reached
  l.max_body_bytes = 8192;
  return l;
}

// What went upstream, parsed back as a backend would.
void check_upstream(const Request& req) {
  // upstream_headers as a user sets them: the client's Authorization never goes up.
  const upstream::Target target{
      "backend", "8000", "backend:8000", {{"Authorization", "Bearer backend-key"}}};
  const auto head = upstream::upstream_head(req.base(), target, "127.0.0.1", upstream_length(req));
  const std::string wire = std::string(head) + std::string(req.body());
  http::request_parser<http::string_body> back;
  back.eager(true);
  back.body_limit(1 << 20);
  error_code ec;
  const auto used = back.put(net::buffer(wire), ec);
  if (!ec && !back.is_done()) {
    back.put_eof(ec);  // a request with no length ends here
  }
  VA_FUZZ_CHECK(!ec, "the upstream request does not parse: " + ec.message());
  VA_FUZZ_CHECK(back.is_done(), "the upstream request is incomplete");
  VA_FUZZ_CHECK(used == wire.size(), "bytes after the upstream request");
  const auto& got = back.get();
  VA_FUZZ_CHECK(got.method() == req.method() && got.method_string() == req.method_string(),
                "the method changed");
  VA_FUZZ_CHECK(got.target() == req.target(), "the target changed");
  VA_FUZZ_CHECK(std::string_view(got.body()) == req.body(), "the body changed");
  VA_FUZZ_CHECK(got.count(http::field::transfer_encoding) == 0, "Transfer-Encoding upstream");
  VA_FUZZ_CHECK(got.count(http::field::content_length) <= 1, "two Content-Lengths upstream");
  VA_FUZZ_CHECK(got.count(http::field::authorization) == 1 &&
                    got[http::field::authorization] == "Bearer backend-key",
                "the client's Authorization upstream");
}

// What the front made of the first request: its body when accepted, else why not.
struct First {
  bool seen = false;
  bool accepted = false;
  std::string body;
  bool on_purpose = false;  // refused by a rule of our own, not Beast's parser
};

// The first request as Beast's parser alone reads it from all the bytes at once; none when it
// does not parse whole.
std::optional<std::string> reference_body(std::string_view bytes, const config::Limits& limits) {
  http::request_parser<http::string_body> p;
  p.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
  p.body_limit(limits.max_body_bytes);
  p.eager(true);
  error_code ec;
  while (!bytes.empty() && !p.is_done()) {
    const auto n = p.put(net::buffer(bytes.data(), bytes.size()), ec);
    bytes.remove_prefix(n);
    if (ec || n == 0) {
      break;
    }
  }
  if (!ec && !p.is_done() && p.got_some() && bytes.empty()) {
    p.put_eof(ec);
  }
  if (ec || !p.is_done()) {
    return std::nullopt;
  }
  return p.release().body();
}

task<void> serve(Socket& s, First& first) {
  const auto limits = fuzz_limits();
  const std::vector<std::string> keys = {"sk-fuzz"};
  beast::flat_buffer buf(buffer_limit(limits));
  for (;;) {
    HeadParser head;
    prepare_head(head, limits);
    bool folded = false;
    const auto ec = co_await read_head(s, buf, head, folded);
    auto refusal = ec ? head_failure(ec, folded, false, head.got_some() || buf.size() > 0)
                      : unusable_head(head);
    if (refusal) {
      VA_FUZZ_CHECK(refusal->status >= 400 && refusal->status < 500, "a refusal is not a 4xx");
      first.on_purpose = first.on_purpose || (!first.seen && (folded || !ec));
    }
    if (ec || refusal) {
      first.seen = true;
      co_return;
    }
    const auto& h = head.get();
    (void)is_exposed(path_of(h.target()));
    (void)authorized(h[http::field::authorization], keys);
    const bool keep_alive = h.keep_alive();
    BodyParser body(std::move(head));
    prepare_body(body, limits);
    if (const auto ec = co_await read_body(s, buf, body)) {
      if (const auto r = body_failure(ec, false)) {
        VA_FUZZ_CHECK(r->status >= 400 && r->status < 500, "a body refusal is not a 4xx");
      }
      first.on_purpose =
          first.on_purpose || (!first.seen && ec == http::error::bad_chunk_extension);
      first.seen = true;
      co_return;
    }
    const auto req = body.release();
    if (!first.seen) {
      first = First{
          .seen = true, .accepted = true, .body = std::string(req.body()), .on_purpose = false};
    }
    VA_FUZZ_CHECK(req.body().size() <= limits.max_body_bytes, "a body beyond the limit");
    (void)extract_model(req[http::field::content_type], req.body());
    check_upstream(req);
    if (!keep_alive) {
      co_return;
    }
  }
}

task<void> send_all(Socket& s, std::string_view bytes) {
  co_await net::async_write(s, net::buffer(bytes.data(), bytes.size()), use_nothrow);
  error_code ec;
  s.shutdown(Socket::shutdown_send, ec);
}

}  // namespace
}  // namespace va::front

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace va;
  net::io_context io;
  front::Socket client(io), proxy(io);
  net::local::connect_pair(client, proxy);
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  net::co_spawn(io, front::send_all(client, bytes), net::detached);
  front::First first;
  net::co_spawn(io, front::serve(proxy, first), [](std::exception_ptr e) {
    if (e) {
      std::rethrow_exception(e);  // an exception out of the front is a finding
    }
  });
  io.run();
  if (const auto body = front::reference_body(bytes, front::fuzz_limits());
      body && !first.on_purpose) {
    VA_FUZZ_CHECK(first.accepted, "a request Beast's parser reads whole was refused");
    VA_FUZZ_CHECK(first.body == *body, "the first request's body differs from Beast's reading");
  }
  return 0;
}
