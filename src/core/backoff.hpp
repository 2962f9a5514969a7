#pragma once
// The one retry schedule: `first`, doubling with each failure, at most `cap`. Callers that retry
// against a shared server add jitter (jittered()), so that many clients do not retry in step.
#include <algorithm>
#include <chrono>
#include <random>

namespace va {

// The wait after the `failures`-th failure in a row (from 1).
constexpr std::chrono::milliseconds backoff(int failures, std::chrono::milliseconds first,
                                            std::chrono::milliseconds cap) {
  const int doublings = std::clamp(failures - 1, 0, 16);
  return std::min<std::chrono::milliseconds>(first * (1L << doublings), cap);
}

// `d` times a factor drawn in [0.5, 1.5): ±50% jitter.
inline std::chrono::milliseconds jittered(std::chrono::milliseconds d, std::mt19937& rng) {
  std::uniform_real_distribution<double> factor(0.5, 1.5);
  return std::chrono::milliseconds(static_cast<long>(static_cast<double>(d.count()) * factor(rng)));
}

}  // namespace va
