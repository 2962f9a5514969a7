#include "activator/queue.hpp"

namespace va::activator {

bool PendingBudget::try_add(std::size_t n) {
  auto used = used_.load();
  do {
    if (used + n > limit_) {
      return false;
    }
  } while (!used_.compare_exchange_weak(used, used + n));
  return true;
}

std::size_t WaitQueue::finish(const Failure* failure, std::size_t most) {
  if (waiters_.empty() || most == 0) {
    return 0;
  }
  auto woken = std::make_shared<std::vector<std::shared_ptr<Waiter>>>();
  woken->reserve(std::min(most, waiters_.size()));
  while (!waiters_.empty() && woken->size() < most) {
    auto w = std::move(waiters_.front());
    waiters_.pop_front();
    w->done = true;
    w->granted = failure == nullptr;
    if (!w->granted) {
      w->failure = *failure;
    }
    woken->push_back(std::move(w));
  }
  const std::size_t granted = failure == nullptr ? woken->size() : 0;
  wake(std::move(woken), 0);
  return granted;
}

void WaitQueue::wake(std::shared_ptr<std::vector<std::shared_ptr<Waiter>>> woken,
                     std::size_t from) {
  // Each session is woken on its own executor, a batch at a time, the next batch queued behind
  // the sessions of this one: with 1000 held requests the first answers reach their clients
  // while later sessions are still being woken, not after all of them have connected upstream.
  constexpr std::size_t kBatch = 16;
  const auto to = std::min(woken->size(), from + kBatch);
  for (auto i = from; i < to; ++i) {
    auto w = (*woken)[i];
    net::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
  }
  if (to < woken->size()) {
    auto ex = (*woken)[to]->timer.get_executor();
    net::post(ex, [woken = std::move(woken), to]() mutable { wake(std::move(woken), to); });
  }
}

}  // namespace va::activator
