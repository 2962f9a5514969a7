// One backend's pods (routing/pods.hpp): the spread of least outstanding, the same pod for the
// same key on two separate instances (two proxy replicas), a pod's pool kept across updates, a
// removed pod's requests, and a pod passed over after a failed connection.
#include "routing/pods.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <list>
#include <map>

namespace va::routing {
namespace {

std::vector<PodAddress> addresses(int n) {
  std::vector<PodAddress> out;
  for (int i = 0; i < n; ++i) {
    std::string host("10.0.0.");
    out.push_back({"vllm-" + std::to_string(i), host.append(std::to_string(i + 2)), "8000"});
  }
  return out;
}

Pods::Settings settings(Policy policy) {
  return Pods::Settings{.policy = policy,
                        .pool = {.target = {.host = "vllm",
                                            .port = "8000",
                                            .host_header = "vllm:8000",
                                            .headers = {}}},
                        .bound = 1.25,
                        .avoid_for = std::chrono::seconds(2)};
}

std::map<std::string, int> loads(const Pods& pods) {
  std::map<std::string, int> out;
  for (const auto& p : pods.status()) {
    out[std::string(p.at("pod").as_string())] =
        static_cast<int>(p.at("in_flight").to_number<std::int64_t>());
  }
  return out;
}

TEST(Pods, NoPodKnownMeansNoPick) {
  Pods pods(settings(Policy::least_outstanding));
  EXPECT_FALSE(pods.pick(1));
  pods.update(addresses(2));
  EXPECT_TRUE(pods.pick(1));
  pods.update({});
  EXPECT_FALSE(pods.pick(1));
}

TEST(Pods, LeastOutstandingKeepsInFlightRequestsEven) {
  Pods pods(settings(Policy::least_outstanding));
  pods.update(addresses(4));
  std::list<Pods::Use> in_flight;
  for (int i = 0; i < 400; ++i) {
    in_flight.push_back(*pods.pick(0));
    if (i % 3 == 2) {
      in_flight.pop_front();  // requests end in arrival order, one for every three
    }
  }
  auto l = loads(pods);
  const auto [lo, hi] =
      std::minmax_element(l.begin(), l.end(), [](auto& a, auto& b) { return a.second < b.second; });
  EXPECT_EQ(in_flight.size(), 267u);
  EXPECT_LE(hi->second - lo->second, 3) << hi->first << " " << lo->first;
  in_flight.clear();
  for (const auto& [pod, n] : loads(pods)) {
    EXPECT_EQ(n, 0) << pod;
  }
}

TEST(Pods, APrefixGoesToTheSamePodOnEveryReplicaAndAHotOneSpills) {
  Pods a(settings(Policy::prefix)), b(settings(Policy::prefix));
  auto list = addresses(4);
  a.update(list);
  std::reverse(list.begin(), list.end());  // another order: the ring is built from the addresses
  std::sort(list.begin(), list.end(), [](auto& x, auto& y) { return x.host < y.host; });
  b.update(list);
  for (std::uint64_t key = 0; key < 200; ++key) {
    const auto k = stable_hash(std::to_string(key));
    EXPECT_EQ(a.pick(k)->address().pod, b.pick(k)->address().pod) << key;
  }
  // One prefix, 40 requests at once: no pod above 1.25 × the mean (+1 for the ceiling).
  std::vector<Pods::Use> hot;
  for (int i = 0; i < 40; ++i) {
    hot.push_back(*a.pick(stable_hash("the system prompt")));
  }
  for (const auto& [pod, n] : loads(a)) {
    EXPECT_LE(n, 13) << pod;
  }
  EXPECT_GT(loads(a).size(), 1u);
}

TEST(Pods, AKnownPodKeepsItsPoolAndARemovedOnesRequestsEndCleanly) {
  Pods pods(settings(Policy::least_outstanding));
  pods.update(addresses(2));
  auto first = *pods.pick(0);
  upstream::Pool* pool = &first.pool();
  EXPECT_EQ(first.pool().target().host_header, "vllm:8000");  // the backend's Host
  EXPECT_EQ(first.pool().target().port, "8000");
  const auto name = first.address().pod;
  auto list = addresses(3);
  pods.update(list);
  for (int i = 0; i < 20; ++i) {
    auto u = *pods.pick(0);
    if (u.address().pod == name) {
      EXPECT_EQ(&u.pool(), pool);  // the same keep-alive pool
    }
  }
  std::erase_if(list, [&](const PodAddress& a) { return a.pod == name; });
  pods.update(list);  // terminating: no new request, the one in flight goes on
  for (int i = 0; i < 20; ++i) {
    EXPECT_NE(pods.pick(0)->address().pod, name);
  }
  EXPECT_EQ(first.address().pod, name);
}

TEST(Pods, APodWhoseConnectionFailedIsPassedOverUnlessAllAre) {
  Pods pods(settings(Policy::prefix));
  pods.update(addresses(3));
  const auto key = stable_hash("k");
  const auto home = pods.pick(key)->address().pod;
  pods.pick(key)->connect_failed();
  for (int i = 0; i < 10; ++i) {
    EXPECT_NE(pods.pick(key)->address().pod, home);
  }
  auto second = pods.pick(key);
  EXPECT_FALSE(second->connect_failed());  // one left
  auto third = pods.pick(key);
  EXPECT_NE(third->address().pod, second->address().pod);
  EXPECT_TRUE(third->connect_failed());  // the last: the backend itself may be gone
  EXPECT_FALSE(pods.pick(key));          // every pod avoided: the backend's URL
  EXPECT_FALSE(pods.pick(std::nullopt));
}

TEST(Pods, AnAvoidedPodIsNeverDrawnAndLeftOutOfTheBound) {
  Pods lo(settings(Policy::least_outstanding));
  lo.update(addresses(3));
  std::string left;
  {
    auto a = lo.pick(std::nullopt);
    a->connect_failed();
    auto b = lo.pick(std::nullopt);
    b->connect_failed();
    left = lo.pick(std::nullopt)->address().pod;
  }
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(lo.pick(std::nullopt)->address().pod, left);
  }
  // A hot prefix over 4 pods, one of them avoided: 12 requests at once spread over the other 3
  // within 1.25 × their mean (5), not all 12 on the prefix's pod.
  Pods ring(settings(Policy::prefix));
  ring.update(addresses(4));
  const auto key = stable_hash("hot");
  const auto home = ring.pick(key)->address().pod;
  for (bool done = false; !done;) {  // another pod than the prefix's refuses a connection
    auto u = ring.pick(std::nullopt);
    done = u->address().pod != home && !u->connect_failed();
  }
  std::vector<Pods::Use> held;
  std::map<std::string, int> per_pod;
  for (int i = 0; i < 12; ++i) {
    held.push_back(*ring.pick(key));
    ++per_pod[held.back().address().pod];
  }
  EXPECT_EQ(per_pod.size(), 3u);
  for (const auto& [pod, n] : per_pod) {
    EXPECT_LE(n, 5) << pod;
  }
}

}  // namespace
}  // namespace va::routing
