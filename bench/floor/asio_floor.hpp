#pragma once
// The main of the floors on Asio (floor-coro, floor-coro-typed, floor-asio): one io_context run by
// one thread, listening on 127.0.0.1:LISTEN_PORT, relaying to 127.0.0.1:UPSTREAM_PORT.
#include <boost/asio.hpp>

#include "floor.hpp"

namespace floor_proxy {

// `start(acceptor, upstream_at)` begins accepting; then the io_context runs until killed.
template <class Acceptor, class Start>
int run_on_asio(int argc, char** argv, std::string_view name, Start start) {
  namespace net = boost::asio;
  const auto [listen_port, upstream_port] = ports(argc, argv, name);
  const auto loopback = net::ip::make_address("127.0.0.1");
  const net::ip::tcp::endpoint listen_at(loopback, static_cast<unsigned short>(listen_port));
  const net::ip::tcp::endpoint upstream_at(loopback, static_cast<unsigned short>(upstream_port));
  net::io_context ioc{1};
  Acceptor acceptor(ioc.get_executor(), listen_at);
  start(acceptor, upstream_at);
  ioc.run();
  return 0;
}

}  // namespace floor_proxy
