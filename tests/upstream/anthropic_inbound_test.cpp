// Anthropic Messages API clients over the OpenAI-shaped path: a Claude Code-style request into
// an OpenAI request (fixture), answers back into Anthropic's shape, and the stream re-encoded as
// Anthropic's events, checked by assembling the message as the Anthropic SDK does and by round
// trips through the outbound translators (one mapping, both directions).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>
#include <string>
#include <vector>

#include "test_util.h"
#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

namespace json = boost::json;
using testing::parse_object;
using testing::read_fixture;

TEST(AnthropicInboundTest, AClaudeCodeRequestBecomesTheExpectedOpenAiRequest) {
  auto out =
      anthropic_to_openai_request(parse_object(read_fixture("anthropic_client_request.json")));
  ASSERT_TRUE(out.ok()) << out.status().message();
  const json::value got = json::parse(*out);
  const json::value want = json::parse(read_fixture("openai_from_anthropic_expected.json"));
  EXPECT_EQ(got, want) << "got:\n" << *out;
}

TEST(AnthropicInboundTest, ARoundTripThroughTheOutboundTranslatorKeepsTheConversation) {
  const json::object original = parse_object(read_fixture("anthropic_client_request.json"));
  auto openai = anthropic_to_openai_request(original);
  ASSERT_TRUE(openai.ok()) << openai.status().message();
  auto back = openai_to_anthropic_request(parse_object(*openai), "claude-x");
  ASSERT_TRUE(back.ok()) << back.status().message();
  const json::object b = parse_object(*back);
  EXPECT_EQ(b.at("system").as_string(), "You are Claude Code, a coding agent.\n\nWork in /repo.");
  EXPECT_EQ(b.at("max_tokens").as_int64(), 2048);
  const auto& msgs = b.at("messages").as_array();
  ASSERT_EQ(msgs.size(), 5u);  // user, assistant, user (tool result + text + image), ...
  // The assistant's tool call comes back with the same input object.
  const auto& call = msgs[1].as_object().at("content").as_array()[1].as_object();
  EXPECT_EQ(call.at("type").as_string(), "tool_use");
  EXPECT_EQ(call.at("input"), original.at("messages")
                                  .as_array()[1]
                                  .as_object()
                                  .at("content")
                                  .as_array()[2]
                                  .as_object()
                                  .at("input"));
  // The tool result leads the next user turn, as Anthropic requires.
  const auto& user = msgs[2].as_object().at("content").as_array();
  EXPECT_EQ(user[0].as_object().at("type").as_string(), "tool_result");
  EXPECT_EQ(user[0].as_object().at("tool_use_id").as_string(), "toolu_01");
  EXPECT_EQ(user[2].as_object().at("type").as_string(), "image");
  EXPECT_EQ(b.at("tool_choice").as_object().at("type").as_string(), "auto");
  EXPECT_TRUE(b.at("tool_choice").as_object().at("disable_parallel_tool_use").as_bool());
  EXPECT_EQ(b.at("stop_sequences").as_array().size(), 1u);
}

TEST(AnthropicInboundTest, RequestsThatCannotBeCarriedAreErrorsNamingTheField) {
  auto err = [](const char* body) {
    auto r = anthropic_to_openai_request(parse_object(body));
    EXPECT_FALSE(r.ok()) << body;
    return r.ok() ? std::string() : r.status().message();
  };
  EXPECT_NE(err(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})").find("max_tokens"),
            std::string::npos);
  EXPECT_NE(err(R"({"model":"m","max_tokens":5,"messages":[]})").find("messages"),
            std::string::npos);
  EXPECT_NE(err(R"({"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]})")
                .find("messages[0].role"),
            std::string::npos);
  EXPECT_NE(err(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[)"
                R"({"type":"document","source":{"type":"text","data":"x"}}]}]})")
                .find("messages[0].content[0].type"),
            std::string::npos);
  EXPECT_NE(err(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],)"
                R"("tools":[{"type":"web_search_20250305","name":"web_search"}]})")
                .find("tools[0].type"),
            std::string::npos);
  EXPECT_NE(err(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[)"
                R"({"type":"image","source":{"type":"file","file_id":"f"}}]}]})")
                .find("messages[0].content[0].source.type"),
            std::string::npos);
  EXPECT_NE(err(R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],)"
                R"("tool_choice":{"type":"tool"}})")
                .find("tool_choice.name"),
            std::string::npos);
}

TEST(AnthropicInboundTest, AChatCompletionBecomesAMessage) {
  const json::object completion = parse_object(R"({
    "id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-x",
    "choices":[{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant",
      "content":"Checking.","tool_calls":[{"id":"call_9","type":"function",
      "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
      {"id":"call_10","type":"function","function":{"name":"now","arguments":""}}]}}],
    "usage":{"prompt_tokens":31,"completion_tokens":7,"total_tokens":38}})");
  auto out = openai_to_anthropic_response(completion, "auto", "msg_sb-1");
  ASSERT_TRUE(out.ok()) << out.status().message();
  EXPECT_EQ(json::parse(*out), json::parse(R"({
    "id":"msg_sb-1","type":"message","role":"assistant","model":"auto",
    "content":[{"type":"text","text":"Checking."},
               {"type":"tool_use","id":"call_9","name":"get_weather","input":{"city":"Paris"}},
               {"type":"tool_use","id":"call_10","name":"now","input":{}}],
    "stop_reason":"tool_use","stop_sequence":null,
    "usage":{"input_tokens":31,"output_tokens":7}})"));
  // Each finish reason has its stop reason (the same table as the other direction).
  for (auto [finish, stop] : std::vector<std::pair<std::string, std::string>>{
           {"stop", "end_turn"}, {"length", "max_tokens"}, {"content_filter", "refusal"}}) {
    json::object c = parse_object(R"({"choices":[{"message":{"content":"x"}}]})");
    c["choices"].as_array()[0].as_object()["finish_reason"] = finish;
    auto r = openai_to_anthropic_response(c, "m", "id");
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(parse_object(*r).at("stop_reason").as_string(), stop) << finish;
  }
  // Prompt tokens the provider served from its cache are Anthropic's cache reads.
  auto cached = openai_to_anthropic_response(
      parse_object(R"({"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],)"
                   R"("usage":{"prompt_tokens":100,"completion_tokens":5,)"
                   R"("prompt_tokens_details":{"cached_tokens":64}}})"),
      "m", "id");
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(parse_object(*cached).at("usage"),
            json::parse(R"({"input_tokens":36,"output_tokens":5,"cache_read_input_tokens":64})"));
  // An answer with nothing in it still has one (empty) text block; a broken one is the
  // upstream's failure.
  auto empty = openai_to_anthropic_response(
      parse_object(R"({"choices":[{"message":{"content":null},"finish_reason":"stop"}]})"), "m",
      "id");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(parse_object(*empty).at("content").as_array().size(), 1u);
  auto broken = openai_to_anthropic_response(
      parse_object(R"({"choices":[{"message":{"tool_calls":[{"id":"c","function":)"
                   R"({"name":"f","arguments":"{not json"}}]}}]})"),
      "m", "id");
  EXPECT_EQ(broken.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(
      openai_to_anthropic_response(parse_object(R"({"error":{}})"), "m", "id").status().code(),
      StatusCode::kUnavailable);
}

// What an Anthropic SDK makes of an event stream: the message assembled from its events, with
// the order of events checked on the way (start first, blocks opened before their deltas and
// closed once, stop last).
struct Assembled {
  std::vector<json::object> blocks;
  std::string stop_reason;
  int64_t output_tokens = -1;
  int64_t input_tokens = -1;
  bool stopped = false;
};

Assembled assemble(const std::string& sse) {
  std::vector<SseEvent> events;
  SseParser parser;
  EXPECT_TRUE(parser.feed(sse, events).ok());
  Assembled a;
  std::map<int64_t, std::string> partial_json;
  std::map<int64_t, bool> open;
  bool started = false;
  for (const auto& ev : events) {
    if (ev.event == "ping") continue;
    const json::object e = parse_object(ev.data);
    const std::string type(e.at("type").as_string());
    EXPECT_EQ(type, ev.event) << "the event name is the payload's type";
    EXPECT_FALSE(a.stopped) << "an event after message_stop: " << type;
    if (type == "message_start") {
      EXPECT_FALSE(started);
      started = true;
      continue;
    }
    EXPECT_TRUE(started) << type << " before message_start";
    if (type == "content_block_start") {
      const int64_t i = e.at("index").as_int64();
      EXPECT_EQ(size_t(i), a.blocks.size()) << "blocks are numbered in order";
      a.blocks.push_back(e.at("content_block").as_object());
      open[i] = true;
    } else if (type == "content_block_delta") {
      const int64_t i = e.at("index").as_int64();
      EXPECT_TRUE(open[i]) << "a delta for a block that is not open";
      const auto& d = e.at("delta").as_object();
      if (d.at("type").as_string() == "text_delta") {
        auto& t = a.blocks[size_t(i)]["text"];
        t = std::string(t.as_string()) + std::string(d.at("text").as_string());
      } else {
        partial_json[i] += std::string(d.at("partial_json").as_string());
      }
    } else if (type == "content_block_stop") {
      const int64_t i = e.at("index").as_int64();
      EXPECT_TRUE(open[i]);
      open[i] = false;
      if (partial_json.count(i))
        a.blocks[size_t(i)]["input"] =
            json::parse(partial_json[i].empty() ? "{}" : partial_json[i]);
    } else if (type == "message_delta") {
      a.stop_reason = std::string(e.at("delta").as_object().at("stop_reason").as_string());
      const auto& u = e.at("usage").as_object();
      a.output_tokens = u.at("output_tokens").as_int64();
      if (auto* in = u.if_contains("input_tokens")) a.input_tokens = in->as_int64();
    } else if (type == "message_stop") {
      a.stopped = true;
    }
  }
  for (const auto& [i, o] : open) EXPECT_FALSE(o) << "block " << i << " never closed";
  return a;
}

// A recorded Anthropic stream, translated to OpenAI chunks by the outbound translator and back
// by the encoder, assembles into the same message.
TEST(AnthropicInboundTest, ARecordedStreamSurvivesTheRoundTrip) {
  const std::string original = read_fixture("anthropic_stream.sse");
  std::vector<SseEvent> events;
  SseParser parser;
  ASSERT_TRUE(parser.feed(original, events).ok());
  AnthropicStreamTranslator to_openai("auto", "chatcmpl-1", 1, true);
  AnthropicStreamEncoder to_anthropic("msg_1", "auto");
  std::string out;
  for (const auto& ev : events) {
    std::vector<std::string> chunks;
    ASSERT_TRUE(to_openai.feed(ev.event, ev.data, chunks).ok());
    for (const auto& c : chunks) {
      ASSERT_TRUE(to_anthropic.feed(c, out).ok()) << c;
    }
    if (to_openai.finished()) {
      ASSERT_TRUE(to_anthropic.feed("[DONE]", out).ok());
    }
  }
  ASSERT_TRUE(to_anthropic.finished());
  const Assembled want = assemble(original);
  const Assembled got = assemble(out);
  ASSERT_EQ(got.blocks.size(), want.blocks.size()) << out;
  for (size_t i = 0; i < want.blocks.size(); ++i) {
    EXPECT_EQ(got.blocks[i].at("type"), want.blocks[i].at("type")) << i;
    if (want.blocks[i].at("type") == "text") {
      EXPECT_EQ(got.blocks[i].at("text"), want.blocks[i].at("text"));
    } else {
      EXPECT_EQ(got.blocks[i].at("input"), want.blocks[i].at("input")) << i;
    }
  }
  EXPECT_EQ(got.stop_reason, want.stop_reason);
  EXPECT_TRUE(got.stopped);
  EXPECT_EQ(got.output_tokens, to_openai.usage().completion_tokens);
  EXPECT_EQ(got.input_tokens, to_openai.usage().prompt_tokens);
}

TEST(AnthropicInboundTest, TheEncoderOpensABlockPerToolCallAndEndsOnce) {
  AnthropicStreamEncoder enc("msg_2", "auto");
  std::string out;
  for (
      const char* c : {
          R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
          R"({"choices":[{"index":0,"delta":{"content":"Two calls."}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"a","arguments":""}}]}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":"}}]}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"c2","type":"function","function":{"name":"b","arguments":"{}"}}]}}]})",
          R"({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})",
          R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}})",
      })
    ASSERT_TRUE(enc.feed(c, out).ok()) << c;
  ASSERT_TRUE(enc.feed("[DONE]", out).ok());
  ASSERT_TRUE(enc.feed("[DONE]", out).ok());  // once finished, nothing more
  const Assembled a = assemble(out);
  ASSERT_EQ(a.blocks.size(), 3u) << out;
  EXPECT_EQ(a.blocks[0].at("text"), "Two calls.");
  EXPECT_EQ(a.blocks[1].at("name"), "a");
  EXPECT_EQ(a.blocks[1].at("input"), json::parse(R"({"x":1})"));
  EXPECT_EQ(a.blocks[2].at("id"), "c2");
  EXPECT_EQ(a.blocks[2].at("input"), json::object{});
  EXPECT_EQ(a.stop_reason, "tool_use");
  EXPECT_EQ(a.output_tokens, 9);
  EXPECT_EQ(a.input_tokens, 12);
  EXPECT_EQ(out.rfind("event: message_stop"), out.find("event: message_stop"));
  std::string more;
  EXPECT_FALSE(AnthropicStreamEncoder("m", "x").feed("not json", more).ok());
  EXPECT_TRUE(more.empty());
}

TEST(AnthropicInboundTest, ErrorsHaveTheTypesTheSdksMapToTheirErrors) {
  for (auto [status, type] :
       std::vector<std::pair<int, std::string>>{{400, "invalid_request_error"},
                                                {401, "authentication_error"},
                                                {403, "permission_error"},
                                                {404, "not_found_error"},
                                                {413, "request_too_large"},
                                                {429, "rate_limit_error"},
                                                {500, "api_error"},
                                                {502, "api_error"},
                                                {529, "overloaded_error"}}) {
    const json::object e = parse_object(anthropic_error_json(status, "why \"quoted\""));
    EXPECT_EQ(e.at("type"), "error");
    EXPECT_EQ(e.at("error").as_object().at("type").as_string(), type) << status;
    EXPECT_EQ(e.at("error").as_object().at("message").as_string(), "why \"quoted\"");
  }
  const std::string ev = anthropic_error_event("api_error", "upstream failed");
  EXPECT_EQ(ev.rfind("event: error\ndata: ", 0), 0u) << ev;
}

}  // namespace
}  // namespace switchboard::upstream
