#pragma once
#include <memory>

#include "core/net.hpp"

namespace va::upstream {

// Watches the client while the upstream works on its request: a client that closes its
// connection cuts the upstream one, so vLLM aborts the generation, even before it has sent a
// byte. A plain completion handler rather than a coroutine run beside the exchange: one wait per
// exchange, no coroutine frames. Bytes from the client (a pipelined request) end the watch, since
// only a write can tell then. Started only when the exchange is about to wait for the upstream
// (start()): an answer that is already there needs no watch, and the watch costs a syscall.
// stop() before the upstream stream goes away.
class ClientWatch {
 public:
  ClientWatch(Socket& client, Socket& upstream) : client_(client), upstream_(upstream) {}
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  ~ClientWatch() { stop(); }

  // Once: a watch that was stopped stays stopped. Its state exists only once it starts.
  void start() {
    if (state_) {
      return;
    }
    state_ = std::make_shared<State>(State{&upstream_});
    // A peek, not async_wait: a wait always re-registers the socket with epoll (a syscall per
    // exchange); a read is first tried at once and then queued without one.
    client_.async_receive(
        net::buffer(&state_->byte, 1), Socket::message_peek,
        [s = state_](error_code ec, std::size_t n) {
          if (!s->active || ec == net::error::operation_aborted || (!ec && n > 0)) {
            return;  // stopped, or pipelined bytes: only a write can tell now
          }
          // End of stream (the client's FIN) or an error (a reset): the client left.
          s->gone = true;
          error_code ignored;
          s->upstream->shutdown(Socket::shutdown_both, ignored);
          s->upstream->cancel(ignored);
        });
  }
  void stop() {
    if (state_ && state_->active) {
      state_->active = false;
      error_code ignored;
      client_.cancel(ignored);  // the handler runs later, sees inactive, does nothing
    }
  }
  bool gone() const { return state_ && state_->gone; }

 private:
  struct State {
    Socket* upstream;
    bool active = true;
    bool gone = false;
    char byte = 0;  // the peek's buffer
  };
  Socket& client_;
  Socket& upstream_;
  std::shared_ptr<State> state_;  // shared with the handler, which may run after we are gone
};

}  // namespace va::upstream
