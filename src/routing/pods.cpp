#include "routing/pods.hpp"

#include <algorithm>
#include <array>
#include <boost/json/object.hpp>

namespace va::routing {
namespace {

std::string id_of(const PodAddress& a) {
  const bool v6 = a.host.find(':') != std::string::npos;
  std::string id = v6 ? "[" + a.host + "]" : a.host;
  id.append(":").append(a.port);
  return id;
}

}  // namespace

Pods::Use::~Use() {
  if (pods_ != nullptr) {
    pods_->end(*pod_);
  }
}

bool Pods::Use::connect_failed() {
  std::lock_guard lock(pods_->mu_);
  const auto now = Clock::now();
  pod_->avoid_until = now + pods_->settings_.avoid_for;
  return std::all_of(pods_->pods_.begin(), pods_->pods_.end(),
                     [&](const auto& p) { return p->avoid_until > now; });
}

Pods::Pods(Settings settings) : settings_(std::move(settings)) {}

void Pods::update(const std::vector<PodAddress>& usable) {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Pod>> next;
  next.reserve(usable.size());
  for (const auto& a : usable) {
    const auto it = std::find_if(pods_.begin(), pods_.end(), [&](const auto& p) {
      return p->address.host == a.host && p->address.port == a.port;
    });
    if (it != pods_.end()) {
      (*it)->address.pod = a.pod;
      next.push_back(*it);
      continue;
    }
    auto s = settings_.pool;
    s.target.host = a.host;
    s.target.port = a.port;
    next.push_back(std::make_shared<Pod>(a, std::move(s)));
  }
  pods_ = std::move(next);
  ring_.reset();
  if (settings_.policy == Policy::prefix && !pods_.empty()) {
    std::vector<std::string> ids;
    for (const auto& p : pods_) {
      ids.push_back(id_of(p->address));
    }
    ring_.emplace(std::move(ids));
  }
}

std::optional<Pods::Use> Pods::pick(std::optional<std::uint64_t> key) {
  std::lock_guard lock(mu_);
  const auto n = pods_.size();
  if (n == 0) {
    return std::nullopt;  // the backend's URL
  }
  const auto now = Clock::now();
  // The pods' loads and whether each is avoided, on the stack up to 64 pods.
  constexpr std::size_t kMost = 64;
  std::array<std::size_t, kMost> stack_loads;
  std::array<bool, kMost> stack_avoided;
  std::vector<std::size_t> heap_loads;
  std::unique_ptr<bool[]> heap_avoided;
  std::span<std::size_t> loads(stack_loads.data(), std::min(n, kMost));
  std::span<bool> avoided(stack_avoided.data(), loads.size());
  if (n > kMost) {
    heap_loads.resize(n);
    heap_avoided = std::make_unique<bool[]>(n);
    loads = heap_loads;
    avoided = {heap_avoided.get(), n};
  }
  std::size_t usable = 0;
  for (std::size_t i = 0; i < n; ++i) {
    loads[i] = pods_[i]->in_flight;
    avoided[i] = pods_[i]->avoid_until > now;
    usable += avoided[i] ? 0 : 1;
  }
  if (usable == 0) {
    return std::nullopt;  // none known, or every one refused lately: the backend's URL
  }
  std::size_t i = 0;
  if (ring_ && key) {
    i = ring_->pick(*key, loads, settings_.bound, avoided);
  } else {
    i = least_outstanding(loads, next_random(), avoided);
  }
  auto& pod = pods_[i];
  ++pod->in_flight;
  return Use(this, pod);
}

std::uint64_t Pods::next_random() {
  random_ += 0x9e3779b97f4a7c15ULL;  // a Weyl sequence, mixed by stable_hash's finaliser
  return stable_hash({reinterpret_cast<const char*>(&random_), sizeof random_});
}

void Pods::end(Pod& pod) {
  std::lock_guard lock(mu_);
  --pod.in_flight;
}

void Pods::clear_idle() {
  std::lock_guard lock(mu_);
  for (auto& p : pods_) {
    p->pool.clear();
  }
}

std::size_t Pods::size() const {
  std::lock_guard lock(mu_);
  return pods_.size();
}

boost::json::array Pods::status() const {
  std::lock_guard lock(mu_);
  boost::json::array out;
  for (const auto& p : pods_) {
    out.push_back(boost::json::object{
        {"pod", p->address.pod}, {"address", id_of(p->address)}, {"in_flight", p->in_flight}});
  }
  return out;
}

}  // namespace va::routing
