#include "http/router.hpp"

#include <gtest/gtest.h>

namespace va::front {
namespace {

TEST(IsExposed, ForwardsOpenAIPathsOnly) {
  EXPECT_TRUE(is_exposed("/v1/chat/completions"));
  EXPECT_TRUE(is_exposed("/v2/rerank"));
  EXPECT_TRUE(is_exposed("/tokenize"));
  EXPECT_TRUE(is_exposed("/version"));
  EXPECT_TRUE(is_exposed("/invocations"));
}

TEST(IsExposed, NeverForwardsTheControlPlane) {
  for (const char* p : {"/sleep", "/wake_up", "/pause", "/resume", "/collective_rpc", "/metrics",
                        "/start_profile", "/stop_profile", "/is_sleeping", "/v1", "/tokenizer_info",
                        "/versions", "/", "/docs", "/openapi.json", "/health"}) {
    EXPECT_FALSE(is_exposed(p)) << p;
  }
}

TEST(ExtractModel, FindsOnlyATopLevelStringAndChecksTheWholeDocument) {
  auto escaped = extract_model("application/json", R"({"mo\u0064el":"a\"b","x":[{"model":1}]})");
  ASSERT_TRUE(escaped);
  EXPECT_EQ(escaped->value_or(""), "a\"b");
  auto nested_only = extract_model("application/json", R"({"x":{"model":"inner"}})");
  ASSERT_TRUE(nested_only);
  EXPECT_FALSE(nested_only->has_value());
  auto null_model = extract_model("application/json", R"({"model":null})");
  ASSERT_TRUE(null_model);
  EXPECT_FALSE(null_model->has_value());
  for (const char* bad : {R"({"model":{"a":1}})", R"({"model":["a"]})", R"({"model":true})"}) {
    auto r = extract_model("application/json", bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::bad_request);
  }
  auto trailing = extract_model("application/json", R"({"model":"a"} {"model":"b"})");
  ASSERT_FALSE(trailing);
  EXPECT_NE(trailing.error().message.find("not valid JSON"), std::string::npos);
}

TEST(ExtractModel, ReadsTheTopLevelJsonField) {
  auto m = extract_model("application/json", R"({"messages":[{"model":"no"}],"model":"qwen"})");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->value(), "qwen");
}

TEST(ExtractModel, NoModelIsNotAnError) {
  auto m = extract_model("application/json", R"({"prompt":"x"})");
  ASSERT_TRUE(m);
  EXPECT_FALSE(m->has_value());
  auto empty = extract_model("", "");
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->has_value());
}

TEST(ExtractModel, MalformedJsonIsABadRequest) {
  auto m = extract_model("application/json", R"({"model": "x",)");
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, errc::bad_request);
  auto wrong_type = extract_model("application/json", R"({"model": 3})");
  ASSERT_FALSE(wrong_type);
}

TEST(ExtractModel, ReadsTheMultipartFormField) {
  const std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
      "Content-Type: audio/wav\r\n\r\nRIFF....\r\n"
      "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
      "--XyZ--\r\n";
  auto m = extract_model("multipart/form-data; boundary=XyZ", body);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->value(), "whisper-1");
}

TEST(Authorized, AcceptsAnyConfiguredKeyWithCaseInsensitiveScheme) {
  const std::vector<std::string> keys = {"k1", "secret-two"};
  EXPECT_TRUE(authorized("Bearer k1", keys));
  EXPECT_TRUE(authorized("bearer secret-two", keys));
  EXPECT_FALSE(authorized("Bearer k2", keys));
  EXPECT_FALSE(authorized("Basic k1", keys));
  EXPECT_FALSE(authorized("k1", keys));
  EXPECT_FALSE(authorized("", keys));
  EXPECT_FALSE(authorized("Bearer secret-two-and-more", keys));
}

}  // namespace
}  // namespace va::front
