#include "upstream/pool.hpp"

#include "core/socket.hpp"

namespace va::upstream {
namespace {
// A pooled socket is reusable if the peer has not closed it and sent nothing unasked.
bool still_open(beast::tcp_stream& s) {
  return peek_peer(s.socket().native_handle()) == Peer::quiet;
}
}  // namespace

Pool::Pool(Settings settings, net::any_io_executor ex) : settings_(std::move(settings)), ex_(ex) {}

task<std::pair<error_code, beast::tcp_stream>> Pool::connect(net::any_io_executor ex,
                                                             const Target& t,
                                                             std::chrono::milliseconds timeout) {
  beast::tcp_stream stream(ex);
  stream.expires_after(timeout);
  error_code ec;
  // An address needs no resolver: Asio's runs getaddrinfo on one background thread, which would
  // serialize the connects of a thousand requests released at once after a wake.
  if (auto address = net::ip::make_address(t.host, ec); !ec) {
    std::tie(ec) = co_await stream.async_connect(
        tcp::endpoint(address, static_cast<unsigned short>(std::stoi(t.port))), use_nothrow);
  } else {
    tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(t.host, t.port, use_nothrow);
    ec = rec;
    if (!rec) {
      std::tie(ec, std::ignore) = co_await stream.async_connect(endpoints, use_nothrow);
    }
  }
  stream.expires_never();
  if (!ec) {
    stream.socket().set_option(tcp::no_delay(true));
  }
  co_return std::pair{ec, std::move(stream)};
}

task<std::pair<error_code, Connection>> Pool::acquire() {
  {
    std::lock_guard lock(mu_);
    const auto now = Clock::now();
    while (!idle_.empty()) {
      Idle idle = std::move(idle_.back());
      idle_.pop_back();
      if (now - idle.since < settings_.max_idle && still_open(idle.stream)) {
        co_return std::pair{error_code{}, Connection{std::move(idle.stream), true}};
      }
    }
  }
  auto [ec, stream] = co_await connect(ex_, settings_.target, settings_.connect_timeout);
  co_return std::pair{ec, Connection{std::move(stream), false}};
}

void Pool::release(Connection c) {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  // Drop the expired ones from the front (oldest) while we are here.
  while (!idle_.empty() && now - idle_.front().since >= settings_.max_idle) {
    idle_.pop_front();
  }
  if (idle_.size() < settings_.max_idle_connections) {
    idle_.push_back(Idle{std::move(c.stream), now});
  }
}

void Pool::clear() {
  std::lock_guard lock(mu_);
  idle_.clear();
}

}  // namespace va::upstream
