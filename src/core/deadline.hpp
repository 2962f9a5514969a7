#pragma once
// A deadline for the operations on a socket that moves on as they make progress: the request
// head's (limits.header_timeout) and the upstream's silence (backends[].upstream_timeout). One
// timer, set again only when it fires before the current due time: setting a timer for every
// operation would cost a timerfd_settime each. When it passes, the socket's pending operations
// are cancelled (they end with operation_aborted) and expired() says why.
//
// Its state is shared with the timer's handler, which may run after the owner is gone (an expiry
// already queued): the handler touches the timer and the socket only while one is watched, and
// the destructor stops watching.
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

  // Watches `socket` until `due` (a later call moves it).
  void watch(tcp::socket& socket, Clock::time_point due) {
    state_->socket = &socket;
    state_->due = due;
    state_->expired = false;
    if (!state_->armed) {
      arm(state_);
    }
  }
  // Nothing to cut until the next watch(): time spent meanwhile does not count.
  void pause() { state_->socket = nullptr; }
  bool expired() const { return state_->expired; }

 private:
  struct State {
    net::steady_timer* timer = nullptr;
    tcp::socket* socket = nullptr;  // while watched
    Clock::time_point due;
    bool armed = false;
    bool expired = false;
  };

  static void arm(const std::shared_ptr<State>& s) {
    s->armed = true;
    s->timer->expires_at(s->due);
    s->timer->async_wait([s](error_code ec) {
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
