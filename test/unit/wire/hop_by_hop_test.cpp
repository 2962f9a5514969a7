#include "wire/hop_by_hop.hpp"

#include <gtest/gtest.h>

namespace va::wire {
namespace {

TEST(HopByHop, KnowsTheConnectionsOwnFieldsWhateverTheCaseOfTheirName) {
  for (const char* name :
       {"Connection", "keep-alive", "PROXY-CONNECTION", "Proxy-Authenticate", "proxy-authorization",
        "TE", "Trailer", "Transfer-Encoding", "upgrade", "Expect"}) {
    EXPECT_TRUE(is_hop_by_hop(http::string_to_field(name))) << name;
  }
}

TEST(HopByHop, LetsEndToEndFieldsThrough) {
  for (const char* name :
       {"Host", "Content-Length", "Content-Type", "Authorization", "X-Forwarded-For", "X-Custom"}) {
    EXPECT_FALSE(is_hop_by_hop(http::string_to_field(name))) << name;
  }
}

}  // namespace
}  // namespace va::wire
