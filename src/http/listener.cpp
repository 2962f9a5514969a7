#include "http/listener.hpp"

#include "core/log.hpp"
#include "core/spawn.hpp"
#include "http/errors.hpp"
#include "wire/wire.hpp"

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
  // Written once, as every other error is (error_response(): the JSON body, Retry-After: 1), and
  // then sent with one write that does not wait: the connection is closed at once.
  static const std::string kBusy = [] {
    const auto res = error_response(503, "too many connections (limits.max_connections)", false);
    std::string out;
    wire::append_head(out, res.base());
    return out + res.body();
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
