#include "sim/text.hpp"

#include <time.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <random>

#include "sim/sim.hpp"

namespace va::sim {

namespace json = boost::json;

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  if (text == "0") {
    return std::chrono::nanoseconds{0};
  }
  const char* end = text.data() + text.size();
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc{} || ptr == text.data() || value < 0) {
    return std::nullopt;
  }
  const std::string_view unit(ptr, static_cast<std::size_t>(end - ptr));
  double ns_per_unit = 0;
  if (unit == "ns") {
    ns_per_unit = 1;
  } else if (unit == "us") {
    ns_per_unit = 1e3;
  } else if (unit == "ms") {
    ns_per_unit = 1e6;
  } else if (unit == "s") {
    ns_per_unit = 1e9;
  } else if (unit == "m") {
    ns_per_unit = 60e9;
  } else if (unit == "h") {
    ns_per_unit = 3600e9;
  } else {
    return std::nullopt;
  }
  const double ns = value * ns_per_unit;
  if (!std::isfinite(ns) || ns > 1e18) {
    return std::nullopt;
  }
  return std::chrono::nanoseconds{static_cast<std::int64_t>(ns)};
}

std::int64_t realtime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t unix_seconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_hex(std::size_t n) {
  static std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(n, '0');
  for (auto& c : out) {
    c = kDigits[rng() % 16];
  }
  return out;
}

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// Calls f(word) for each whitespace-separated word of s.
template <class F>
void each_word(std::string_view s, F&& f) {
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i])) != 0) {
      ++i;
    }
    const auto begin = i;
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i])) == 0) {
      ++i;
    }
    if (i > begin) {
      f(s.substr(begin, i - begin));
    }
  }
}

int count_words(std::string_view s) {
  int n = 0;
  each_word(s, [&n](std::string_view) { ++n; });
  return n;
}

namespace {

// A prompt, or a message's content: a string, or a list of strings, token ids, token-id lists
// or content parts with a "text". Calls f(token) for each, a token id as its decimal text.
template <class F>
void each_text_token(const json::value& v, F&& f) {
  if (v.is_string()) {
    each_word(v.get_string(), f);
    return;
  }
  if (!v.is_array()) {
    return;
  }
  for (const auto& part : v.get_array()) {
    if (part.is_string()) {
      each_word(part.get_string(), f);
    } else if (part.is_int64() || part.is_uint64()) {
      f(json::serialize(part));
    } else if (part.is_array()) {
      for (const auto& id : part.get_array()) {
        f(json::serialize(id));
      }
    } else if (part.is_object()) {
      if (const auto* t = part.get_object().if_contains("text"); t && t->is_string()) {
        each_word(t->get_string(), f);
      }
    }
  }
}

template <class F>
void each_prompt_token(const json::object& body, bool chat, F&& f) {
  if (chat) {
    if (const auto* msgs = body.if_contains("messages"); msgs && msgs->is_array()) {
      for (const auto& m : msgs->get_array()) {
        if (m.is_object()) {
          if (const auto* c = m.get_object().if_contains("content")) {
            each_text_token(*c, f);
          }
        }
      }
    }
  } else if (const auto* p = body.if_contains("prompt")) {
    each_text_token(*p, f);
  }
}

}  // namespace

int count_prompt_tokens(const json::object& body, bool chat) {
  int n = 0;
  each_prompt_token(body, chat, [&n](std::string_view) { ++n; });
  return std::max(n, 1);
}

std::vector<std::string> prompt_tokens(const json::object& body, bool chat) {
  std::vector<std::string> out;
  each_prompt_token(body, chat, [&out](std::string_view t) { out.emplace_back(t); });
  return out;
}

std::string token_text(int i) { return "tok" + std::to_string(i) + " "; }

}  // namespace va::sim
