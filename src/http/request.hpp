#pragma once
// The request front (docs/life-of-a-request.md): reading a client's request within the limits, and
// every judgement that needs no backend: which heads and bodies are refused and how, which paths
// are public, the API key, the model a body names, the length the request goes upstream with.
// No state and no backend: the session runs these, and so do the fuzz targets (fuzz/), over any
// stream.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "core/errors.hpp"
#include "core/net.hpp"
#include "wire/wire.hpp"

namespace va::front {

// A request in the memory of its wire::Scratch (the allocator its head parser is made with): its
// fields and its body.
using HeadParser = http::request_parser<http::empty_body, wire::Alloc>;
using Body = http::basic_string_body<char, std::char_traits<char>, wire::Alloc>;
using BodyParser = http::request_parser<Body, wire::Alloc>;
using Request = BodyParser::value_type;
using RequestHeader = http::request_header<wire::Fields>;

// A request the proxy answers with an error, and closes the connection.
struct Refusal {
  unsigned status;
  std::string message;
};

// A connection's read buffer limit: a head at the limit and one read more. A chunk line must fit
// whole, so this also bounds what a huge chunk extension can make the proxy keep.
std::size_t buffer_limit(const config::Limits& limits);

// A head parser with limits.max_header_bytes and limits.max_body_bytes.
void prepare_head(HeadParser& head, const config::Limits& limits);

// The head check of read_head(): refuses a field line folded onto the next (obs-fold) on the raw
// bytes, before Beast joins the lines (a backend might not, and read another request), and says so.
struct NoFold {
  bool* folded;
  error_code operator()(std::string_view raw) const {
    *folded = wire::has_obs_fold(raw);
    return *folded ? error_code(http::error::bad_field) : error_code{};
  }
};

// Reads the next request head into `head`; `folded` says whether it was refused for obs-fold.
// `before_read` as for wire::read(): called before each read that may wait. (A plain function:
// the read is the only coroutine frame.)
template <class Stream, class BeforeRead = decltype(&wire::no_action)>
task<error_code> read_head(Stream& s, beast::flat_buffer& buf, HeadParser& head, bool& folded,
                           BeforeRead before_read = &wire::no_action) {
  folded = false;
  return wire::read(s, buf, head, wire::Until::header, NoFold{&folded}, before_read);
}

// The answer to a head that did not arrive whole; none when the client left, or went quiet between
// requests (`got_some` false).
std::optional<Refusal> head_failure(error_code ec, bool folded, bool timed_out, bool got_some);

// The answer to a head that parsed but cannot be served safely; none when it can.
std::optional<Refusal> unusable_head(const HeadParser& head);

// A body parser that continues `head`: limits.max_body_bytes, and chunk extensions (meaningless to
// vLLM, and only a cost in memory) of at most 4 KiB.
void prepare_body(BodyParser& body, const config::Limits& limits);

// Reads the whole body. A chunked one is read whole before anything goes upstream, so a malformed
// chunk is refused before the backend sees a byte of the request.
template <class Stream>
task<error_code> read_body(Stream& s, beast::flat_buffer& buf, BodyParser& body) {
  return wire::read(s, buf, body, wire::Until::message);
}

// The answer to a body that did not arrive whole; none when the client left.
std::optional<Refusal> body_failure(error_code ec, bool timed_out);

// How long a body may take to arrive, in all.
config::Duration body_timeout(const config::Limits& limits);

// The Content-Length the request goes upstream with, as Beast's prepare_payload() would set it:
// for any body, and for the methods that expect one. A chunked body goes with its length too: the
// backend sees one framing only.
std::optional<std::uint64_t> upstream_length(const Request& req);

// Only these path prefixes are forwarded; vLLM's control plane (/sleep, /wake_up, /pause,
// /collective_rpc, /metrics, profiling, …) is never reachable through the public port.
bool is_exposed(std::string_view path);

// The path of a request target: what comes before '?'.
std::string_view path_of(std::string_view target);

// The `model` of a request body: the top-level JSON field, or the multipart form field `model`
// (for /v1/audio/*). nullopt when the body names none; bad_request for a malformed JSON body.
outcome<std::optional<std::string>> extract_model(std::string_view content_type,
                                                  std::string_view body);

// Constant-time check of `Authorization: Bearer <key>` (scheme case-insensitive) against `keys`.
bool authorized(std::string_view authorization, const std::vector<std::string>& keys);

}  // namespace va::front
