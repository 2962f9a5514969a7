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

// Completion token for coroutines: errors come back as values, never as exceptions.
inline constexpr auto use_nothrow = net::as_tuple(net::use_awaitable);

template <class T>
using task = net::awaitable<T>;
}  // namespace va
