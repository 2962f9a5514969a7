#include "routing/pods.hpp"

#include <algorithm>
#include <boost/json/object.hpp>

namespace va::routing {
namespace {

std::string id_of(const PodAddress& a) {
  const bool v6 = a.host.find(':') != std::string::npos;
  std::string id = v6 ? "[" + a.host + "]" : a.host;
  id.append(":").append(a.port);
  return id;
}

// An avoided pod's load: above any real one, so both pickers pass it over while another is left
// (the ring's bound, 1.25 × the mean, stays below it while fewer than 80 % of the pods are
// avoided), and small enough that the ring's sum of loads cannot overflow.
constexpr std::size_t kAvoided = std::size_t{1} << 40;

}  // namespace

Pods::Use::~Use() {
  if (pods_ != nullptr) {
    pods_->end(*pod_);
  }
}

void Pods::Use::connect_failed() {
  std::lock_guard lock(pods_->mu_);
  pod_->avoid_until = Clock::now() + pods_->settings_.avoid_for;
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
    return std::nullopt;
  }
  const auto now = Clock::now();
  constexpr std::size_t kMost = 64;
  std::size_t stack[kMost];
  std::vector<std::size_t> heap;
  std::span<std::size_t> loads(stack, std::min(n, kMost));
  if (n > kMost) {
    heap.resize(n);
    loads = heap;
  }
  std::size_t avoided = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const bool avoid = pods_[i]->avoid_until > now;
    avoided += avoid ? 1 : 0;
    loads[i] = pods_[i]->in_flight + (avoid ? kAvoided : 0);
  }
  if (avoided == n) {
    for (std::size_t i = 0; i < n; ++i) {
      loads[i] = pods_[i]->in_flight;  // all avoided: better one of them than none
    }
  }
  std::size_t i = 0;
  if (ring_ && key) {
    i = ring_->pick(*key, loads, settings_.bound);
  } else if (n > 1) {
    random_ += 0x9e3779b97f4a7c15ULL;  // a Weyl sequence, mixed by stable_hash's finaliser
    i = least_outstanding(loads,
                          stable_hash({reinterpret_cast<const char*>(&random_), sizeof random_}));
  }
  auto& pod = pods_[i];
  ++pod->in_flight;
  return Use(this, pod);
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
