#pragma once
// One backend's pods, as its Service's EndpointSlices list them (k8s/endpoint_slices.hpp): each
// with its own keep-alive pool and the count of our requests in flight on it, and which of them
// takes the next request (picker.hpp: least outstanding, or the prompt prefix's ring).
//
// A pod whose connection failed is passed over for `avoid_for` (its EndpointSlice may take a
// probe period to say it is gone), and left out of the ring's bound meanwhile; while every pod is
// avoided, pick() offers none and requests go through the backend's URL (the Service). A pod that
// leaves the list gets no new request; requests already on it keep its pool until they end.
//
// Threading: any I/O thread picks and ends requests; one mutex guards the list and the counts.
#include <boost/json/array.hpp>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "routing/picker.hpp"
#include "upstream/pool.hpp"

namespace va::routing {

enum class Policy { least_outstanding, prefix };

struct PodAddress {
  std::string pod;  // its name, for /status and the log
  std::string host;
  std::string port;
};

class Pods {
 public:
  struct Settings {
    Policy policy = Policy::least_outstanding;
    // Every pod's pool is this one's, with the pod's address as the target's host and port (the
    // Host header and upstream_headers stay the backend's).
    upstream::Pool::Settings pool;
    double bound = 1.25;  // prefix: a pod takes at most this times the mean load
    Clock::duration avoid_for = std::chrono::seconds(2);
  };

  struct Pod {
    Pod(const PodAddress& a, upstream::Pool::Settings s) : address(a), pool(std::move(s)) {}
    PodAddress address;
    upstream::Pool pool;
    std::size_t in_flight = 0;  // under Pods' mutex, as is avoid_until
    Clock::time_point avoid_until = Clock::time_point::min();
  };

  // One request on one pod, until destroyed. Move-only.
  class Use {
   public:
    Use(Pods* pods, std::shared_ptr<Pod> pod) : pods_(pods), pod_(std::move(pod)) {}
    Use(Use&& o) noexcept : pods_(std::exchange(o.pods_, nullptr)), pod_(std::move(o.pod_)) {}
    Use& operator=(Use&&) = delete;
    ~Use();
    upstream::Pool& pool() const { return pod_->pool; }
    const PodAddress& address() const { return pod_->address; }
    // No connection could be opened to it: the next requests go elsewhere for a while. True when
    // every pod is avoided now (the backend itself may be gone).
    bool connect_failed();

   private:
    Pods* pods_;
    std::shared_ptr<Pod> pod_;
  };

  explicit Pods(Settings settings);

  // The pods to route to from now on (ready, not terminating), in the same order on every proxy
  // replica. Pods already known keep their pool and their count.
  void update(const std::vector<PodAddress>& usable);
  // The pod for the next request; `key` (prefix): stable_hash of its prompt prefix; without one
  // (a body not read yet, or without a prompt), the least outstanding. None while no pod is
  // known or every one is avoided (the caller uses the backend's upstream URL).
  std::optional<Use> pick(std::optional<std::uint64_t> key);
  std::size_t size() const;
  Policy policy() const { return settings_.policy; }
  // Drops every pod's idle connections (the proxy is stopping: their deadlines' waits must end).
  void clear_idle();
  // [{pod, address, in_flight}], in the list's order.
  boost::json::array status() const;

 private:
  void end(Pod& pod);
  std::uint64_t next_random();

  const Settings settings_;
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Pod>> pods_;
  std::optional<Ring> ring_;  // prefix, when there are pods
  std::uint64_t random_ = 0x9e3779b97f4a7c15ULL;
};

}  // namespace va::routing
