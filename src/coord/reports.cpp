#include "coord/reports.hpp"

#include <boost/json.hpp>

namespace va::coord {
namespace {

namespace json = boost::json;

std::int64_t integer(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v && v->is_int64()) {
    return v->get_int64();
  }
  if (v && v->is_uint64()) {
    return static_cast<std::int64_t>(v->get_uint64());
  }
  return 0;
}

std::string string_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace

std::string encode(const MemberReport& r) {
  json::object backends;
  for (const auto& [name, a] : r.backends) {
    backends[name] = {{"in_flight", a.in_flight}, {"held", a.held}, {"idle_ms", a.idle_ms}};
  }
  json::object o{{"backends", std::move(backends)}};
  if (!r.acked.empty()) {
    o["acked"] = r.acked;
  }
  return json::serialize(o);
}

std::string encode(const std::optional<Fence>& f) {
  if (!f) {
    return "{}";
  }
  return json::serialize(
      json::object{{"fence", {{"backend", f->backend}, {"id", f->id}, {"stopping", f->stopping}}}});
}

MemberReport decode_report(const std::string& text) {
  MemberReport r;
  error_code ec;
  const auto v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    return r;
  }
  const auto& o = v.get_object();
  r.acked = string_at(o, "acked");
  if (const auto* b = o.if_contains("backends"); b && b->is_object()) {
    for (const auto& [name, value] : b->get_object()) {
      if (!value.is_object()) {
        continue;
      }
      const auto& a = value.get_object();
      r.backends[std::string(name)] = BackendActivity{
          .in_flight = static_cast<std::size_t>(std::max<std::int64_t>(0, integer(a, "in_flight"))),
          .held = static_cast<std::size_t>(std::max<std::int64_t>(0, integer(a, "held"))),
          .idle_ms = std::max<std::int64_t>(0, integer(a, "idle_ms"))};
    }
  }
  return r;
}

std::optional<Fence> decode_fence(const std::string& text) {
  error_code ec;
  const auto v = json::parse(text, ec);
  if (ec || !v.is_object()) {
    return std::nullopt;
  }
  const auto* f = v.get_object().if_contains("fence");
  if (f == nullptr || !f->is_object()) {
    return std::nullopt;
  }
  const auto& o = f->get_object();
  Fence fence{.backend = string_at(o, "backend"), .id = string_at(o, "id"), .stopping = false};
  if (const auto* s = o.if_contains("stopping"); s && s->is_bool()) {
    fence.stopping = s->get_bool();
  }
  if (fence.backend.empty() || fence.id.empty()) {
    return std::nullopt;
  }
  return fence;
}

}  // namespace va::coord
