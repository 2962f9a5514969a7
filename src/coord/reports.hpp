#pragma once
// What replicas write into their Leases (as JSON in an annotation, `vllm-autoscaler.io/data`):
// a member its activity per backend and the fence it answers; the leader the fence it holds.
#include <map>
#include <optional>
#include <string>

#include "core/net.hpp"

namespace va::coord {

struct BackendActivity {
  std::size_t in_flight = 0;
  std::size_t held = 0;
  std::int64_t idle_ms = 0;  // since the last activity, when the Lease was written; 0 when busy
  bool busy() const { return in_flight > 0 || held > 0; }
};

struct MemberReport {
  std::map<std::string, BackendActivity> backends;
  std::string acked;  // the fence this replica holds new requests for ("" for none)
};

// A scale-down in agreement: the leader announces it, every live member fences the backend
// (holds new requests) and acknowledges with its activity; then the leader stops it (stopping)
// or lets go (the fence disappears).
struct Fence {
  std::string backend;
  std::string id;
  bool stopping = false;  // agreed: the leader scales it to 0 now
};

std::string encode(const MemberReport& r);
std::string encode(const std::optional<Fence>& f);
// Whatever cannot be read is empty: a replica of another version is taken as reporting nothing.
MemberReport decode_report(const std::string& text);
std::optional<Fence> decode_fence(const std::string& text);

}  // namespace va::coord
