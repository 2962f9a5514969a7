// The cost of one routing decision (issue 18's target: under 2 µs at 16 pods, and flat from 1 to
// 64 pods): for each pod count, the prefix of a parsed chat body (1 KiB of prompt), its hash and
// the bounded-load ring's pick; and least outstanding of two. Not part of the product.
//
//   build/release/bin/routing-cost [iterations]
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "routing/picker.hpp"

namespace {

using namespace va::routing;
using Clock = std::chrono::steady_clock;

boost::json::object chat_body(int i) {
  std::string system = "You are a helpful assistant for team ";
  system.append(std::to_string(i % 16)).append(". ");
  while (system.size() < 1200) {
    system.append("Answer briefly and cite the document you used. ");
  }
  return boost::json::object{
      {"model", "m"},
      {"messages",
       boost::json::array{boost::json::object{{"role", "system"}, {"content", system}},
                          boost::json::object{{"role", "user"}, {"content", "hello"}}}}};
}

std::vector<std::string> addresses(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    std::string a = "10.0.";
    out.push_back(a.append(std::to_string(i / 250))
                      .append(".")
                      .append(std::to_string(i % 250 + 1))
                      .append(":8000"));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 200000;
  std::vector<boost::json::object> bodies;
  for (int i = 0; i < 64; ++i) {
    bodies.push_back(chat_body(i));
  }
  std::mt19937_64 rng(1);
  std::printf(
      "| pods | prefix: body → pod (ns) | of which prefix + hash (ns) | least outstanding (ns) "
      "|\n");
  std::printf("|---|---|---|---|\n");
  for (const int n : {1, 2, 4, 8, 16, 32, 64}) {
    const Ring ring(addresses(n));
    std::vector<std::size_t> loads(static_cast<std::size_t>(n), 0);
    std::size_t sink = 0;
    auto t0 = Clock::now();
    for (long i = 0; i < iterations; ++i) {
      const auto& body = bodies[static_cast<std::size_t>(i % 64)];
      const auto pod = ring.pick(stable_hash(prompt_prefix(body, 1024)), loads);
      loads[pod] = (loads[pod] + 1) % 8;  // loads that move, as requests come and go
      sink += pod;
    }
    const double whole = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    t0 = Clock::now();
    for (long i = 0; i < iterations; ++i) {
      sink += stable_hash(prompt_prefix(bodies[static_cast<std::size_t>(i % 64)], 1024));
    }
    const double prefix = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    t0 = Clock::now();
    for (long i = 0; i < iterations; ++i) {
      const auto pod = least_outstanding(loads, rng());
      loads[pod] = (loads[pod] + 1) % 8;
      sink += pod;
    }
    const double least = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
    const auto per = [iterations](double ns) { return ns / static_cast<double>(iterations); };
    std::printf("| %d | %.0f | %.0f | %.0f |\n", n, per(whole), per(prefix), per(least));
    if (sink == 42) {
      std::printf(" ");  // keeps the loops from being optimised away
    }
  }
  return 0;
}
