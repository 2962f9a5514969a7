#include "core/duration.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace va {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

TEST(ParseDuration, AcceptsEachUnit) {
  EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(parse_duration("5s"), seconds(5));
  EXPECT_EQ(parse_duration("1m"), minutes(1));
  EXPECT_EQ(parse_duration("2h"), hours(2));
}

TEST(ParseDuration, AcceptsZero) {
  EXPECT_EQ(parse_duration("0s"), milliseconds(0));
  EXPECT_EQ(parse_duration("0ms"), milliseconds(0));
  EXPECT_EQ(parse_duration("0h"), milliseconds(0));
}

TEST(ParseDuration, AcceptsCompoundsInDecreasingUnits) {
  EXPECT_EQ(parse_duration("1m30s"), seconds(90));
  EXPECT_EQ(parse_duration("1h30m"), minutes(90));
  EXPECT_EQ(parse_duration("1s500ms"), milliseconds(1500));
  EXPECT_EQ(parse_duration("1h2m3s4ms"), hours(1) + minutes(2) + seconds(3) + milliseconds(4));
}

TEST(ParseDuration, AcceptsLargeCountsInOneUnit) {
  EXPECT_EQ(parse_duration("90s"), seconds(90));
  EXPECT_EQ(parse_duration("1500ms"), milliseconds(1500));
  EXPECT_EQ(parse_duration("007s"), seconds(7));
}

TEST(ParseDuration, RejectsBareNumbers) {
  EXPECT_EQ(parse_duration("5"), std::nullopt);
  EXPECT_EQ(parse_duration("0"), std::nullopt);
  EXPECT_EQ(parse_duration("1m30"), std::nullopt);
}

TEST(ParseDuration, RejectsNegativeAndFractionalValues) {
  EXPECT_EQ(parse_duration("-5s"), std::nullopt);
  EXPECT_EQ(parse_duration("+5s"), std::nullopt);
  EXPECT_EQ(parse_duration("1.5s"), std::nullopt);
}

TEST(ParseDuration, RejectsUnknownUnitsAndSpelling) {
  for (const char* s : {"5d", "5us", "5ns", "5S", "5M", "5 minutes", "5sec", "5mins", "ms", "s", "",
                        " 5s", "5s ", "5 s", "5s,"}) {
    EXPECT_EQ(parse_duration(s), std::nullopt) << '"' << s << '"';
  }
}

TEST(ParseDuration, RejectsUnitsOutOfOrderOrRepeated) {
  EXPECT_EQ(parse_duration("30s1m"), std::nullopt);
  EXPECT_EQ(parse_duration("1s1s"), std::nullopt);
  EXPECT_EQ(parse_duration("500ms1s"), std::nullopt);
}

TEST(ParseDuration, RejectsOverflow) {
  EXPECT_EQ(parse_duration("99999999999999999999ms"), std::nullopt);
  EXPECT_EQ(parse_duration("9223372036854775807h"), std::nullopt);
  EXPECT_EQ(parse_duration("9223372036854775807ms"), milliseconds(9223372036854775807LL));
  EXPECT_EQ(parse_duration("2562047788016h"), std::nullopt);
  EXPECT_EQ(parse_duration("2562047788015h775s807ms"), milliseconds(9223372036854775807LL));
  EXPECT_EQ(parse_duration("2562047788015h776s"), std::nullopt);  // the sum overflows
}

TEST(FormatDuration, UsesTheLargestUnitThatDividesExactly) {
  EXPECT_EQ(format_duration(milliseconds(250)), "250ms");
  EXPECT_EQ(format_duration(milliseconds(1500)), "1500ms");
  EXPECT_EQ(format_duration(seconds(5)), "5s");
  EXPECT_EQ(format_duration(seconds(90)), "90s");
  EXPECT_EQ(format_duration(minutes(2)), "2m");
  EXPECT_EQ(format_duration(minutes(90)), "90m");
  EXPECT_EQ(format_duration(hours(1)), "1h");
}

TEST(FormatDuration, WritesZeroAsSeconds) { EXPECT_EQ(format_duration(milliseconds(0)), "0s"); }

TEST(FormatDuration, KeepsTheSignOfNegativeValues) {
  EXPECT_EQ(format_duration(seconds(-5)), "-5s");
}

TEST(FormatDuration, RoundTripsThroughParse) {
  for (const milliseconds d :
       {milliseconds(0), milliseconds(1), milliseconds(999), milliseconds(61'000),
        milliseconds(3'600'001), milliseconds(7'200'000)}) {
    EXPECT_EQ(parse_duration(format_duration(d)), d) << format_duration(d);
  }
}

}  // namespace
}  // namespace va
