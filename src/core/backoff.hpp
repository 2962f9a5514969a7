#pragma once
// The one retry schedule: `first`, doubling with each failure, at most `cap`. Callers that retry
// against a shared server add their own jitter.
#include <algorithm>
#include <chrono>

namespace va {

// The wait after the `failures`-th failure in a row (from 1).
constexpr std::chrono::milliseconds backoff(int failures, std::chrono::milliseconds first,
                                            std::chrono::milliseconds cap) {
  const int doublings = std::clamp(failures - 1, 0, 16);
  return std::min<std::chrono::milliseconds>(first * (1L << doublings), cap);
}

}  // namespace va
