#include "http/listener.hpp"

#include "core/log.hpp"
#include "core/spawn.hpp"

namespace va::front {

Acceptor open_acceptor(net::io_context& ioc, const std::string& host, unsigned short port) {
  tcp::endpoint ep{net::ip::make_address(host), port};
  Acceptor acc(ioc);
  acc.open(ep.protocol());
  acc.set_option(net::socket_base::reuse_address(true));
  if (ep.address().is_v6()) {
    acc.set_option(net::ip::v6_only(false));
  }
  acc.bind(ep);
  acc.listen(net::socket_base::max_listen_connections);
  return acc;
}

task<void> accept_loop(std::span<const Executor> workers, Acceptor& acceptor, Handler handler,
                       const Connections* open, std::size_t max_connections) {
  static const std::string kBusy = [] {
    const std::string body =
        "{\"error\":{\"message\":\"too many connections (limits.max_connections)\",\"type\":"
        "\"ServiceUnavailableError\",\"param\":null,\"code\":503}}";
    return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           "Retry-After: 1\r\nConnection: close\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  }();
  for (std::size_t next = 0;; next = (next + 1) % workers.size()) {
    const Executor ex = workers[next];
    auto [ec, socket] = co_await acceptor.async_accept(ex, use_nothrow);
    if (ec == net::error::operation_aborted || !acceptor.is_open()) {
      co_return;
    }
    if (ec) {
      // Out of file descriptors and the like: wait a little instead of spinning.
      log::warn("accept failed", {{"error", ec.message()}});
      Timer t(acceptor.get_executor(), 100ms);
      co_await t.async_wait(use_nothrow);
      continue;
    }
    if (open != nullptr && open->size() >= max_connections) {
      error_code ignored;
      socket.non_blocking(true, ignored);
      socket.write_some(net::buffer(kBusy), ignored);
      socket.shutdown(Socket::shutdown_both, ignored);
      continue;
    }
    spawn(ex, handler(std::move(socket)), "session");
  }
}

}  // namespace va::front
