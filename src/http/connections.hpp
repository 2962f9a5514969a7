#pragma once
// The open client connections of one listener, so that shutdown can end them (and so that
// limits.max_connections can count them). Thread-safe.
#include <sys/socket.h>

#include <mutex>
#include <unordered_set>

#include "core/net.hpp"

namespace va::front {

class Connections {
 public:
  void add(Socket& s) {
    std::lock_guard lock(mu_);
    open_.insert(&s);
  }
  void remove(Socket& s) {
    std::lock_guard lock(mu_);
    open_.erase(&s);
  }
  std::size_t size() const {
    std::lock_guard lock(mu_);
    return open_.size();
  }
  // Shuts every connection down at the socket level: pending reads see EOF, writes fail, and each
  // session ends on its own thread. (A socket leaves the set before it is closed, under the same
  // lock, so the descriptor is valid here.)
  void shutdown_all() {
    std::lock_guard lock(mu_);
    for (auto* s : open_) {
      ::shutdown(s->native_handle(), SHUT_RDWR);
    }
  }

 private:
  mutable std::mutex mu_;
  std::unordered_set<Socket*> open_;
};

// Registers a session's socket for its lifetime.
class Registered {
 public:
  Registered(Connections& c, Socket& s) : c_(c), s_(s) { c_.add(s_); }
  ~Registered() { c_.remove(s_); }
  Registered(const Registered&) = delete;
  Registered& operator=(const Registered&) = delete;

 private:
  Connections& c_;
  Socket& s_;
};

}  // namespace va::front
