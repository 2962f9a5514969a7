#pragma once
// What a backend's controller asks of the other proxy replicas in front of the same backends
// (docs/high-availability.md). A proxy alone has no Peers and decides by itself.
#include <string>

#include "core/net.hpp"

namespace va::activator {

struct StopVerdict {
  bool agreed = false;
  // Without agreement: the earliest time an agreement could come (the controller asks again
  // then, or sooner when something changes).
  Clock::time_point ask_again = Clock::time_point::max();
};

class Peers {
 public:
  virtual ~Peers() = default;
  // The controller sees the backend unused here for `idle_timeout`: may it be scaled to 0? Only
  // the leader is ever told yes, and only once every live replica has been idle that long and
  // has answered a fence (it holds new requests for the backend meanwhile). On yes the fence
  // stays up until stop_decided().
  virtual task<StopVerdict> agree_to_stop(const std::string& backend,
                                          Clock::duration idle_timeout) = 0;
  // After a yes: whether the controller went on to stop the backend (false: a request came in
  // between, and the other replicas are let go at once).
  virtual void stop_decided(const std::string& backend, bool stopping) = 0;
  // Whether this replica leads: only the leader can be told yes (an admin sleep elsewhere is
  // refused, naming the leader).
  virtual bool leading() const = 0;
  virtual std::string leader() const = 0;
  // Requests in flight plus held for `backend` on the other live replicas, as they last wrote
  // (a heartbeat old at most): what the leader adds to its own to size the backend's pods.
  virtual std::size_t load_elsewhere(const std::string& backend) const = 0;
};

}  // namespace va::activator
