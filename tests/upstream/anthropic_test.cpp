#include <gtest/gtest.h>

#include "test_util.h"
#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

namespace json = boost::json;
using testing::parse_object;
using testing::parse_or_fail;
using testing::read_fixture;

json::value translate(std::string_view openai, int64_t default_max = 4096) {
  auto r = openai_to_anthropic_request(parse_object(openai), "claude-x", default_max);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? parse_or_fail(*r) : json::value();
}

TEST(AnthropicRequest, FullFixture) {
  auto r = openai_to_anthropic_request(parse_object(read_fixture("openai_request_full.json")),
                                       "claude-sonnet-4-20250514");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(parse_or_fail(*r), parse_or_fail(read_fixture("anthropic_request_expected.json")))
      << *r;
}

TEST(AnthropicRequest, MinimalDefaultsAndMerging) {
  json::value got = translate(R"({"model":"m","messages":[
      {"role":"user","content":"hi"},
      {"role":"assistant","content":"a"},
      {"role":"assistant","content":[{"type":"text","text":"b"}]},
      {"role":"user","content":""},
      {"role":"user","content":"again"}]})",
                              77);
  EXPECT_EQ(got, parse_or_fail(R"({"model":"claude-x","max_tokens":77,"messages":[
      {"role":"user","content":[{"type":"text","text":"hi"}]},
      {"role":"assistant","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
      {"role":"user","content":[{"type":"text","text":"again"}]}]})"));
}

TEST(AnthropicRequest, MaxTokensAndToolChoiceForms) {
  const char* tools =
      R"("tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}])";
  auto with = [&](std::string extra) {
    return translate(std::string(R"({"messages":[{"role":"user","content":"x"}],)") + tools + "," +
                     extra + "}");
  };
  EXPECT_EQ(with(R"("max_tokens":12)").at("max_tokens"), 12);
  EXPECT_EQ(with(R"("max_tokens":12,"max_completion_tokens":34)").at("max_tokens"), 34);
  EXPECT_FALSE(with(R"("max_tokens":5)").as_object().contains("tool_choice"));
  EXPECT_EQ(with(R"("tool_choice":"auto")").at("tool_choice"), parse_or_fail(R"({"type":"auto"})"));
  EXPECT_EQ(with(R"("tool_choice":"none")").at("tool_choice"), parse_or_fail(R"({"type":"none"})"));
  EXPECT_EQ(with(R"("tool_choice":"required")").at("tool_choice"),
            parse_or_fail(R"({"type":"any"})"));
  EXPECT_EQ(with(R"("tool_choice":{"type":"function","function":{"name":"f"}})").at("tool_choice"),
            parse_or_fail(R"({"type":"tool","name":"f"})"));
  EXPECT_EQ(with(R"("parallel_tool_calls":false)").at("tool_choice"),
            parse_or_fail(R"({"type":"auto","disable_parallel_tool_use":true})"));
  EXPECT_EQ(with(R"("temperature":0.3,"stop":"X","stream":false,"user":"")").as_object(),
            parse_object(R"({"model":"claude-x","max_tokens":4096,
      "messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],
      "tools":[{"name":"f","input_schema":{"type":"object"}}],
      "temperature":0.3,"stop_sequences":["X"]})"));
}

TEST(AnthropicRequest, BadInputsNameTheField) {
  struct Case {
    const char* request;
    const char* field;
  };
  const Case cases[] = {
      {R"({})", "messages: missing"},
      {R"({"messages":{}})", "messages: must be an array"},
      {R"({"messages":[]})", "messages: must not be empty"},
      {R"({"messages":[1]})", "messages[0]: must be an object"},
      {R"({"messages":[{"content":"x"}]})", "messages[0].role"},
      {R"({"messages":[{"role":"wizard","content":"x"}]})", "messages[0].role: unsupported"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"user","content":5}]})",
       "messages[1].content"},
      {R"({"messages":[{"role":"user","content":[{"type":"audio"}]}]})",
       "messages[0].content[0].type"},
      {R"({"messages":[{"role":"user","content":[{"type":"text","text":3}]}]})",
       "messages[0].content[0].text"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x"}}]}]})",
       "messages[0].content[0].image_url.url"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]})",
       "messages[0].content[0].image_url.url: data: URL must be base64"},
      {R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
       "messages[0].content[0].image_url"},
      {R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}]})",
       "messages[1].tool_calls[0].function.arguments: invalid JSON"},
      {R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":"[1,2]"}}]}]})",
       "messages[1].tool_calls[0].function.arguments: must encode a JSON object"},
      {R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","tool_calls":[{"function":{"name":"f"}}]}]})",
       "messages[1].tool_calls[0].id"},
      {R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","tool_calls":{}}]})",
       "messages[1].tool_calls: must be an array"},
      {R"({"messages":[{"role":"tool","content":"r"}]})", "messages[0].tool_call_id"},
      {R"({"messages":[{"role":"system","content":"only system"}]})",
       "messages: no user or assistant content"},
      {R"({"messages":[{"role":"user","content":"q"}],"tools":{}})", "tools: must be an array"},
      {R"({"messages":[{"role":"user","content":"q"}],"tools":[{"type":"retrieval"}]})",
       "tools[0].type"},
      {R"({"messages":[{"role":"user","content":"q"}],"tools":[{"type":"function","function":{}}]})",
       "tools[0].function.name"},
      {R"({"messages":[{"role":"user","content":"q"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"always"})",
       "tool_choice"},
      {R"({"messages":[{"role":"user","content":"q"}],"max_tokens":-1})", "max_tokens"},
      {R"({"messages":[{"role":"user","content":"q"}],"max_completion_tokens":"100"})",
       "max_completion_tokens"},
      {R"({"messages":[{"role":"user","content":"q"}],"temperature":"hot"})", "temperature"},
      {R"({"messages":[{"role":"user","content":"q"}],"top_p":2})", "top_p"},
      {R"({"messages":[{"role":"user","content":"q"}],"stop":5})", "stop"},
      {R"({"messages":[{"role":"user","content":"q"}],"stop":["a",1]})", "stop[1]"},
      {R"({"messages":[{"role":"user","content":"q"}],"stream":"yes"})", "stream"},
      {R"({"messages":[{"role":"user","content":"q"}],"n":2})", "n: only n=1"},
      {R"({"messages":[{"role":"user","content":"q"}],"user":5})", "user"},
  };
  for (const Case& c : cases) {
    auto r = openai_to_anthropic_request(parse_object(c.request), "m");
    ASSERT_FALSE(r.ok()) << c.request;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.request;
    EXPECT_EQ(r.status().message().rfind(c.field, 0), 0u)
        << c.request << " -> " << r.status().message();
  }
}

TEST(AnthropicResponse, ToolUseFixture) {
  auto r =
      anthropic_to_openai_response(parse_object(read_fixture("anthropic_response_tool_use.json")),
                                   "claude-sonnet", "chatcmpl-sb-42", 1718000000);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(parse_or_fail(*r), parse_or_fail(read_fixture("openai_response_expected.json"))) << *r;
}

TEST(AnthropicResponse, StopReasonsAndContentShapes) {
  auto finish = [](std::string_view stop, std::string_view content) {
    std::string body = std::string(R"({"type":"message","content":)") + std::string(content) +
                       R"(,"stop_reason":)" + std::string(stop) +
                       R"(,"usage":{"input_tokens":3,"output_tokens":4}})";
    auto r = anthropic_to_openai_response(parse_object(body), "m", "id", 1);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return parse_or_fail(*r).at("choices").at(0);
  };
  const char* text = R"([{"type":"text","text":"hi"}])";
  EXPECT_EQ(finish(R"("end_turn")", text).at("finish_reason"), "stop");
  EXPECT_EQ(finish(R"("stop_sequence")", text).at("finish_reason"), "stop");
  EXPECT_EQ(finish(R"("max_tokens")", text).at("finish_reason"), "length");
  EXPECT_EQ(finish(R"("tool_use")", text).at("finish_reason"), "tool_calls");
  EXPECT_EQ(finish(R"("end_turn")", text).at("message"),
            parse_or_fail(R"({"role":"assistant","content":"hi"})"));
  auto only_tool = finish(
      R"("tool_use")",
      R"([{"type":"thinking","thinking":"hmm"},{"type":"tool_use","id":"t","name":"f","input":{}}])");
  EXPECT_TRUE(only_tool.at("message").at("content").is_null());
  EXPECT_EQ(only_tool.at("message").at("tool_calls").at(0).at("function").at("arguments"), "{}");
  EXPECT_EQ(finish("null", "[]").at("message").at("content"), "");
}

// Found by fuzz/translate_fuzz: huge counts overflowed the prompt sum, negative ones went through.
TEST(AnthropicResponse, TokenCountsAreBounded) {
  auto usage = [](std::string_view u) {
    std::string body =
        std::string(R"({"type":"message","content":[],"usage":)") + std::string(u) + "}";
    auto r = anthropic_to_openai_response(parse_object(body), "m", "id", 1);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return parse_or_fail(*r).at("usage");
  };
  const int64_t max = int64_t{1} << 40;
  auto u = usage(R"({"input_tokens":9000000000000000000,"cache_read_input_tokens":)"
                 R"(9000000000000000000,"cache_creation_input_tokens":1,"output_tokens":-3})");
  EXPECT_EQ(u.at("prompt_tokens"), 2 * max + 1);
  EXPECT_EQ(u.at("completion_tokens"), 0);
  EXPECT_EQ(u.at("total_tokens"), 2 * max + 1);
}

TEST(AnthropicResponse, MalformedUpstreamBodies) {
  for (const char* body : {R"({})", R"({"content":"text"})", R"({"content":[1]})",
                           R"({"type":"error","error":{"type":"api_error","message":"boom"}})"}) {
    auto r = anthropic_to_openai_response(parse_object(body), "m", "id", 1);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << body;
  }
}

std::vector<SseEvent> fixture_events() {
  SseParser p;
  std::vector<SseEvent> events;
  EXPECT_TRUE(p.feed(read_fixture("anthropic_stream.sse"), events).ok());
  return events;
}

TEST(AnthropicStream, RecordedStreamTranslates) {
  AnthropicStreamTranslator t("claude-sonnet", "chatcmpl-sb-7", 1718000001, true);
  std::vector<std::string> chunks;
  auto events = fixture_events();
  ASSERT_EQ(events.size(), 16u);
  for (size_t i = 0; i < events.size(); ++i) {
    ASSERT_TRUE(t.feed(events[i].event, events[i].data, chunks).ok()) << events[i].data;
    if (i <= 2) {
      // message_start, the empty text block and a ping: nothing the client would notice yet.
      EXPECT_FALSE(t.has_content()) << i;
    }
    if (i == 3) {
      EXPECT_TRUE(t.has_content());
    }
    EXPECT_EQ(t.finished(), i + 1 == events.size());
  }
  json::array got;
  for (const std::string& c : chunks) got.push_back(parse_or_fail(c));
  EXPECT_EQ(json::value(got), parse_or_fail(read_fixture("openai_stream_expected.json")))
      << json::serialize(got);
  EXPECT_EQ(t.usage(), (TokenUsage{480, 89}));

  // Events after message_stop are ignored.
  ASSERT_TRUE(t.feed("ping", R"({"type":"ping"})", chunks).ok());
  EXPECT_EQ(chunks.size(), got.size());
}

TEST(AnthropicStream, WithoutIncludeUsageThereIsNoUsageChunk) {
  AnthropicStreamTranslator t("m", "id", 1, false);
  std::vector<std::string> chunks;
  for (const SseEvent& e : fixture_events()) ASSERT_TRUE(t.feed(e.event, e.data, chunks).ok());
  ASSERT_EQ(chunks.size(), 9u);
  EXPECT_EQ(parse_or_fail(chunks.back()).at("choices").at(0).at("finish_reason"), "tool_calls");
  EXPECT_TRUE(t.finished());
}

TEST(AnthropicStream, TokenCountsAreBounded) {
  AnthropicStreamTranslator t("m", "id", 1, false);
  std::vector<std::string> chunks;
  ASSERT_TRUE(t.feed("message_start",
                     R"({"type":"message_start","message":{"usage":{"input_tokens":-5,)"
                     R"("cache_read_input_tokens":9000000000000000000,"output_tokens":1}}})",
                     chunks)
                  .ok());
  EXPECT_EQ(t.usage().prompt_tokens, int64_t{1} << 40);
  ASSERT_TRUE(
      t.feed("message_delta", R"({"type":"message_delta","usage":{"output_tokens":-7}})", chunks)
          .ok());
  EXPECT_EQ(t.usage().completion_tokens, 0);
}

TEST(AnthropicStream, ErrorEventBecomesStatus) {
  AnthropicStreamTranslator t("m", "id", 1, false);
  std::vector<std::string> chunks;
  Status s = t.feed(
      "error", R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})",
      chunks);
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("Overloaded"), std::string::npos);
  Status r = t.feed("error",
                    R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})",
                    chunks);
  EXPECT_EQ(r.code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(chunks.empty());
  EXPECT_FALSE(t.has_content());
}

TEST(AnthropicStream, BadEventsAreErrorsNotCrashes) {
  std::vector<std::string> chunks;
  const std::pair<const char*, const char*> bad[] = {
      {"message_start", "{not json"},
      {"message_start", "[1,2]"},
      {"message_start", R"({"type":"message_start"})"},
      {"content_block_delta",
       R"({"type":"content_block_delta","index":5,"delta":{"type":"text_delta","text":"x"}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":"0","delta":{}})"},
      {"content_block_start",
       R"({"type":"content_block_start","index":99999999,"content_block":{"type":"text"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
  };
  for (auto [name, data] : bad) {
    AnthropicStreamTranslator t("m", "id", 1, false);
    Status s = t.feed(name, data, chunks);
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << data;
  }
  // input_json_delta into a text block is inconsistent.
  AnthropicStreamTranslator t("m", "id", 1, false);
  ASSERT_TRUE(
      t.feed(
           "content_block_start",
           R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})",
           chunks)
          .ok());
  EXPECT_FALSE(
      t.feed(
           "content_block_delta",
           R"({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{"}})",
           chunks)
          .ok());
  // Unknown event types and unknown delta types are skipped (Anthropic adds new ones).
  AnthropicStreamTranslator u("m", "id", 1, false);
  chunks.clear();
  EXPECT_TRUE(u.feed("future_event", R"({"type":"future_event"})", chunks).ok());
  EXPECT_TRUE(chunks.empty());
}

TEST(AnthropicStructuredOutput, JsonSchemaBecomesAForcedTool) {
  const auto req = parse_object(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "response_format":{"type":"json_schema","json_schema":{"name":"person","strict":true,
        "schema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}})");
  EXPECT_EQ(anthropic_json_tool(req), "person");
  auto r = openai_to_anthropic_request(req, "claude-x");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const json::value got = parse_or_fail(*r);
  ASSERT_EQ(got.at("tools").as_array().size(), 1u);
  const auto& tool = got.at("tools").at(0).as_object();
  EXPECT_EQ(tool.at("name"), "person");
  EXPECT_EQ(tool.at("input_schema"),
            parse_or_fail(R"({"type":"object","properties":{"name":{"type":"string"}},
                             "required":["name"]})"));
  EXPECT_EQ(got.at("tool_choice"), parse_or_fail(R"({"type":"tool","name":"person"})"));

  // json_object: any object, under a fixed name.
  auto obj = openai_to_anthropic_request(
      parse_object(R"({"model":"m","messages":[{"role":"user","content":"x"}],
                       "response_format":{"type":"json_object"}})"),
      "claude-x");
  ASSERT_TRUE(obj.ok());
  EXPECT_EQ(parse_or_fail(*obj).at("tools").at(0).at("input_schema"),
            parse_or_fail(R"({"type":"object"})"));
  EXPECT_EQ(parse_or_fail(*obj).at("tool_choice").at("name"), "json_response");
  // No response_format: no tool.
  EXPECT_EQ(anthropic_json_tool(parse_object(R"({"response_format":{"type":"text"}})")), "");
}

TEST(AnthropicStructuredOutput, WithClientToolsTheModelMustCallOne) {
  const auto req = parse_object(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}],
      "response_format":{"type":"json_schema","json_schema":{"name":"answer",
        "schema":{"type":"object"}}}})");
  auto r = openai_to_anthropic_request(req, "claude-x");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const json::value got = parse_or_fail(*r);
  ASSERT_EQ(got.at("tools").as_array().size(), 2u);
  EXPECT_EQ(got.at("tools").at(1).at("name"), "answer");
  EXPECT_EQ(got.at("tool_choice"), parse_or_fail(R"({"type":"any"})"));

  // A schema named like a client tool cannot be told apart: refused.
  auto clash = openai_to_anthropic_request(
      parse_object(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "tools":[{"type":"function","function":{"name":"answer"}}],
      "response_format":{"type":"json_schema","json_schema":{"name":"answer",
        "schema":{"type":"object"}}}})"),
      "claude-x");
  ASSERT_FALSE(clash.ok());
  EXPECT_NE(clash.status().message().find("response_format"), std::string::npos);
}

TEST(AnthropicStructuredOutput, RefusedByConfigurationAndLogprobsRefused) {
  const auto req = parse_object(R"({"model":"m","messages":[{"role":"user","content":"x"}],
      "response_format":{"type":"json_schema","json_schema":{"name":"p","schema":{}}}})");
  auto refused = openai_to_anthropic_request(req, "claude-x", 4096, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("json_schema: refuse"), std::string::npos);
  for (const char* body : {R"({"model":"m","messages":[{"role":"user","content":"x"}],
                               "logprobs":true})",
                           R"({"model":"m","messages":[{"role":"user","content":"x"}],
                               "top_logprobs":3})"}) {
    auto r = openai_to_anthropic_request(parse_object(body), "claude-x");
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_NE(r.status().message().find("log probabilities"), std::string::npos);
  }
  // logprobs: false asks for nothing.
  EXPECT_TRUE(openai_to_anthropic_request(
                  parse_object(R"({"model":"m","messages":[{"role":"user","content":"x"}],
                                   "logprobs":false})"),
                  "claude-x")
                  .ok());
}

TEST(AnthropicStructuredOutput, TheToolCallComesBackAsContent) {
  const auto resp = parse_object(R"({"id":"msg_1","type":"message","role":"assistant",
      "content":[{"type":"tool_use","id":"toolu_1","name":"person","input":{"name":"Ada"}}],
      "stop_reason":"tool_use","usage":{"input_tokens":10,"output_tokens":5}})");
  auto r = anthropic_to_openai_response(resp, "m", "id", 1, "person");
  ASSERT_TRUE(r.ok());
  const json::value got = parse_or_fail(*r);
  const auto& choice = got.at("choices").at(0);
  EXPECT_EQ(parse_or_fail(std::string(choice.at("message").at("content").as_string())),
            parse_or_fail(R"({"name":"Ada"})"));
  EXPECT_FALSE(choice.at("message").as_object().contains("tool_calls"));
  EXPECT_EQ(choice.at("finish_reason"), "stop");
  // Without the name the same block is a tool call.
  auto plain = anthropic_to_openai_response(resp, "m", "id", 1);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(parse_or_fail(*plain).at("choices").at(0).at("finish_reason"), "tool_calls");
}

TEST(AnthropicStructuredOutput, TheStreamedToolCallComesBackAsContentDeltas) {
  AnthropicStreamTranslator t("m", "id", 1, false, "person");
  std::vector<std::string> chunks;
  const std::pair<const char*, const char*> events[] = {
      {"message_start", R"({"type":"message_start","message":{"id":"msg_1","type":"message",
        "role":"assistant","content":[],"usage":{"input_tokens":10,"output_tokens":1}}})"},
      {"content_block_start", R"({"type":"content_block_start","index":0,"content_block":
        {"type":"tool_use","id":"toolu_1","name":"person","input":{}}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":
        {"type":"input_json_delta","partial_json":"{\"name\": \"A"}})"},
      {"content_block_delta", R"({"type":"content_block_delta","index":0,"delta":
        {"type":"input_json_delta","partial_json":"da\"}"}})"},
      {"content_block_stop", R"({"type":"content_block_stop","index":0})"},
      {"message_delta", R"({"type":"message_delta","delta":{"stop_reason":"tool_use"},
        "usage":{"output_tokens":7}})"},
      {"message_stop", R"({"type":"message_stop"})"}};
  for (const auto& [name, data] : events) ASSERT_TRUE(t.feed(name, data, chunks).ok()) << data;
  std::string content;
  std::string finish;
  for (const auto& c : chunks) {
    const json::value v = parse_or_fail(c);
    const auto& choice = v.at("choices").at(0).as_object();
    const auto& delta = choice.at("delta").as_object();
    EXPECT_FALSE(delta.contains("tool_calls")) << c;
    if (auto* text = delta.if_contains("content"); text && text->is_string())
      content += std::string(text->as_string());
    if (choice.at("finish_reason").is_string())
      finish = std::string(choice.at("finish_reason").as_string());
  }
  EXPECT_EQ(parse_or_fail(content), parse_or_fail(R"({"name":"Ada"})"));
  EXPECT_EQ(finish, "stop");
  EXPECT_TRUE(t.finished());
}

TEST(AnthropicError, ConvertsToOpenAiShape) {
  EXPECT_EQ(
      parse_or_fail(anthropic_error_to_openai(
          R"({"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}})")),
      parse_or_fail(
          R"({"error":{"message":"max_tokens: too big","type":"invalid_request_error","code":"invalid_request_error"}})"));
  EXPECT_EQ(
      parse_or_fail(anthropic_error_to_openai("<html>bad gateway</html>")).at("error").at("type"),
      "server_error");
}

}  // namespace
}  // namespace switchboard::upstream
