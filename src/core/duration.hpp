#pragma once
// Durations as written in the configuration: "250ms", "5s", "2m", "1h", or compounds in
// decreasing units ("1h30m", "1m30s500ms"). Pure functions; safe from any thread.
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace va {

// nullopt for anything else: a bare number ("5"), a negative or fractional value, an unknown or
// repeated unit, spaces, or a value that overflows.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view s);

// The shortest exact spelling in the largest unit that divides it: 90s -> "90s", 120s -> "2m",
// 0 -> "0s". parse_duration(format_duration(d)) == d for every d >= 0.
std::string format_duration(std::chrono::milliseconds d);

// A duration in seconds, for logs, metrics and /status.
template <class Rep, class Period>
double to_seconds(std::chrono::duration<Rep, Period> d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace va
