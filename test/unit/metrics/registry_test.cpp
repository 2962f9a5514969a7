#include "metrics/registry.hpp"

#include <gtest/gtest.h>

namespace va::metrics {
namespace {

TEST(Registry, RendersCountersWithLabelsInTextFormat) {
  Registry r;
  auto& c = r.counter("x_total", "Things.", {"backend", "code"});
  c.with({"a", "200"}).inc();
  c.with({"a", "200"}).inc(2);
  EXPECT_EQ(
      r.render(),
      "# HELP x_total Things.\n# TYPE x_total counter\nx_total{backend=\"a\",code=\"200\"} 3\n");
}

TEST(Registry, EscapesLabelValues) {
  Registry r;
  r.gauge("g", "G.", {"l"}).with({"a\"b\\c\nd"}).set(1.5);
  EXPECT_NE(r.render().find("g{l=\"a\\\"b\\\\c\\nd\"} 1.5\n"), std::string::npos);
}

TEST(Registry, HistogramBucketsAreCumulativeAndEndWithInf) {
  Registry r;
  auto& h = r.histogram("h_seconds", "H.", {"b"}, {0.1, 1});
  h.with({"x"}).observe(0.05);
  h.with({"x"}).observe(0.5);
  h.with({"x"}).observe(5);
  const auto text = r.render();
  EXPECT_NE(text.find("h_seconds_bucket{b=\"x\",le=\"0.1\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("h_seconds_bucket{b=\"x\",le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("h_seconds_bucket{b=\"x\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("h_seconds_sum{b=\"x\"} 5.55\n"), std::string::npos);
  EXPECT_NE(text.find("h_seconds_count{b=\"x\"} 3\n"), std::string::npos);
}

TEST(Registry, FormatsSpecialValues) {
  EXPECT_EQ(format_value(3), "3");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(1.0 / 0.0), "+Inf");
}

}  // namespace
}  // namespace va::metrics
