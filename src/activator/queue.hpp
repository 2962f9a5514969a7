#pragma once
// Requests held while their backend wakes (README.md, "Invariants" (b)): in arrival order, each
// released or refused exactly once, and the bytes of their bodies under one budget. No lock of its
// own: the Backend guards it.
#include <atomic>
#include <cstddef>
#include <deque>
#include <limits>
#include <memory>
#include <vector>

#include "core/errors.hpp"
#include "core/net.hpp"

namespace va::activator {

// Bytes of held request bodies across all backends (limits.max_pending_bytes). Any thread.
class PendingBudget {
 public:
  explicit PendingBudget(std::size_t limit) : limit_(limit) {}
  bool try_add(std::size_t n);
  void sub(std::size_t n) { used_.fetch_sub(n); }
  std::size_t used() const { return used_.load(); }

 private:
  std::size_t limit_;
  std::atomic<std::size_t> used_{0};
};

// One held request. Its session waits on `timer`, which is cancelled on the session's own
// executor once `done` is set.
struct Waiter {
  explicit Waiter(Executor ex) : timer(ex) {}
  Timer timer;
  bool done = false;  // guarded by the owner's lock, as is everything below
  bool granted = false;
  Failure failure;
};

class WaitQueue {
 public:
  void push(std::shared_ptr<Waiter> w) { waiters_.push_back(std::move(w)); }
  // A waiter that gave up by itself (its deadline, its client left).
  void erase(const std::shared_ptr<Waiter>& w) { std::erase(waiters_, w); }
  std::size_t size() const { return waiters_.size(); }
  bool empty() const { return waiters_.empty(); }

  // The first `most` waiters (every one by default), in arrival order, granted (`failure` null)
  // or refused with `failure`; returns how many were granted. Their sessions are woken a batch at
  // a time (see wake()).
  std::size_t finish(const Failure* failure,
                     std::size_t most = std::numeric_limits<std::size_t>::max());

 private:
  static void wake(std::shared_ptr<std::vector<std::shared_ptr<Waiter>>> woken, std::size_t from);

  std::deque<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace va::activator
