#pragma once
// Structured logging: one JSON object per line on stdout (or `key=value` text), via spdlog's
// thread-safe stdout sink. Fields are values, never format strings. Never pass a secret.
#include <spdlog/spdlog.h>

#include <boost/json/value.hpp>
#include <initializer_list>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace va::log {

enum class Format { json, text };
using Level = spdlog::level::level_enum;
// One `key: value` of a log line; strings, numbers, bools or any JSON value.
struct Field {
  Field(std::string_view k, std::string_view v)
      : key(k), value(boost::json::string_view(v.data(), v.size())) {}
  Field(std::string_view k, const char* v) : Field(k, std::string_view(v)) {}
  Field(std::string_view k, const std::string& v) : Field(k, std::string_view(v)) {}
  Field(std::string_view k, boost::json::value v) : key(k), value(std::move(v)) {}
  template <class T>
  requires std::is_arithmetic_v<T> Field(std::string_view k, T v) : key(k), value(v) {}

  std::string_view key;
  boost::json::value value;
};
using Fields = std::initializer_list<Field>;

void init(Level level, Format format);
bool enabled(Level level);
void write(Level level, std::string_view msg, Fields fields = {});

inline void debug(std::string_view msg, Fields f = {}) { write(Level::debug, msg, f); }
inline void info(std::string_view msg, Fields f = {}) { write(Level::info, msg, f); }
inline void warn(std::string_view msg, Fields f = {}) { write(Level::warn, msg, f); }
inline void error(std::string_view msg, Fields f = {}) { write(Level::err, msg, f); }

}  // namespace va::log

// Crash on the impossible: logs the failed condition and aborts.
#define VA_CHECK(cond)                                                                  \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      ::va::log::error("check failed",                                                  \
                       {{"condition", #cond}, {"file", __FILE__}, {"line", __LINE__}}); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
