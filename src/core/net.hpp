#pragma once
// Short names for the networking libraries, used by every module.
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/system/result.hpp>
#include <chrono>

namespace va {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// Everything runs on an io_context's own executor, never a type-erased one or a strand: each
// I/O thread has its own io_context (app.cpp), so what runs on one executor never runs in
// parallel. Asio then calls completion handlers directly instead of through a polymorphic
// executor (bench/README.md, "Sixth round": 2–3 µs per request).
using Executor = net::io_context::executor_type;
using Socket = net::basic_stream_socket<tcp, Executor>;
using Acceptor = net::basic_socket_acceptor<tcp, Executor>;
using Timer = net::basic_waitable_timer<Clock, net::wait_traits<Clock>, Executor>;
using TcpStream = beast::basic_stream<tcp, Executor>;  // a socket with Beast's own timeouts

// Completion tokens for coroutines.
// - use_nothrow, the one the proxy's own code uses: `co_await op(..., use_nothrow)` gives the
//   error as a value, and the coroutine awaits the operation itself. use_awaitable would start
//   each operation in a coroutine of its own: one more frame and one more resumption per read or
//   write (bench/README.md, "Ninth round").
// - use_task: an awaitable, errors as exceptions; use_nothrow_task: an awaitable, errors as values,
//   for the awaitable operators (`||`, `&&`: they combine awaitables) and for the initiating
//   functions that take no deferred token in Boost 1.81 (beast::basic_stream::async_connect,
//   ssl::stream::async_handshake). Neither is on the path of a request to a ready backend.
inline constexpr net::use_awaitable_t<Executor> use_task{};
inline constexpr auto use_nothrow = net::as_tuple(net::deferred);
inline constexpr auto use_nothrow_task = net::as_tuple(use_task);

template <class T>
using task = net::awaitable<T, Executor>;
}  // namespace va
