// The floor of Asio's reactor alone: floor-epoll's relay (each message's end found by its blank
// line and Content-Length, its bytes passed on unchanged) on Asio's io_context with completion
// handlers, without coroutines or Beast. Between floor-coro-typed and floor-epoll, it tells what
// the reactor costs and what the coroutines and the parser do. A benchmark peer only.
//
//   floor-asio LISTEN_PORT UPSTREAM_PORT      (127.0.0.1 both)
#include <boost/asio.hpp>
#include <charconv>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include "asio_floor.hpp"

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Executor = net::io_context::executor_type;
using Socket = net::basic_stream_socket<tcp, Executor>;
using Acceptor = net::basic_socket_acceptor<tcp, Executor>;

namespace {

struct Pair : std::enable_shared_from_this<Pair> {
  struct Side {
    Socket socket;
    std::string in{};
    std::size_t used = 0;
  };
  Side client;
  Side upstream;
  explicit Pair(Socket c) : client{std::move(c)}, upstream{Socket(client.socket.get_executor())} {}

  void read(Side& from, Side& to) {
    if (from.in.size() - from.used < 4096) {
      from.in.resize(from.used + 16384);
    }
    from.socket.async_read_some(
        net::buffer(from.in.data() + from.used, from.in.size() - from.used),
        [self = shared_from_this(), &from, &to](boost::system::error_code ec, std::size_t n) {
          if (ec) {
            self->client.socket.close(ec);
            self->upstream.socket.close(ec);
            return;
          }
          from.used += n;
          const auto len = floor_proxy::message_length(std::string_view(from.in.data(), from.used));
          if (len == 0) {
            self->read(from, to);
            return;
          }
          net::async_write(to.socket, net::buffer(from.in.data(), len),
                           [self, &from, &to, len](boost::system::error_code wec, std::size_t) {
                             if (wec) {
                               return;
                             }
                             from.in.erase(0, len);
                             from.used -= len;
                             self->read(from, to);
                           });
        });
  }
};

void accept(Acceptor& acceptor, const tcp::endpoint& upstream_at) {
  acceptor.async_accept([&acceptor, upstream_at](boost::system::error_code ec, Socket socket) {
    if (!ec) {
      auto p = std::make_shared<Pair>(std::move(socket));
      p->upstream.socket.async_connect(upstream_at, [p](boost::system::error_code cec) {
        if (cec) {
          return;
        }
        p->client.socket.set_option(tcp::no_delay(true));
        p->upstream.socket.set_option(tcp::no_delay(true));
        p->read(p->client, p->upstream);
        p->read(p->upstream, p->client);
      });
    }
    accept(acceptor, upstream_at);
  });
}

}  // namespace

int main(int argc, char** argv) {
  return floor_proxy::run_on_asio<Acceptor>(
      argc, argv, "floor-asio",
      [](Acceptor& acceptor, const tcp::endpoint& upstream_at) { accept(acceptor, upstream_at); });
}
