#include "k8s/objects.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace va::k8s {
namespace {

namespace json = boost::json;
using namespace std::chrono;

TEST(Objects, GettersReadAbsentAndMistypedFieldsAsAbsent) {
  const json::object o = json::parse(R"({"status":{"replicas":3,"big":18446744073709551615,
      "name":"x","list":[1],"odd":"3"}})")
                             .as_object();
  const auto* status = child(&o, "status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(number(status, "replicas"), 3);
  EXPECT_EQ(number(status, "readyReplicas"), 0);
  EXPECT_EQ(number(status, "odd"), 0);
  EXPECT_EQ(text(status, "name"), "x");
  EXPECT_EQ(text(status, "replicas"), "");
  EXPECT_EQ(list_of(status, "list")->size(), 1u);
  EXPECT_EQ(list_of(status, "name"), nullptr);
  EXPECT_EQ(child(status, "name"), nullptr);
  EXPECT_EQ(child(nullptr, "status"), nullptr);
  EXPECT_EQ(text(nullptr, "name"), "");
  EXPECT_EQ(number(nullptr, "replicas"), 0);
}

TEST(Objects, TimesAreRfc3339InUtc) {
  const auto t = sys_days(year(2026) / 12 / 7) + hours(15) + minutes(4) + seconds(5) +
                 microseconds(7) + nanoseconds(999);
  EXPECT_EQ(format_time(time_point_cast<system_clock::duration>(t)), "2026-12-07T15:04:05Z");
  EXPECT_EQ(format_micro_time(time_point_cast<system_clock::duration>(t)),
            "2026-12-07T15:04:05.000007Z");
}

}  // namespace
}  // namespace va::k8s
