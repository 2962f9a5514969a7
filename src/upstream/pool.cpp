#include "upstream/pool.hpp"

#include "core/connect.hpp"
#include "core/socket.hpp"

namespace va::upstream {
namespace {
// A pooled socket is reusable if the peer has not closed it and sent nothing unasked.
bool still_open(const Stream& s) { return peek_peer(s->socket.native_handle()) == Peer::quiet; }
}  // namespace

Pool::Pool(Settings settings) : settings_(std::move(settings)) {}

task<std::pair<error_code, Stream>> Pool::connect(Executor ex, const Target& t,
                                                  std::chrono::milliseconds timeout) {
  auto link = std::make_unique<Link>(ex);
  link->silence.watch(link->socket, Clock::now() + timeout);
  const error_code ec = co_await connect_tcp(link->socket, t.host, t.port);
  link->silence.pause();
  co_return std::pair{link->silence.explain(ec), std::move(link)};
}

std::optional<Connection> Pool::take_idle(const Executor& here) {
  std::lock_guard lock(mu_);
  const auto now = Clock::now();
  for (std::size_t i = idle_.size(); i-- > 0;) {
    if (&idle_[i].stream->socket.get_executor().context() != &here.context()) {
      continue;  // another I/O thread's
    }
    Idle idle = std::move(idle_[i]);
    if (i + 1 == idle_.size()) {
      idle_.pop_back();  // the common case, without the general erase's moves and checks
    } else {
      idle_.erase(idle_.begin() + static_cast<std::ptrdiff_t>(i));
    }
    // A connection back in the pool for less than a second is taken without a look (a syscall
    // per request); one that the server closed meanwhile is retried by forward().
    const auto idle_for = now - idle.since;
    if (idle_for < settings_.max_idle && (idle_for < 1s || still_open(idle.stream))) {
      return Connection{std::move(idle.stream), true};
    }
  }
  return std::nullopt;
}

task<std::pair<error_code, Stream>> Pool::open() {
  const Executor here = co_await net::this_coro::executor;
  co_return co_await connect(here, settings_.target, settings_.connect_timeout);
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
