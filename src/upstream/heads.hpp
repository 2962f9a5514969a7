#pragma once
// The two heads the proxy writes for an exchange, flattened into one string each in the request's
// memory (wire::Scratch): the request's towards the upstream and the response's towards the
// client. Hop-by-hop fields are dropped while writing (RFC 9110 §7.6.1: the fixed list and those a
// message's Connection header nominates; wire/hop_by_hop.hpp), never erased from Beast's field
// list.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/net.hpp"
#include "upstream/pool.hpp"
#include "wire/wire.hpp"

namespace va::upstream {

// The client's request head as the upstream gets it, written once (a retry sends it again):
// HTTP/1.1, hop-by-hop fields out (Upgrade kept for tunnels), Host and X-Forwarded-* in, and
// `Content-Length: content_length` (when set) in place of the client's Content-Length and
// Transfer-Encoding: the upstream never gets a chunked request body. In the request's memory.
std::pmr::string upstream_head(const http::request_header<wire::Fields>& req, const Target& t,
                               std::string_view client_address,
                               std::optional<std::uint64_t> content_length);

// The response head for the client: the upstream's, with its hop-by-hop fields out (a 101 keeps
// its Connection: upgrade and Upgrade: the client needs them), the client connection's own
// framing and keep-alive, and Server-Timing after a wake. In the request's memory.
std::pmr::string client_head(const http::response_header<wire::Fields>& res, bool switching,
                             bool chunked, bool keep_alive, std::optional<double> wake_ms);

}  // namespace va::upstream
