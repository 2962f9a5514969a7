#pragma once
// A deadline for the operations on a socket that moves on as they make progress: the request
// head's (limits.header_timeout) and the upstream's silence (backends[].upstream_timeout). One
// timer, set again only when it fires before the current due time or when the due time moves
// earlier (a request's head after its body's longer limit): setting a timer for every operation
// would cost a timerfd_settime each. When it passes, the socket's pending operations
// are cancelled (they end with operation_aborted) and expired() says why.
//
// Its state is shared with the timer's handler, which may run after the owner is gone (an expiry
// already queued): the handler touches the timer and the socket only while one is watched, and
// the destructor stops watching. The handler runs on the executor the deadline was made with:
// the session's (its strand when threads > 1) for a client socket. A pooled upstream
// connection's is the pool's, so with threads > 1 an expiry (backends[].upstream_timeout of
// silence) is handled beside the exchange that watches it, as before connections carried their
// deadline; disarm() keeps a cancelled wait away from the connection's next user.
#include <cstdint>
#include <memory>

#include "core/net.hpp"

namespace va {

class MovingDeadline {
 public:
  explicit MovingDeadline(const net::any_io_executor& ex)
      : timer_(ex), state_(std::make_shared<State>()) {
    state_->timer = &timer_;
  }
  ~MovingDeadline() { pause(); }
  MovingDeadline(const MovingDeadline&) = delete;
  MovingDeadline& operator=(const MovingDeadline&) = delete;

  // Watches `socket` until `due` (a later call moves it, later or earlier).
  void watch(tcp::socket& socket, Clock::time_point due) {
    state_->socket = &socket;
    state_->due = due;
    state_->expired = false;
    if (!state_->armed || due < state_->armed_for) {
      arm(state_);  // (an earlier wait, if any, ends as stale)
    }
  }
  // Nothing to cut until the next watch(): time spent meanwhile does not count.
  void pause() { state_->socket = nullptr; }
  // pause(), and no pending wait either (the next watch() sets the timer again): for a pooled
  // socket, so that nothing holds the event loop while it idles. Its next user may run on
  // another thread (threads > 1) while the cancelled wait's handler runs: that handler keeps the
  // old state, and the deadline starts a new one.
  void disarm() {
    pause();
    if (state_->armed) {
      ++state_->wait;  // the cancelled wait ends as stale
      timer_.cancel();
      state_ = std::make_shared<State>();
      state_->timer = &timer_;
    }
  }
  bool expired() const { return state_->expired; }

 private:
  struct State {
    net::steady_timer* timer = nullptr;
    tcp::socket* socket = nullptr;  // while watched
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
    s->timer->async_wait([s, wait = ++s->wait](error_code ec) {
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
      s->socket->cancel(ec);
    });
  }

  net::steady_timer timer_;
  std::shared_ptr<State> state_;
};

}  // namespace va
