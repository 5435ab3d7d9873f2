#include <gtest/gtest.h>

#include "test_util.h"
#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

TEST(ExtractOpenAiUsage, FindsTopLevelUsageOnly) {
  EXPECT_EQ(
      extract_openai_usage(
          R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\": 99} field"},"finish_reason":"stop"}],
                    "usage" : {"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}}})"),
      (TokenUsage{12, 34}));
  // A nested "usage" (in a tool's arguments object, say) is not the response's usage.
  EXPECT_EQ(extract_openai_usage(
                R"({"choices":[{"x":{"usage":{"prompt_tokens":5,"completion_tokens":6}}}]})"),
            std::nullopt);
  EXPECT_EQ(extract_openai_usage(R"({"choices":[],"usage":null})"), std::nullopt);
  EXPECT_EQ(extract_openai_usage(R"({"usage":{"prompt_tokens":7}})"), (TokenUsage{7, 0}));
  EXPECT_EQ(extract_openai_usage(""), std::nullopt);
  EXPECT_EQ(extract_openai_usage("not json"), std::nullopt);
  EXPECT_EQ(extract_openai_usage(R"({"usage":{"prompt_tokens":1,"completion_tokens":2})"),
            std::nullopt);  // truncated
  EXPECT_EQ(extract_openai_usage(R"([{"usage":{"prompt_tokens":1}}])"), std::nullopt);
}

TEST(InspectOpenAiChunk, Classifies) {
  EXPECT_TRUE(inspect_openai_chunk("[DONE]").done);
  EXPECT_TRUE(inspect_openai_chunk(" [DONE]\n").done);

  auto role = inspect_openai_chunk(
      R"({"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})");
  EXPECT_FALSE(role.has_content);
  EXPECT_FALSE(role.done);
  EXPECT_FALSE(role.malformed);
  EXPECT_FALSE(role.usage);

  EXPECT_TRUE(inspect_openai_chunk(
                  R"({"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]})")
                  .has_content);
  EXPECT_TRUE(
      inspect_openai_chunk(
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":""}}]},"finish_reason":null}]})")
          .has_content);
  EXPECT_TRUE(inspect_openai_chunk(R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})")
                  .has_content);
  // The word "content" inside a string is not content.
  EXPECT_FALSE(
      inspect_openai_chunk(
          R"({"id":"\"content\":\"x","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]})")
          .has_content);

  auto usage = inspect_openai_chunk(
      R"({"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}})");
  EXPECT_FALSE(usage.has_content);
  ASSERT_TRUE(usage.usage);
  EXPECT_EQ(*usage.usage, (TokenUsage{10, 20}));
  EXPECT_FALSE(
      inspect_openai_chunk(R"({"choices":[{"delta":{"content":"a"}}],"usage":null})").usage);

  EXPECT_TRUE(
      inspect_openai_chunk(R"({"error":{"message":"boom","type":"server_error"}})").is_error);
  EXPECT_TRUE(inspect_openai_chunk("{\"choices\":[").malformed);
  EXPECT_TRUE(inspect_openai_chunk("hello").malformed);
  EXPECT_TRUE(inspect_openai_chunk("").malformed);
  EXPECT_TRUE(inspect_openai_chunk(R"({"choices":[}])").malformed);
}

}  // namespace
}  // namespace switchboard::upstream
