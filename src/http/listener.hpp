#pragma once
// Accept loops. Each accepted connection runs as its own coroutine on one of the I/O threads'
// io_contexts, taken in turn: sessions on different threads run in parallel, and each stays
// sequential because one thread runs its io_context.
#include <functional>
#include <span>

#include "core/net.hpp"
#include "http/connections.hpp"

namespace va::front {

using Handler = std::function<task<void>(Socket)>;

// Binds host:port (port 0: the kernel picks) and listens. Throws on failure.
Acceptor open_acceptor(net::io_context& ioc, const std::string& host, unsigned short port);

// Accepts until the acceptor is closed. Above `max_connections` (counted by `open`), a
// connection gets a 503 and is closed at once. `workers`: the I/O threads' executors; the
// accepted connections go to each in turn.
task<void> accept_loop(std::span<const Executor> workers, Acceptor& acceptor, Handler handler,
                       const Connections* open, std::size_t max_connections);

}  // namespace va::front
