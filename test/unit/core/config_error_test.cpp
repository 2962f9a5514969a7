#include "core/config_error.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace va {
namespace {

using ::testing::ElementsAre;

TEST(ConfigError, WhatJoinsTheProblemsWithNewlines) {
  const ConfigError e({"a: one", "b: two"});
  EXPECT_STREQ(e.what(), "a: one\nb: two");
  EXPECT_THAT(e.problems(), ElementsAre("a: one", "b: two"));
}

}  // namespace
}  // namespace va
