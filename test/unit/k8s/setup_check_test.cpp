// The bookkeeping of the setup checks the kubernetes scaler and the coordination share: what an
// answer changes and when to ask again.
#include "k8s/setup_check.hpp"

#include <gtest/gtest.h>

namespace va::k8s {
namespace {

using Problems = std::vector<std::string>;

SetupCheck::Settings settings() {
  return {.key = "backend",
          .who = "vllm",
          .unchecked = "not checked yet",
          .all_well = "setup checked",
          .interval = std::chrono::seconds(60),
          .backoff_max = std::chrono::seconds(10)};
}

outcome<Problems> unanswered() {
  return Failure{errc::scaler_unavailable, "kubernetes API: connection refused"};
}

TEST(SetupCheck, NotCheckedYetIsAProblemUntilTheFirstAnswer) {
  SetupCheck check(settings());
  EXPECT_EQ(check.problems(), Problems{"not checked yet"});
  EXPECT_EQ(check.answered(Problems{"cannot patch x"}), std::chrono::seconds(60));
  EXPECT_EQ(check.problems(), Problems{"cannot patch x"});
  EXPECT_EQ(check.answered(Problems{}), std::chrono::seconds(60));
  EXPECT_EQ(check.problems(), Problems{});
}

TEST(SetupCheck, AnApiThatDoesNotAnswerChangesNothingButClearsNotCheckedYet) {
  SetupCheck first(settings());
  const auto wait = first.answered(unanswered());
  EXPECT_EQ(first.problems(), Problems{});  // an API outage is not a bad Role
  EXPECT_GE(wait, std::chrono::milliseconds(500));
  EXPECT_LE(wait, std::chrono::milliseconds(1500));

  SetupCheck later(settings());
  later.answered(Problems{"cannot patch x"});
  for (int i = 0; i < 8; ++i) {
    EXPECT_LE(later.answered(unanswered()), std::chrono::seconds(15));  // 10 s, +50% at most
  }
  EXPECT_EQ(later.problems(), Problems{"cannot patch x"});
  EXPECT_EQ(later.answered(Problems{}), std::chrono::seconds(60));
  EXPECT_EQ(later.problems(), Problems{});
}

}  // namespace
}  // namespace va::k8s
