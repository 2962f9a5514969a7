#include "metrics/registry.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>

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

TEST(Registry, ASampledGaugeShowsWhatItsSourcesHoldNowAndNothingOfARemovedOne) {
  Registry r;
  auto& g = r.sampled_gauge("pods", "Per pod.", {"backend", "pod"});
  std::vector<std::pair<std::string, double>> pods = {{"p0", 2}, {"p1", 0}};
  const auto id = g.add([&](SampledGauge::Samples& out) {
    for (const auto& [pod, n] : pods) {
      out.push_back({{"a", pod}, n});
    }
  });
  const std::string head = "# HELP pods Per pod.\n# TYPE pods gauge\n";
  EXPECT_EQ(r.render(),
            head + "pods{backend=\"a\",pod=\"p0\"} 2\npods{backend=\"a\",pod=\"p1\"} 0\n");
  pods.erase(pods.begin());  // p0 left
  EXPECT_EQ(r.render(), head + "pods{backend=\"a\",pod=\"p1\"} 0\n");
  g.remove(id);
  EXPECT_EQ(r.render(), head);
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

// Family::with() keeps the children a thread found last, across families: each must still count
// into its own family's child.
TEST(Registry, ChildrenAreFoundAgainByTheirFamilyAndValuesOnly) {
  Registry r;
  auto& a = r.counter("a_total", "A.", {"l"});
  auto& b = r.counter("b_total", "B.", {"l"});
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 20; ++i) {  // more values than a thread keeps
      a.with({std::to_string(i)}).inc();
      b.with({std::to_string(i)}).inc(2);
    }
  }
  EXPECT_EQ(a.with({"7"}).value(), 5);
  EXPECT_EQ(b.with({"7"}).value(), 10);
  EXPECT_EQ(a.with({"19"}).value(), 5);
}

TEST(Registry, AFamilyMadeWhereAnotherWasCountsIntoItsOwnChildren) {
  for (int i = 0; i < 3; ++i) {
    Registry r;  // likely at the address of the last one, and so its family
    r.counter("x_total", "X.", {"l"}).with({"v"}).inc();
    EXPECT_EQ(r.render(), "# HELP x_total X.\n# TYPE x_total counter\nx_total{l=\"v\"} 1\n");
  }
}

TEST(Registry, ThreadsShareTheChildOfTheSameValues) {
  Registry r;
  auto& c = r.counter("x_total", "X.", {"l"});
  auto count = [&c] {
    for (int i = 0; i < 1000; ++i) {
      c.with({"v"}).inc();
    }
  };
  std::thread other(count);
  count();
  other.join();
  EXPECT_EQ(c.with({"v"}).value(), 2000);
}

TEST(Registry, FormatsSpecialValues) {
  EXPECT_EQ(format_value(3), "3");
  EXPECT_EQ(format_value(0.25), "0.25");
  EXPECT_EQ(format_value(1.0 / 0.0), "+Inf");
}

}  // namespace
}  // namespace va::metrics
