// The floor of our architecture: an HTTP/1.1 keep-alive proxy in Asio coroutines and Beast's
// parser with nothing else. No limits, deadlines, routing, metrics, pooling or header rewriting:
// each client connection gets its own upstream connection and every message is read whole and
// written on. What vllm-autoscaler costs above this is its features; what this costs above
// nginx is the machinery. Built twice: with the type-erased executor the proxy uses (its
// sessions run on strands when `threads` > 1) and, for comparison, with io_context's own
// (FLOOR_TYPED_EXECUTOR).
//
//   floor-coro LISTEN_PORT UPSTREAM_PORT      (127.0.0.1 both)
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdlib>
#include <iostream>

#include "asio_floor.hpp"

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

#ifdef FLOOR_TYPED_EXECUTOR
using Executor = net::io_context::executor_type;
#else
using Executor = net::any_io_executor;
#endif
using Socket = net::basic_stream_socket<tcp, Executor>;
using Acceptor = net::basic_socket_acceptor<tcp, Executor>;
template <class T>
using task = net::awaitable<T, Executor>;
constexpr auto use_nothrow = net::as_tuple(net::use_awaitable_t<Executor>{});

namespace {

task<void> serve(Socket client, tcp::endpoint upstream_at) {
  client.set_option(tcp::no_delay(true));
  Socket upstream(client.get_executor());
  if (auto [ec] = co_await upstream.async_connect(upstream_at, use_nothrow); ec) {
    co_return;
  }
  upstream.set_option(tcp::no_delay(true));
  beast::flat_buffer client_buf;
  beast::flat_buffer upstream_buf;
  for (;;) {
    http::request<http::string_body> req;
    if (auto [ec, n] = co_await http::async_read(client, client_buf, req, use_nothrow); ec) {
      co_return;
    }
    if (auto [ec, n] = co_await http::async_write(upstream, req, use_nothrow); ec) {
      co_return;
    }
    http::response<http::string_body> res;
    if (auto [ec, n] = co_await http::async_read(upstream, upstream_buf, res, use_nothrow); ec) {
      co_return;
    }
    if (auto [ec, n] = co_await http::async_write(client, res, use_nothrow); ec) {
      co_return;
    }
  }
}

task<void> accept_loop(Acceptor& acceptor, tcp::endpoint upstream_at) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
    if (!ec) {
      net::co_spawn(acceptor.get_executor(), serve(std::move(socket), upstream_at), net::detached);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return floor_proxy::run_on_asio<Acceptor>(
      argc, argv, "floor-coro", [](Acceptor& acceptor, const tcp::endpoint& upstream_at) {
        net::co_spawn(acceptor.get_executor(), accept_loop(acceptor, upstream_at), net::detached);
      });
}
