#pragma once
// Which pod of a backend gets a request (issue 18; docs to come with the wiring):
//
// - least_outstanding: of two pods drawn at random, the one with fewer of our requests in flight
//   ("the power of two choices": close to the least loaded, without a scan or shared state).
// - Ring: consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018) on
//   the first bytes of the prompt. Every proxy replica builds the same ring from the same pod
//   addresses, so the same prefix goes to the same pod (its prefix cache) with no shared state;
//   a pod already at its bound, ceil(c × (in flight + 1) / pods), passes the request on to the
//   next pod clockwise, so a hot prefix spills over instead of overloading one pod.
//
// Plain functions of their inputs: the caller keeps the loads (under its own lock).
#include <boost/json/fwd.hpp>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace va::routing {

// A 64-bit hash that is the same in every build and process (FNV-1a, then a finaliser that
// spreads the bits): the key of the ring, which proxy replicas must agree on.
std::uint64_t stable_hash(std::string_view bytes);

// The index of the pod to send to: of loads[a] and loads[b] for two distinct indices drawn from
// `random`, the lower (a on a tie). `loads` is not empty; `skip`, empty or one per pod, marks
// pods not to draw (not all of them).
std::size_t least_outstanding(std::span<const std::size_t> loads, std::uint64_t random,
                              std::span<const bool> skip = {});

class Ring {
 public:
  // The ring of `pods` (their stable ids, e.g. "10.0.0.7:8000"), `points` places each.
  explicit Ring(std::vector<std::string> pods, int points = 100);

  // The index (into the pods given) of the pod for `key`: the first clockwise from it whose load
  // is under ceil(c × (sum of loads + 1) / pods). `loads` has one entry per pod; `skip`, empty or
  // one per pod, marks pods passed over and left out of the sum and the count (not all of them).
  std::size_t pick(std::uint64_t key, std::span<const std::size_t> loads, double c = 1.25,
                   std::span<const bool> skip = {}) const;

  std::size_t size() const { return pods_.size(); }
  const std::vector<std::string>& pods() const { return pods_; }

 private:
  struct Point {
    std::uint64_t at;
    std::uint32_t pod;
  };
  std::vector<std::string> pods_;
  std::vector<Point> points_;  // sorted by `at`
};

// What the prefix of a chat or completion request body is: its `messages` rendered in order
// (role, then the text of the content, each followed by a newline) or its `prompt`, cut to
// `limit` bytes. Empty when the body has neither.
std::string prompt_prefix(const boost::json::object& body, std::size_t limit);

// The ring's key for a request body: the stable hash of its prompt_prefix. None when the body is
// not a JSON object or has no prompt (embeddings of token ids, say): such a request goes to the
// least loaded pod, not all of them to one.
std::optional<std::uint64_t> prefix_key(std::string_view body, std::size_t limit);

}  // namespace va::routing
