#pragma once
// Opens a TCP connection to host:port within the stream's current deadline.
#include <string>

#include "core/net.hpp"

namespace va {

// An address skips the resolver: Asio's runs getaddrinfo on one background thread, which would
// serialize the connects of a thousand requests released at once after a wake. The error comes
// back with `failed_step` set to "resolve" or "connect".
task<error_code> connect_tcp(beast::tcp_stream& stream, const std::string& host,
                             const std::string& port, std::string* failed_step = nullptr);

}  // namespace va
