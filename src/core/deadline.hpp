#pragma once
// A deadline for the operations on a socket that moves on as they make progress: the request
// head's (limits.header_timeout) and the upstream's silence (backends[].upstream_timeout). One
// timer, set again only when it fires before the current due time or when the due time moves
// earlier (a request's head after its body's longer limit): setting a timer for every operation
// would cost a timerfd_settime each. When it passes, the socket's pending operations
// are cancelled (they end with operation_aborted) and expired() says why.
//
// Threads. A deadline is made with the executor of the io_context its socket belongs to, and a
// socket's operations are started only there (core/net.hpp): the timer's handler, which cuts them,
// runs on the thread that starts them, so a cut can never fall between a watch() and the read it
// guards. With threads > 1 the state is still locked: a pooled connection may be dropped, and its
// deadline destroyed, by another thread's session (Pool::release) or by the shutdown
// (Pool::clear) while its timer's handler runs. A paused deadline keeps its pending wait (at most
// until the due time, when it ends without being set again): a connection back in the pool costs
// no timer operation.
#include <cstdint>
#include <memory>
#include <mutex>

#include "core/net.hpp"

namespace va {

class MovingDeadline {
 public:
  explicit MovingDeadline(const Executor& ex)
      : timer_(ex), state_(std::make_shared<State>(&timer_)) {}
  ~MovingDeadline() {
    std::lock_guard lock(state_->mu);
    state_->socket = nullptr;
    state_->timer = nullptr;  // a handler still queued touches neither
  }
  MovingDeadline(const MovingDeadline&) = delete;
  MovingDeadline& operator=(const MovingDeadline&) = delete;

  // Watches `socket` until `due` (a later call moves it, later or earlier); its operations are
  // started on the deadline's own executor.
  void watch(Socket& socket, Clock::time_point due) {
    std::lock_guard lock(state_->mu);
    state_->socket = &socket;
    state_->due = due;
    state_->expired = false;
    if (!state_->armed || due < state_->armed_for) {
      arm(state_);  // (an earlier wait, if any, ends as stale)
    }
  }
  // Nothing to cut until the next watch(): time spent meanwhile does not count.
  void pause() {
    std::lock_guard lock(state_->mu);
    state_->socket = nullptr;
  }
  bool expired() const {
    std::lock_guard lock(state_->mu);
    return state_->expired;
  }
  // The error an operation on the watched socket ended with, as timed_out when the deadline cut it.
  error_code explain(error_code ec) const {
    return ec && expired() ? error_code(net::error::timed_out) : ec;
  }

 private:
  struct State {
    explicit State(Timer* t) : timer(t) {}
    std::mutex mu;  // guards everything below
    Timer* timer;
    Socket* socket = nullptr;  // while watched
    Clock::time_point due;
    Clock::time_point armed_for;  // the timer's expiry, while armed
    std::uint64_t wait = 0;       // the current wait; earlier ones are stale
    bool armed = false;
    bool expired = false;
  };

  static void arm(const std::shared_ptr<State>& s) {
    s->armed = true;
    s->armed_for = s->due;
    s->timer->expires_at(s->due);  // cancels a pending wait
    s->timer->async_wait([s, wait = ++s->wait](error_code ec) { fired(s, wait, ec); });
  }

  static void fired(const std::shared_ptr<State>& s, std::uint64_t wait, error_code ec) {
    std::lock_guard lock(s->mu);
    if (wait != s->wait) {
      return;  // stale: a newer wait is pending
    }
    s->armed = false;
    if (ec || s->socket == nullptr) {
      return;  // gone, or paused: the next watch() sets it again
    }
    if (Clock::now() < s->due) {
      arm(s);
      return;
    }
    s->expired = true;
    error_code ignored;
    s->socket->cancel(ignored);  // (its operations end through the event loop, not in here)
  }

  Timer timer_;
  std::shared_ptr<State> state_;
};

}  // namespace va
