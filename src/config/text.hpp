#pragma once
// String and file helpers shared by the loader's parts (config/loader.cpp). Pure functions; safe
// from any thread. Not for use outside src/config.
#include <charconv>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

namespace va::config {

using Env = std::map<std::string, std::string>;

std::string join(const std::vector<std::string>& parts, std::string_view sep);
std::string in_quotes(std::string_view s);
std::string_view trim(std::string_view s);
std::string lower(std::string_view s);

// The offset of the first byte that is not well-formed UTF-8 (no overlong forms, no surrogates,
// nothing above U+10FFFF: Boost.Locale's header-only decoder checks all three), or npos. A
// config's strings must be UTF-8: yaml-cpp reads other bytes as they are but writes each as
// U+FFFD, so --print-config would show another value.
std::size_t invalid_utf8(std::string_view s);

// The whole file, or nullopt with `why` ("is a directory", strerror).
std::optional<std::string> read_file(const std::string& path, std::string& why);

// A decimal integer into `out`; the problem in words when it is not one (`out` is then untouched).
template <typename Int>
std::optional<std::string> parse_number(std::string_view s, Int& out) {
  if (std::is_unsigned_v<Int> && !s.empty() && s.front() == '-') {
    return "must not be negative";
  }
  Int value{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range) {
    return "number out of range";
  }
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty()) {
    return "expected a number";
  }
  out = value;
  return std::nullopt;
}

}  // namespace va::config
