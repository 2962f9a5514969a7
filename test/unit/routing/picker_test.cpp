#include "routing/picker.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <random>

namespace va::routing {
namespace {

// Strings built by append: GCC 12's -Wrestrict misfires on `"a" + std::string + "b"` at -O3.
std::string text(std::string_view head, int n, std::string_view tail = "") {
  std::string out(head);
  return out.append(std::to_string(n)).append(tail);
}

std::vector<std::string> pods(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(text("10.0.0.", i + 1, ":8000"));
  }
  return out;
}

TEST(StableHash, IsTheSameEveryTimeAndSpreadsSimilarKeys) {
  EXPECT_EQ(stable_hash("system: you are a helpful assistant"),
            stable_hash("system: you are a helpful assistant"));
  EXPECT_NE(stable_hash("prompt 1"), stable_hash("prompt 2"));
  // Values fixed here (computed apart, from FNV-1a 64 and splitmix64's finaliser): every build
  // and replica must agree on them.
  EXPECT_EQ(stable_hash(""), 0xf52a15e9a9b5e89bULL);
  EXPECT_EQ(stable_hash("system"), 0xe78601459e298416ULL);
}

TEST(Ring, EveryReplicaSendsAPrefixToTheSamePodWhateverOrderItLearntThePodsIn) {
  auto a = pods(4);
  auto b = a;
  std::reverse(b.begin(), b.end());
  const Ring ra(a), rb(b);
  const std::vector<std::size_t> idle(4, 0);
  for (int k = 0; k < 1000; ++k) {
    const auto key = stable_hash(text("prefix ", k));
    EXPECT_EQ(a[ra.pick(key, idle)], b[rb.pick(key, idle)]) << k;
  }
}

TEST(Ring, SpreadsKeysOverThePodsAndMovesFewWhenAPodGoes) {
  const auto four = pods(4);
  const Ring ring(four);
  const std::vector<std::size_t> idle(4, 0);
  std::map<std::string, int> count;
  std::vector<std::string> before;
  for (int k = 0; k < 10000; ++k) {
    before.push_back(four[ring.pick(stable_hash(text("k", k)), idle)]);
    ++count[before.back()];
  }
  for (const auto& [pod, n] : count) {
    EXPECT_GT(n, 2500 * 0.75) << pod;
    EXPECT_LT(n, 2500 * 1.25) << pod;
  }
  // Without the third pod, only its keys move.
  auto three = four;
  three.erase(three.begin() + 2);
  const Ring smaller(three);
  const std::vector<std::size_t> idle3(3, 0);
  int moved = 0;
  for (int k = 0; k < 10000; ++k) {
    const auto& now = three[smaller.pick(stable_hash(text("k", k)), idle3)];
    if (now != before[static_cast<std::size_t>(k)]) {
      ++moved;
      EXPECT_EQ(before[static_cast<std::size_t>(k)], four[2]) << k;
    }
  }
  EXPECT_EQ(moved, count[four[2]]);
}

TEST(Ring, AHotPrefixSpillsOverWithinTheBound) {
  const auto four = pods(4);
  const Ring ring(four);
  std::vector<std::size_t> loads(4, 0);
  const auto key = stable_hash("the one system prompt everybody uses");
  const auto home = ring.pick(key, loads);
  // 100 requests with that prefix, none ending: the home pod takes its share up to the bound,
  // then the next ones clockwise; no pod ever holds more than 1.25 × the mean, rounded up.
  for (int i = 0; i < 100; ++i) {
    std::size_t total = 0;
    for (auto l : loads) {
      total += l;
    }
    const auto i_pod = ring.pick(key, loads);
    const auto bound =
        static_cast<std::size_t>(std::ceil(1.25 * static_cast<double>(total + 1) / 4));
    ++loads[i_pod];
    EXPECT_LE(loads[i_pod], bound) << i;
  }
  EXPECT_EQ(*std::max_element(loads.begin(), loads.end()), loads[home]);
  EXPECT_LE(loads[home], 32u);  // ceil(1.25 × 100 / 4)
  EXPECT_GE(*std::min_element(loads.begin(), loads.end()), 1u);
}

// Requests arrive (sent where `pick` says) and end (any one in flight) at random, about 128 in
// flight over 16 pods; the most the busiest pod was seen over the mean.
template <class Pick>
double worst_over_mean(Pick pick) {
  std::mt19937_64 rng(7);
  std::vector<std::size_t> in_flight(16, 0);
  std::size_t total = 0;
  double worst = 0;
  for (int step = 0; step < 20000; ++step) {
    if (total < 128 || rng() % 2 == 0) {
      ++in_flight[pick(in_flight, rng())];
      ++total;
    } else {
      auto nth = rng() % total;
      std::size_t pod = 0;
      while (nth >= in_flight[pod]) {
        nth -= in_flight[pod++];
      }
      --in_flight[pod];
      --total;
    }
    if (step > 1000) {
      const double mean = static_cast<double>(total) / 16;
      const auto hi = *std::max_element(in_flight.begin(), in_flight.end());
      worst = std::max(worst, static_cast<double>(hi) - mean);
    }
  }
  return worst;
}

TEST(LeastOutstanding, PicksTheLessLoadedOfTwoAndSpreadsInFlightEvenly) {
  const std::vector<std::size_t> loads{5, 0, 5, 5};
  int idle_pod = 0;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 1000; ++i) {
    idle_pod += least_outstanding(loads, rng()) == 1 ? 1 : 0;
  }
  EXPECT_GT(idle_pod, 400);  // drawn in half the pairs, chosen whenever drawn
  EXPECT_EQ(least_outstanding(std::vector<std::size_t>{3}, rng()), 0u);

  // 16 pods, requests arriving and ending at random, about 128 in flight (8 a pod): the most
  // loaded pod stays within a few of the mean (two choices: log log n above it), well under
  // where one random choice takes it.
  const auto two = worst_over_mean(
      [](const std::vector<std::size_t>& l, std::uint64_t r) { return least_outstanding(l, r); });
  const auto one = worst_over_mean(
      [](const std::vector<std::size_t>& l, std::uint64_t r) { return r % l.size(); });
  std::printf(
      "16 pods, ~128 in flight: the most loaded at most %.2f over the mean (one random "
      "choice: %.2f)\n",
      two, one);
  EXPECT_LE(two, 5.0);
  EXPECT_LT(two * 2, one);
}

TEST(PromptPrefix, RendersMessagesInOrderOrThePromptCutToTheLimit) {
  const auto chat = boost::json::parse(R"({"messages":[
      {"role":"system","content":"You are terse."},
      {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url"},
                                {"type":"text","text":" there"}]}]})")
                        .as_object();
  EXPECT_EQ(prompt_prefix(chat, 1024), "system\nYou are terse.\nuser\nHi there\n");
  EXPECT_EQ(prompt_prefix(chat, 10), "system\nYou");
  const auto completion = boost::json::parse(R"({"prompt":"Once upon a time"})").as_object();
  EXPECT_EQ(prompt_prefix(completion, 4), "Once");
  const auto batch = boost::json::parse(R"({"prompt":["first","second"]})").as_object();
  EXPECT_EQ(prompt_prefix(batch, 1024), "first");
  EXPECT_EQ(prompt_prefix(boost::json::object{{"model", "m"}}, 1024), "");
}

TEST(PrefixKey, IsTheHashOfThePromptsPrefixAndNoneWithoutAPrompt) {
  const auto a = prefix_key(R"({"model":"m","prompt":"Once upon a time"})", 4);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, stable_hash("Once"));
  EXPECT_EQ(prefix_key(R"({"prompt":"Once in a while"})", 4), a);  // the same first 4 bytes
  EXPECT_NE(prefix_key(R"({"prompt":"Twice"})", 4), a);
  // Embeddings of token ids, an empty conversation, a body that is not JSON: no key.
  EXPECT_EQ(prefix_key(R"({"model":"m","input":[[1,2,3]]})", 1024), std::nullopt);
  EXPECT_EQ(prefix_key(R"({"messages":[]})", 1024), std::nullopt);
  EXPECT_EQ(prefix_key("{not json", 1024), std::nullopt);
  EXPECT_EQ(prefix_key(R"(["prompt"])", 1024), std::nullopt);
}

}  // namespace
}  // namespace va::routing
