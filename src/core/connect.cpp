#include "core/connect.hpp"

namespace va {

task<error_code> connect_tcp(beast::tcp_stream& stream, const std::string& host,
                             const std::string& port, std::string* failed_step) {
  error_code ec;
  if (auto address = net::ip::make_address(host, ec); !ec) {
    std::tie(ec) = co_await stream.async_connect(
        tcp::endpoint(address, static_cast<unsigned short>(std::stoi(port))), use_nothrow);
  } else {
    tcp::resolver resolver(stream.get_executor());
    auto [rec, endpoints] = co_await resolver.async_resolve(host, port, use_nothrow);
    if (rec) {
      if (failed_step != nullptr) {
        *failed_step = "resolve";
      }
      co_return rec;
    }
    std::tie(ec, std::ignore) = co_await stream.async_connect(endpoints, use_nothrow);
  }
  if (ec && failed_step != nullptr) {
    *failed_step = "connect";
  }
  if (!ec) {
    stream.socket().set_option(tcp::no_delay(true));
  }
  co_return ec;
}

}  // namespace va
