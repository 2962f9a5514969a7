#pragma once
// Opens a TCP connection to host:port: on a TcpStream within its current expiry, on a
// plain socket within the deadline its caller watches it with.
#include <string>

#include "core/net.hpp"

namespace va {

// An address skips the resolver: Asio's runs getaddrinfo on one background thread, which would
// serialize the connects of a thousand requests released at once after a wake. The error comes
// back with `failed_step` set to "resolve" or "connect".
template <class Stream>
task<error_code> connect_tcp(Stream& stream, const std::string& host, const std::string& port,
                             std::string* failed_step = nullptr);

}  // namespace va
