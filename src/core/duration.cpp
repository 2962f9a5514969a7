#include "core/duration.hpp"

#include <array>
#include <cstdint>
#include <limits>

namespace va {

namespace {

using Duration = std::chrono::milliseconds;

struct Unit {
  std::string_view suffix;
  std::int64_t ms;
};

// Largest first: parse_duration requires compounds in this order and format_duration picks the
// first unit that divides exactly.
constexpr std::array<Unit, 4> kUnits{{{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}}};

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

std::optional<Duration> parse_duration(std::string_view s) {
  if (s.empty()) {
    return std::nullopt;
  }
  constexpr std::int64_t kMax = std::numeric_limits<Duration::rep>::max();
  std::int64_t total = 0;
  std::size_t next_unit = 0;  // units must strictly decrease: "1m30s", never "30s1m" or "1s1s"
  std::size_t i = 0;
  while (i < s.size()) {
    std::int64_t n = 0;
    const std::size_t digits_start = i;
    for (; i < s.size() && is_digit(s[i]); ++i) {
      const int digit = s[i] - '0';
      if (n > (kMax - digit) / 10) {
        return std::nullopt;
      }
      n = n * 10 + digit;
    }
    if (i == digits_start) {
      return std::nullopt;  // no number: "-5s", "ms", " 5s", "1.5s"
    }
    const std::size_t unit_start = i;
    for (; i < s.size() && !is_digit(s[i]); ++i) {
    }
    const std::string_view suffix = s.substr(unit_start, i - unit_start);
    std::size_t u = next_unit;
    for (; u < kUnits.size() && kUnits[u].suffix != suffix; ++u) {
    }
    if (u == kUnits.size()) {
      return std::nullopt;  // bare number, unknown unit, or units out of order
    }
    next_unit = u + 1;
    if (n > (kMax - total) / kUnits[u].ms) {
      return std::nullopt;
    }
    total += n * kUnits[u].ms;
  }
  return Duration(total);
}

std::string format_duration(Duration d) {
  const std::int64_t count = d.count();
  if (count == 0) {
    return "0s";
  }
  // The magnitude as unsigned, so that the most negative value does not overflow on negation.
  const std::uint64_t ms = count < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(count)
                                     : static_cast<std::uint64_t>(count);
  const std::string sign = count < 0 ? "-" : "";
  for (const Unit& unit : kUnits) {
    const auto unit_ms = static_cast<std::uint64_t>(unit.ms);
    if (ms % unit_ms == 0) {
      return sign + std::to_string(ms / unit_ms) + std::string(unit.suffix);
    }
  }
  return sign + std::to_string(ms) + "ms";  // unreachable: every value divides by 1ms
}

}  // namespace va
