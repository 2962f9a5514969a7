#pragma once
// Reading fields of API objects (Boost.JSON) the way the API writes them, and the times it takes.
// Every getter accepts a null object and answers "absent": a missing status, a missing field and a
// field of another type read the same, as Go's omitempty fields must.
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace va::k8s {

const boost::json::object* child(const boost::json::object* o, std::string_view key);
const boost::json::array* list_of(const boost::json::object* o, std::string_view key);
// "" when absent or not a string.
std::string text(const boost::json::object* o, std::string_view key);
// 0 when absent (every int32 of a Deployment's status is omitempty).
std::int64_t number(const boost::json::object* o, std::string_view key);

// metav1.Time: RFC 3339 in UTC at seconds precision ("2026-12-07T15:04:05Z").
std::string format_time(std::chrono::system_clock::time_point t);
// metav1.MicroTime: the same with six fraction digits ("2026-12-07T15:04:05.123456Z").
std::string format_micro_time(std::chrono::system_clock::time_point t);

}  // namespace va::k8s
