#pragma once
// The header fields that apply to one connection only (RFC 9110 §7.6.1), and those the proxy
// treats so: never forwarded either way (upstream/heads.cpp), besides those a message's own
// Connection header nominates. One list, for the forwarder and for the configuration's checks of
// what backends[].upstream_headers may set.
#include <algorithm>
#include <array>

#include "core/net.hpp"

namespace va::wire {

inline constexpr std::array<http::field, 10> kHopByHop = {
    http::field::connection,
    http::field::keep_alive,
    http::field::proxy_connection,
    http::field::proxy_authenticate,
    http::field::proxy_authorization,
    http::field::te,
    http::field::trailer,
    http::field::transfer_encoding,
    http::field::upgrade,
    http::field::expect,
};

// By the field's enum: Beast gives every known name one, whatever its case
// (http::string_to_field() for a name as text).
constexpr bool is_hop_by_hop(http::field f) {
  return std::find(kHopByHop.begin(), kHopByHop.end(), f) != kHopByHop.end();
}

}  // namespace va::wire
