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

namespace switchboard::upstream {
namespace {

// Every prefix of valid bodies and stream events (what a cut connection delivers) and some
// garbage: every function answers with a value or an error, never a crash.
TEST(Robustness, TruncatedAndGarbageInputs) {
  const std::string body =
      R"({"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"a\"b\\"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}})";
  for (size_t i = 0; i < body.size(); ++i) {
    std::string_view prefix(body.data(), i);
    EXPECT_EQ(extract_openai_usage(prefix), std::nullopt) << i;
    OpenAiChunkInfo info = inspect_openai_chunk(prefix);
    EXPECT_TRUE(info.malformed) << i;
  }
  const std::string event =
      R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}})";
  for (size_t i = 0; i < event.size(); ++i) {
    AnthropicStreamTranslator t("m", "id", 1, true);
    std::vector<std::string> out;
    Status s = t.feed("content_block_start", std::string_view(event.data(), i), out);
    EXPECT_FALSE(s.ok()) << i;
  }
  const char* garbage[] = {"\xFF\xFE", "{\"", "[[[[[[[[",          "{\"a\":}",           "nul",
                           "\"str\"",  "12",  "{\"usage\":[1,2]}", "{\"choices\":\"x\"}"};
  for (const char* g : garbage) {
    (void)extract_openai_usage(g);
    (void)inspect_openai_chunk(g);
    AnthropicStreamTranslator t("m", "id", 1, true);
    std::vector<std::string> out;
    (void)t.feed("message_delta", g, out);
  }
  std::string deep(10000, '[');
  (void)extract_openai_usage("{\"usage\":" + deep + "}");
  (void)inspect_openai_chunk("{\"choices\":" + deep);
  AnthropicStreamTranslator t("m", "id", 1, true);
  std::vector<std::string> out;
  EXPECT_FALSE(t.feed("message_start", deep, out).ok());
}

}  // namespace
}  // namespace switchboard::upstream
