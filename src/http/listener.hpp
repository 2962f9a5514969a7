#pragma once
// Accept loops. Each accepted connection runs as its own coroutine; with several I/O threads on
// its own strand, so that sessions run in parallel while each stays sequential. With one thread
// nothing runs in parallel and the strand would only cost a queue and a lock per step.
#include <functional>

#include "core/net.hpp"
#include "http/connections.hpp"

namespace va::front {

using Handler = std::function<task<void>(tcp::socket)>;

// Binds host:port (port 0: the kernel picks) and listens. Throws on failure.
tcp::acceptor open_acceptor(net::io_context& ioc, const std::string& host, unsigned short port);

// Accepts until the acceptor is closed. Above `max_connections` (counted by `open`), a
// connection gets a 503 and is closed at once. `threads`: the io_context's I/O threads.
task<void> accept_loop(net::io_context& ioc, int threads, tcp::acceptor& acceptor, Handler handler,
                       const Connections* open, std::size_t max_connections);

}  // namespace va::front
