// The SelfSubjectAccessReviews the kubernetes scaler's setup checks send, and how their answers
// are read (the scaler's own test drives them against the in-process API server).
#include "k8s/access_review.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

namespace va::k8s {
namespace {

TEST(AccessReview, DescribesTheRequestAsRbacNamesIt) {
  EXPECT_EQ(describe({"patch", "apps", "deployments", "scale", "llm", "vllm"}),
            R"(patch apps/deployments/scale "vllm" in namespace "llm")");
  EXPECT_EQ(describe({"list", "", "pods", "", "llm", ""}), R"(list pods in namespace "llm")");
}

TEST(AccessReview, TheBodyNamesOnlyWhatIsSet) {
  EXPECT_EQ(
      boost::json::parse(access_review_body({"watch", "", "pods", "", "llm", ""})),
      boost::json::parse(R"({"apiVersion":"authorization.k8s.io/v1",)"
                         R"("kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":)"
                         R"({"namespace":"llm","verb":"watch","group":"","resource":"pods"}}})"));
}

TEST(AccessReview, AnAnswerIsAllowedDeniedOrUnknown) {
  auto allowed = access_allowed({201, R"({"status":{"allowed":true}})", "", "application/json"});
  ASSERT_TRUE(allowed);
  EXPECT_TRUE(*allowed);
  // status.allowed false, with or without a reason
  auto denied = access_allowed({201, R"({"status":{"allowed":false,"reason":""}})", "", ""});
  ASSERT_TRUE(denied);
  EXPECT_FALSE(*denied);
  // Neither: the API refused the review itself, or answered something else.
  auto forbidden = access_allowed(
      {403, R"({"kind":"Status","message":"selfsubjectaccessreviews is forbidden"})", "", ""});
  ASSERT_FALSE(forbidden);
  EXPECT_NE(forbidden.error().message.find("403 Forbidden: selfsubjectaccessreviews is forbidden"),
            std::string::npos)
      << forbidden.error().message;
  EXPECT_FALSE(access_allowed({201, R"({"status":{}})", "", ""}));
  EXPECT_FALSE(access_allowed({201, "not json", "", ""}));
}

}  // namespace
}  // namespace va::k8s
