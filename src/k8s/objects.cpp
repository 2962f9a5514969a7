#include "k8s/objects.hpp"

#include <fmt/format.h>

#include <ctime>

namespace va::k8s {

namespace json = boost::json;

const json::object* child(const json::object* o, std::string_view key) {
  const auto* v = o ? o->if_contains(key) : nullptr;
  return v ? v->if_object() : nullptr;
}

const json::array* list_of(const json::object* o, std::string_view key) {
  const auto* v = o ? o->if_contains(key) : nullptr;
  return v ? v->if_array() : nullptr;
}

std::string text(const json::object* o, std::string_view key) {
  const auto* v = o ? o->if_contains(key) : nullptr;
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

std::int64_t number(const json::object* o, std::string_view key) {
  const auto* v = o ? o->if_contains(key) : nullptr;
  if (v && v->is_int64()) {
    return v->get_int64();
  }
  if (v && v->is_uint64()) {
    return static_cast<std::int64_t>(v->get_uint64());
  }
  return 0;
}

namespace {

std::string seconds_part(std::chrono::system_clock::time_point t) {
  const std::time_t s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

}  // namespace

std::string format_time(std::chrono::system_clock::time_point t) { return seconds_part(t) + "Z"; }

std::string format_micro_time(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto whole = floor<seconds>(t);
  const auto micros = duration_cast<microseconds>(t - whole).count();
  return fmt::format("{}.{:06}Z", seconds_part(whole), micros);
}

}  // namespace va::k8s
