#include "core/connect.hpp"

#include <type_traits>

namespace va {

namespace {
TcpStream::socket_type& socket_of(TcpStream& stream) { return stream.socket(); }
Socket& socket_of(Socket& socket) { return socket; }
}  // namespace

template <class Stream>
task<error_code> connect_tcp(Stream& stream, const std::string& host, const std::string& port,
                             std::string* failed_step) {
  error_code ec;
  if (auto address = net::ip::make_address(host, ec); !ec) {
    std::tie(ec) = co_await stream.async_connect(
        tcp::endpoint(address, static_cast<unsigned short>(std::stoi(port))), use_nothrow);
  } else {
    tcp::resolver resolver(stream.get_executor());
    auto [resolve_error, endpoints] = co_await resolver.async_resolve(host, port, use_nothrow);
    if (resolve_error) {
      if (failed_step != nullptr) {
        *failed_step = "resolve";
      }
      co_return resolve_error;
    }
    if constexpr (std::is_same_v<Stream, Socket>) {
      std::tie(ec, std::ignore) = co_await net::async_connect(stream, endpoints, use_nothrow);
    } else {
      std::tie(ec, std::ignore) = co_await stream.async_connect(endpoints, use_nothrow_task);
    }
  }
  if (ec && failed_step != nullptr) {
    *failed_step = "connect";
  }
  if (!ec) {
    socket_of(stream).set_option(tcp::no_delay(true));
  }
  co_return ec;
}

template task<error_code> connect_tcp(TcpStream&, const std::string&, const std::string&,
                                      std::string*);
template task<error_code> connect_tcp(Socket&, const std::string&, const std::string&,
                                      std::string*);

}  // namespace va
