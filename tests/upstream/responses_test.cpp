// The OpenAI Responses API over the chat path: requests into chat completion requests, chat
// completions back into Responses objects, and chat chunk streams into the Responses events
// (checked with an accumulator that rebuilds the response the way the openai SDKs' ResponseStream
// does).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "test_util.h"
#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

namespace json = boost::json;
using testing::parse_object;
using testing::parse_or_fail;
using testing::read_fixture;

// ---- requests -------------------------------------------------------------------------------

// The chat request for a Responses request (both steps must succeed).
json::value chat_of(std::string_view request_text) {
  const json::object request = parse_object(request_text);
  auto items = responses_input_items(request);
  EXPECT_TRUE(items.ok()) << items.status().to_string();
  if (!items.ok()) return {};
  auto chat = responses_to_chat_request(request, *items);
  EXPECT_TRUE(chat.ok()) << chat.status().to_string();
  return chat.ok() ? parse_or_fail(*chat) : json::value();
}

json::value messages_of(std::string_view request_text) {
  json::value chat = chat_of(request_text);
  return chat.is_object() && chat.as_object().contains("messages") ? chat.at("messages")
                                                                   : json::value();
}

// The error of either step for a request that must be refused.
Status error_of(std::string_view request_text) {
  const json::object request = parse_object(request_text);
  auto items = responses_input_items(request);
  if (!items.ok()) return items.status();
  auto chat = responses_to_chat_request(request, *items);
  EXPECT_FALSE(chat.ok()) << "accepted: " << *chat;
  return chat.ok() ? Status::ok_status() : chat.status();
}

void expect_invalid(std::string_view request_text, std::string_view field) {
  const Status st = error_of(request_text);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << request_text << " → " << st.to_string();
  EXPECT_NE(st.message().find(field), std::string::npos)
      << "'" << field << "' not named in: " << st.message();
}

TEST(ResponsesRequest, StringInputIsOneUserMessage) {
  EXPECT_EQ(chat_of(R"({"model":"gpt-4.1","input":"Tell me a joke"})"),
            parse_or_fail(R"({"model":"gpt-4.1",
                "messages":[{"role":"user","content":"Tell me a joke"}]})"));
}

TEST(ResponsesRequest, InstructionsBecomeTheFirstSystemMessage) {
  EXPECT_EQ(messages_of(R"({"model":"m","instructions":"Talk like a pirate.",
                "input":[{"role":"user","content":"Hi"}]})"),
            parse_or_fail(R"([{"role":"system","content":"Talk like a pirate."},
                              {"role":"user","content":"Hi"}])"));
  // An empty instructions string adds nothing.
  EXPECT_EQ(messages_of(R"({"model":"m","instructions":"","input":"Hi"})"),
            parse_or_fail(R"([{"role":"user","content":"Hi"}])"));
  expect_invalid(R"({"model":"m","instructions":5,"input":"Hi"})", "instructions");
}

TEST(ResponsesRequest, UserPartsTextAndImages) {
  EXPECT_EQ(messages_of(R"({"model":"m","input":[{"type":"message","role":"user","content":[
                {"type":"input_text","text":"What is in these images?"},
                {"type":"input_image","image_url":"https://example.com/cat.png","detail":"high"},
                {"type":"input_image","image_url":"data:image/png;base64,iVBORw0KGgo="},
                {"type":"input_image","image_url":"https://example.com/dog.jpg","detail":"low"}]}]})"),
            parse_or_fail(R"([{"role":"user","content":[
                {"type":"text","text":"What is in these images?"},
                {"type":"image_url","image_url":{"url":"https://example.com/cat.png","detail":"high"}},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
                {"type":"image_url","image_url":{"url":"https://example.com/dog.jpg","detail":"low"}}
            ]}])"));
  // A file with inline data becomes a chat file part.
  EXPECT_EQ(messages_of(R"({"model":"m","input":[{"role":"user","content":[
                {"type":"input_text","text":"Summarise"},
                {"type":"input_file","filename":"a.pdf","file_data":"data:application/pdf;base64,JVBE"}]}]})"),
            parse_or_fail(R"([{"role":"user","content":[{"type":"text","text":"Summarise"},
                {"type":"file","file":{"file_data":"data:application/pdf;base64,JVBE","filename":"a.pdf"}}]}])"));
}

TEST(ResponsesRequest, LoneInputTextBecomesAPlainString) {
  EXPECT_EQ(messages_of(R"({"model":"m","input":[{"type":"message","role":"user",
                "content":[{"type":"input_text","text":"just text"}]}]})"),
            parse_or_fail(R"([{"role":"user","content":"just text"}])"));
  // Two texts stay parts.
  EXPECT_EQ(messages_of(R"({"model":"m","input":[{"role":"user","content":[
                {"type":"input_text","text":"a"},{"type":"input_text","text":"b"}]}]})"),
            parse_or_fail(R"([{"role":"user","content":[{"type":"text","text":"a"},
                                                         {"type":"text","text":"b"}]}])"));
}

TEST(ResponsesRequest, DeveloperAndSystemRolesBecomeSystem) {
  EXPECT_EQ(messages_of(R"({"model":"m","input":[
                {"type":"message","role":"developer","content":"Answer in French."},
                {"type":"message","role":"developer","content":[
                    {"type":"input_text","text":"Rule one."},{"type":"input_text","text":"Rule two."}]},
                {"type":"message","role":"system","content":"Sys."},
                {"type":"message","role":"user","content":"Bonjour"}]})"),
            parse_or_fail(R"([{"role":"system","content":"Answer in French."},
                              {"role":"system","content":"Rule one.\n\nRule two."},
                              {"role":"system","content":"Sys."},
                              {"role":"user","content":"Bonjour"}])"));
  expect_invalid(R"({"model":"m","input":[{"role":"critic","content":"x"}]})", "input[0].role");
}

TEST(ResponsesRequest, AssistantOutputTextHistory) {
  EXPECT_EQ(messages_of(R"({"model":"m","input":[
                {"role":"user","content":"knock knock"},
                {"id":"msg_1","type":"message","role":"assistant","status":"completed","content":[
                    {"type":"output_text","text":"Who's ","annotations":[]},
                    {"type":"output_text","text":"there?","annotations":[]}]},
                {"role":"user","content":"Lettuce"}]})"),
            parse_or_fail(R"([{"role":"user","content":"knock knock"},
                              {"role":"assistant","content":"Who's there?"},
                              {"role":"user","content":"Lettuce"}])"));
  // Images cannot be part of an assistant turn.
  expect_invalid(R"({"model":"m","input":[{"role":"assistant","content":[
                    {"type":"input_image","image_url":"https://x/y.png"}]}]})",
                 "input[0].content[0].type");
}

TEST(ResponsesRequest, FunctionCallsJoinThePrecedingAssistantMessage) {
  EXPECT_EQ(messages_of(R"({"model":"m","input":[
                {"role":"user","content":"Weather in Paris and Rome?"},
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"Checking."}]},
                {"type":"function_call","call_id":"c1","name":"weather","arguments":"{\"city\":\"Paris\"}"},
                {"type":"function_call","call_id":"c2","name":"weather","arguments":"{\"city\":\"Rome\"}"},
                {"type":"function_call_output","call_id":"c1","output":"18C"},
                {"type":"function_call_output","call_id":"c2","output":"25C"}]})"),
            parse_or_fail(R"([{"role":"user","content":"Weather in Paris and Rome?"},
                {"role":"assistant","content":"Checking.","tool_calls":[
                  {"id":"c1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}},
                  {"id":"c2","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Rome\"}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"18C"},
                {"role":"tool","tool_call_id":"c2","content":"25C"}])"));
}

TEST(ResponsesRequest, ConsecutiveFunctionCallsShareOneAssistantTurn) {
  // Without assistant text before them: one turn with null content; a call after an output starts
  // a new turn; a call after a user message does not join an older assistant message.
  EXPECT_EQ(messages_of(R"({"model":"m","input":[
                {"role":"assistant","content":"Earlier answer."},
                {"role":"user","content":"Go"},
                {"type":"function_call","call_id":"a","name":"f","arguments":"{}"},
                {"type":"reasoning","id":"rs_1","summary":[]},
                {"type":"function_call","call_id":"b","name":"g","arguments":"{\"x\":1}"},
                {"type":"function_call_output","call_id":"a","output":"A"},
                {"type":"function_call_output","call_id":"b","output":"B"},
                {"type":"function_call","call_id":"c","name":"f"},
                {"type":"function_call_output","call_id":"c","output":"C"}]})"),
            parse_or_fail(R"([{"role":"assistant","content":"Earlier answer."},
                {"role":"user","content":"Go"},
                {"role":"assistant","content":null,"tool_calls":[
                  {"id":"a","type":"function","function":{"name":"f","arguments":"{}"}},
                  {"id":"b","type":"function","function":{"name":"g","arguments":"{\"x\":1}"}}]},
                {"role":"tool","tool_call_id":"a","content":"A"},
                {"role":"tool","tool_call_id":"b","content":"B"},
                {"role":"assistant","content":null,"tool_calls":[
                  {"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c","content":"C"}])"));
  expect_invalid(R"({"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]})",
                 "input[0].call_id");
  expect_invalid(
      R"({"model":"m","input":[{"type":"function_call","call_id":"a","arguments":"{}"}]})",
      "input[0].name");
  expect_invalid(
      R"({"model":"m","input":[{"type":"function_call","call_id":"a","name":"f","arguments":{}}]})",
      "input[0].arguments");
}

TEST(ResponsesRequest, FunctionCallOutputStringAndParts) {
  EXPECT_EQ(messages_of(R"({"model":"m","input":[
                {"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},
                {"type":"function_call_output","call_id":"c1","output":"plain result"},
                {"type":"function_call","call_id":"c2","name":"f","arguments":"{}"},
                {"type":"function_call_output","call_id":"c2","output":[
                    {"type":"input_text","text":"line one"},{"type":"input_text","text":"line two"}]}]})"),
            parse_or_fail(R"([
                {"role":"assistant","content":null,"tool_calls":[
                  {"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"plain result"},
                {"role":"assistant","content":null,"tool_calls":[
                  {"id":"c2","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c2","content":"line one\nline two"}])"));
  expect_invalid(R"({"model":"m","input":[{"type":"function_call_output","output":"x"}]})",
                 "input[0].call_id");
}

TEST(ResponsesRequest, ReasoningItemsAreDropped) {
  EXPECT_EQ(messages_of(R"({"model":"m","input":[
                {"role":"user","content":"Think"},
                {"type":"reasoning","id":"rs_9","summary":[{"type":"summary_text","text":"hmm"}],
                 "encrypted_content":"gAAA"},
                {"role":"assistant","content":"Done"}]})"),
            parse_or_fail(R"([{"role":"user","content":"Think"},
                              {"role":"assistant","content":"Done"}])"));
}

TEST(ResponsesRequest, FunctionToolsBecomeChatTools) {
  json::value chat = chat_of(R"({"model":"m","input":"x","tools":[
      {"type":"function","name":"get_weather","description":"Weather of a city","strict":true,
       "parameters":{"type":"object","properties":{"city":{"type":"string"}},
                     "required":["city"],"additionalProperties":false}},
      {"type":"function","name":"noop"}]})");
  EXPECT_EQ(chat.at("tools"), parse_or_fail(R"([
      {"type":"function","function":{"name":"get_weather","description":"Weather of a city",
       "strict":true,"parameters":{"type":"object","properties":{"city":{"type":"string"}},
                                   "required":["city"],"additionalProperties":false}}},
      {"type":"function","function":{"name":"noop"}}])"));
  // An empty list sends no tools.
  EXPECT_FALSE(chat_of(R"({"model":"m","input":"x","tools":[]})").as_object().contains("tools"));
  expect_invalid(R"({"model":"m","input":"x","tools":[{"type":"function"}]})", "tools[0].name");
}

TEST(ResponsesRequest, ToolChoiceVariants) {
  auto choice = [](std::string_view c) {
    json::value chat = chat_of(std::string(R"({"model":"m","input":"x","tools":[
        {"type":"function","name":"f","parameters":{"type":"object"}}],"tool_choice":)") +
                               std::string(c) + "}");
    return chat.is_object() ? chat.at("tool_choice") : json::value();
  };
  EXPECT_EQ(choice(R"("required")"), "required");
  EXPECT_EQ(choice(R"("auto")"), "auto");
  EXPECT_EQ(choice(R"("none")"), "none");
  EXPECT_EQ(choice(R"({"type":"function","name":"f"})"),
            parse_or_fail(R"({"type":"function","function":{"name":"f"}})"));
  EXPECT_FALSE(chat_of(R"({"model":"m","input":"x"})").as_object().contains("tool_choice"));
}

TEST(ResponsesRequest, TextFormatBecomesResponseFormat) {
  json::value chat = chat_of(R"({"model":"m","input":"x","text":{"format":{
      "type":"json_schema","name":"person","description":"A person","strict":true,
      "schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},
                "required":["name","age"],"additionalProperties":false}}}})");
  EXPECT_EQ(chat.at("response_format"), parse_or_fail(R"({"type":"json_schema","json_schema":{
      "name":"person","description":"A person","strict":true,
      "schema":{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},
                "required":["name","age"],"additionalProperties":false}}})"));
  EXPECT_EQ(chat_of(R"({"model":"m","input":"x","text":{"format":{"type":"json_object"}}})")
                .at("response_format"),
            parse_or_fail(R"({"type":"json_object"})"));
  EXPECT_FALSE(chat_of(R"({"model":"m","input":"x","text":{"format":{"type":"text"}}})")
                   .as_object()
                   .contains("response_format"));
  EXPECT_FALSE(chat_of(R"({"model":"m","input":"x","text":{"verbosity":"low"}})")
                   .as_object()
                   .contains("response_format"));
  expect_invalid(R"({"model":"m","input":"x","text":{"format":{"type":"json_schema",
                    "schema":{"type":"object"}}}})",
                 "text.format.name");
  expect_invalid(R"({"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"n"}}})",
                 "text.format.schema");
  expect_invalid(R"({"model":"m","input":"x","text":{"format":{"type":"yaml"}}})",
                 "text.format.type");
}

TEST(ResponsesRequest, SettingsMapToChatParameters) {
  EXPECT_EQ(chat_of(R"({"model":"o4-mini","input":"x","max_output_tokens":256,
                "reasoning":{"effort":"high","summary":"auto"},"temperature":0.5,"top_p":0.9,
                "parallel_tool_calls":false,"user":"u-1","store":false,"metadata":{"k":"v"},
                "include":["reasoning.encrypted_content"],"truncation":"auto",
                "previous_response_id":null,"stream":false})"),
            parse_or_fail(R"({"model":"o4-mini","messages":[{"role":"user","content":"x"}],
                "max_tokens":256,"reasoning_effort":"high","temperature":0.5,"top_p":0.9,
                "parallel_tool_calls":false,"user":"u-1"})"));
  expect_invalid(R"({"model":"m","input":"x","max_output_tokens":0})", "max_output_tokens");
  expect_invalid(R"({"model":"m","input":"x","max_output_tokens":"many"})", "max_output_tokens");
  expect_invalid(R"({"input":"x"})", "model");
}

TEST(ResponsesRequest, StreamAsksForUsage) {
  json::value chat = chat_of(R"({"model":"m","input":"x","stream":true})");
  EXPECT_EQ(chat.at("stream"), true);
  EXPECT_EQ(chat.at("stream_options"), parse_or_fail(R"({"include_usage":true})"));
}

TEST(ResponsesRequest, UnsupportedInputsAreRefusedNamingTheField) {
  expect_invalid(R"({"model":"m","input":"x","tools":[{"type":"web_search"}]})", "tools[0].type");
  expect_invalid(R"({"model":"m","input":"x","tools":[
                    {"type":"function","name":"f"},{"type":"web_search_preview"}]})",
                 "tools[1].type");
  expect_invalid(R"({"model":"m","input":[{"role":"user","content":[
                    {"type":"input_text","text":"look"},
                    {"type":"input_image","file_id":"file-abc123"}]}]})",
                 "input[0].content[1]");
  expect_invalid(R"({"model":"m","input":[{"role":"user","content":[
                    {"type":"input_file","file_id":"file-abc123"}]}]})",
                 "input[0].content[0]");
  expect_invalid(R"({"model":"m","input":[{"role":"user","content":"a"},
                    {"type":"item_reference","id":"msg_123"}]})",
                 "input[1]");
  expect_invalid(R"({"model":"m","input":"x","background":true})", "background");
  expect_invalid(R"({"model":"m","input":"x","conversation":"conv_1"})", "conversation");
  expect_invalid(R"({"model":"m","input":[{"type":"web_search_call","id":"ws_1"}]})",
                 "input[0].type");
  expect_invalid(R"({"model":"m"})", "input");
  expect_invalid(R"({"model":"m","input":[]})", "input");
  expect_invalid(R"({"model":"m","input":42})", "input");
  expect_invalid(R"({"model":"m","input":["text"]})", "input[0]");
  expect_invalid(R"({"model":"m","input":[{"role":"user","content":[{"type":"audio"}]}]})",
                 "input[0].content[0].type");
  expect_invalid(R"({"model":"m","input":"x","tool_choice":"sometimes"})", "tool_choice");
  expect_invalid(R"({"model":"m","input":"x","tool_choice":{"type":"function"}})", "tool_choice");
  expect_invalid(R"({"model":"m","input":"x","tool_choice":{"type":"web_search_preview"}})",
                 "tool_choice");
  expect_invalid(R"({"model":"m","input":"x","tool_choice":7})", "tool_choice");
  // background:false is what the SDKs may send explicitly; it is fine.
  EXPECT_EQ(chat_of(R"({"model":"m","input":"x","background":false})").at("model"), "m");
}

TEST(ResponsesRequest, CodexAgentTurnFixture) {
  const json::object request = parse_object(read_fixture("responses/codex_request.json"));
  auto items = responses_input_items(request);
  ASSERT_TRUE(items.ok()) << items.status().to_string();
  auto chat = responses_to_chat_request(request, *items);
  ASSERT_TRUE(chat.ok()) << chat.status().to_string();
  EXPECT_EQ(parse_or_fail(*chat), parse_or_fail(read_fixture("responses/codex_chat_expected.json")))
      << *chat;
}

// ---- input items ----------------------------------------------------------------------------

TEST(ResponsesInputItems, StringInputIsOneMessageItem) {
  auto items = responses_input_items(parse_object(R"({"model":"m","input":"hello"})"));
  ASSERT_TRUE(items.ok()) << items.status().to_string();
  EXPECT_EQ(json::value(*items),
            parse_or_fail(R"([{"type":"message","role":"user","content":"hello"}])"));
}

TEST(ResponsesInputItems, EasyInputMessagesGetTypeMessage) {
  auto items = responses_input_items(parse_object(R"({"input":[
      {"role":"user","content":"a"},
      {"type":"message","role":"assistant","content":[{"type":"output_text","text":"b"}]},
      {"type":"function_call_output","call_id":"c","output":"o"}]})"));
  ASSERT_TRUE(items.ok()) << items.status().to_string();
  EXPECT_EQ(json::value(*items), parse_or_fail(R"([
      {"role":"user","content":"a","type":"message"},
      {"type":"message","role":"assistant","content":[{"type":"output_text","text":"b"}]},
      {"type":"function_call_output","call_id":"c","output":"o"}])"));
  for (const char* bad :
       {R"({"model":"m"})", R"({"input":null})", R"({"input":3})", R"({"input":[1]})"}) {
    auto r = responses_input_items(parse_object(bad));
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find("input"), std::string::npos) << r.status().message();
  }
}

// ---- whole answers --------------------------------------------------------------------------

// The response for a completion, with `output` checked to equal the response's output.
json::object respond(std::string_view completion, std::string_view request,
                     std::string_view id = "resp_abc", int64_t created_at = 1746000000) {
  json::array output{json::string("stale")};
  auto r = chat_to_responses_response(parse_object(completion), parse_object(request), id,
                                      created_at, output);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  if (!r.ok()) return {};
  json::object response = parse_object(*r);
  EXPECT_EQ(response.at("output"), json::value(output)) << "the output out-parameter differs";
  return response;
}

// Items' ids are the gateway's own: checked to be distinct and prefixed, then removed so the rest
// can be compared whole.
json::value without_item_ids(json::value output) {
  std::set<std::string> seen;
  for (auto& v : output.as_array()) {
    json::object& item = v.as_object();
    const std::string id(item.at("id").as_string());
    const std::string prefix = item.at("type") == "message" ? "msg_" : "fc_";
    EXPECT_EQ(id.rfind(prefix, 0), 0u) << id;
    EXPECT_TRUE(seen.insert(id).second) << "duplicate item id " << id;
    item.erase("id");
  }
  return output;
}

TEST(ResponsesResponse, TextAnswerWithUsageAndEchoedSettings) {
  json::object r = respond(
      R"({"id":"chatcmpl-1","object":"chat.completion","created":1746000000,
          "model":"gpt-4.1-2025-04-14","choices":[{"index":0,"message":{"role":"assistant",
          "content":"Hello there!","refusal":null,"annotations":[]},"logprobs":null,
          "finish_reason":"stop"}],"usage":{"prompt_tokens":120,"completion_tokens":30,
          "total_tokens":150,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0},
          "completion_tokens_details":{"reasoning_tokens":12,"audio_tokens":0}}})",
      R"({"model":"fast-alias","input":"hi","instructions":"Be brief.","temperature":0.2,
          "tools":[{"type":"function","name":"f","parameters":{"type":"object"}}]})");
  json::value output = without_item_ids(r.at("output"));
  r.erase("output");
  EXPECT_EQ(json::value(r), parse_or_fail(R"({
      "id":"resp_abc","object":"response","created_at":1746000000,"status":"completed",
      "error":null,"incomplete_details":null,"instructions":"Be brief.","max_output_tokens":null,
      "model":"fast-alias","parallel_tool_calls":true,"previous_response_id":null,
      "reasoning":{"effort":null,"summary":null},"store":true,"temperature":0.2,
      "text":{"format":{"type":"text"}},"tool_choice":"auto",
      "tools":[{"type":"function","name":"f","parameters":{"type":"object"}}],
      "top_p":1.0,"truncation":"disabled","user":null,"metadata":{},
      "usage":{"input_tokens":120,"input_tokens_details":{"cached_tokens":64},
               "output_tokens":30,"output_tokens_details":{"reasoning_tokens":12},
               "total_tokens":150}})"));
  EXPECT_EQ(output, parse_or_fail(R"([{"type":"message","status":"completed","role":"assistant",
      "content":[{"type":"output_text","text":"Hello there!","annotations":[],"logprobs":[]}]}])"));
}

TEST(ResponsesResponse, SettingsSentAreEchoed) {
  json::object r = respond(
      R"({"choices":[{"message":{"role":"assistant","content":"{\"a\":1}"},"finish_reason":"stop"}]})",
      R"({"model":"m","input":"x","max_output_tokens":500,"store":false,"top_p":0.3,
          "tool_choice":"required","parallel_tool_calls":false,"reasoning":{"effort":"low"},
          "previous_response_id":"resp_prev","user":"u","metadata":{"trace":"t1"},
          "text":{"format":{"type":"json_object"}}})");
  for (const char* k : {"max_output_tokens", "store", "top_p", "tool_choice", "parallel_tool_calls",
                        "previous_response_id", "user", "metadata", "text"})
    EXPECT_EQ(r.at(k), parse_object(R"({"max_output_tokens":500,"store":false,"top_p":0.3,
          "tool_choice":"required","parallel_tool_calls":false,"previous_response_id":"resp_prev",
          "user":"u","metadata":{"trace":"t1"},"text":{"format":{"type":"json_object"}}})")
                           .at(k))
        << k;
  EXPECT_EQ(r.at("reasoning"), parse_or_fail(R"({"effort":"low","summary":null})"));
  // No usage in the body: zeros, not null (the SDKs read the numbers).
  EXPECT_EQ(r.at("usage"), parse_or_fail(R"({"input_tokens":0,"input_tokens_details":
      {"cached_tokens":0},"output_tokens":0,"output_tokens_details":{"reasoning_tokens":0},
      "total_tokens":0})"));
}

TEST(ResponsesResponse, ToolCallsBecomeFunctionCallItems) {
  json::object r = respond(R"({"choices":[{"index":0,"message":{"role":"assistant","content":null,
      "tool_calls":[
        {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
        {"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{\"tz\":\"CET\"}"}}]},
      "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7}})",
                           R"({"model":"m","input":"x"})");
  EXPECT_EQ(r.at("status"), "completed");
  EXPECT_EQ(without_item_ids(r.at("output")), parse_or_fail(R"([
      {"type":"function_call","status":"completed","arguments":"{\"city\":\"Paris\"}",
       "call_id":"call_1","name":"get_weather"},
      {"type":"function_call","status":"completed","arguments":"{\"tz\":\"CET\"}",
       "call_id":"call_2","name":"get_time"}])"));
  EXPECT_EQ(r.at("usage").at("total_tokens"), 12);

  // Text and a call: the message first.
  json::object both =
      respond(R"({"choices":[{"message":{"role":"assistant","content":"Let me check.",
      "tool_calls":[{"id":"call_9","type":"function","function":{"name":"f","arguments":"{}"}}]},
      "finish_reason":"tool_calls"}]})",
              R"({"model":"m","input":"x"})");
  const json::array& out = both.at("output").as_array();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].at("type"), "message");
  EXPECT_EQ(out[0].at("content").at(0).at("text"), "Let me check.");
  EXPECT_EQ(out[1].at("type"), "function_call");
  EXPECT_EQ(out[1].at("call_id"), "call_9");
}

TEST(ResponsesResponse, LengthAndContentFilterAreIncomplete) {
  json::object r = respond(
      R"({"choices":[{"message":{"role":"assistant","content":"Once upon a"},"finish_reason":"length"}]})",
      R"({"model":"m","input":"x","max_output_tokens":3})");
  EXPECT_EQ(r.at("status"), "incomplete");
  EXPECT_EQ(r.at("incomplete_details"), parse_or_fail(R"({"reason":"max_output_tokens"})"));
  EXPECT_EQ(r.at("output").at(0).at("content").at(0).at("text"), "Once upon a");

  json::object f = respond(
      R"({"choices":[{"message":{"role":"assistant","content":""},"finish_reason":"content_filter"}]})",
      R"({"model":"m","input":"x"})");
  EXPECT_EQ(f.at("status"), "incomplete");
  EXPECT_EQ(f.at("incomplete_details"), parse_or_fail(R"({"reason":"content_filter"})"));
  EXPECT_EQ(f.at("output"), json::array());

  json::object done = respond(
      R"({"choices":[{"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]})",
      R"({"model":"m","input":"x"})");
  EXPECT_EQ(done.at("status"), "completed");
  EXPECT_TRUE(done.at("incomplete_details").is_null());
}

TEST(ResponsesResponse, RefusalBecomesARefusalPart) {
  json::object r = respond(R"({"choices":[{"message":{"role":"assistant","content":null,
      "refusal":"I can't help with that."},"finish_reason":"stop"}]})",
                           R"({"model":"m","input":"x"})");
  EXPECT_EQ(without_item_ids(r.at("output")),
            parse_or_fail(R"([{"type":"message","status":"completed","role":"assistant",
                "content":[{"type":"refusal","refusal":"I can't help with that."}]}])"));
}

TEST(ResponsesResponse, BodiesWithoutChoicesAreUnavailable) {
  for (const char* body :
       {R"({"error":{"message":"overloaded"}})", R"({"choices":[]})", R"({"choices":[1]})",
        R"({"choices":"x"})", R"({"choices":[{"finish_reason":"stop"}]})",
        R"({"choices":[{"message":"text"}]})"}) {
    json::array output{json::string("kept")};
    auto r = chat_to_responses_response(parse_object(body), parse_object(R"({"model":"m"})"),
                                        "resp_x", 1, output);
    ASSERT_FALSE(r.ok()) << body;
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << body;
  }
}

// ---- streams --------------------------------------------------------------------------------

struct Event {
  std::string name;  // the `event:` line
  json::object data;
};

// Parses the encoder's SSE text: blocks of exactly `event: <name>` and `data: <json>`.
std::vector<Event> parse_events(const std::string& sse) {
  std::vector<Event> events;
  size_t pos = 0;
  while (pos < sse.size()) {
    const size_t end = sse.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event at " << sse.substr(pos);
    if (end == std::string::npos) break;
    const std::string block = sse.substr(pos, end - pos);
    pos = end + 2;
    const size_t nl = block.find('\n');
    EXPECT_NE(nl, std::string::npos) << block;
    if (nl == std::string::npos) continue;
    const std::string first = block.substr(0, nl), second = block.substr(nl + 1);
    EXPECT_EQ(first.rfind("event: ", 0), 0u) << block;
    EXPECT_EQ(second.rfind("data: ", 0), 0u) << block;
    EXPECT_EQ(second.find('\n'), std::string::npos) << "multi-line data: " << block;
    events.push_back({first.substr(7), parse_object(second.substr(6))});
  }
  return events;
}

// The data payloads of a recorded chat stream.
std::vector<std::string> chat_payloads(const std::string& sse) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < sse.size()) {
    size_t nl = sse.find('\n', pos);
    if (nl == std::string::npos) nl = sse.size();
    const std::string line = sse.substr(pos, nl - pos);
    if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
    pos = nl + 1;
  }
  return out;
}

std::vector<std::string> types_of(const std::vector<Event>& events) {
  std::vector<std::string> types;
  for (const auto& e : events) types.push_back(e.name);
  return types;
}

// What the openai SDKs' ResponseStream builds from the events, plus the checks that each event
// fits the state so far. `final` is the response of the terminal event.
struct Accumulated {
  json::object snapshot;
  json::object last;
  std::string terminal;  // response.completed / response.incomplete / response.failed
};

Accumulated accumulate(const std::vector<Event>& events) {
  Accumulated acc;
  int64_t expected_seq = 0;
  for (const Event& e : events) {
    const json::object& d = e.data;
    EXPECT_EQ(d.at("type"), json::value(e.name)) << "event name and data type differ";
    EXPECT_EQ(d.at("sequence_number"), expected_seq) << e.name;
    ++expected_seq;
    const std::string& type = e.name;
    if (type == "response.created") {
      EXPECT_TRUE(acc.snapshot.empty()) << "second response.created";
      acc.snapshot = d.at("response").as_object();
      EXPECT_EQ(acc.snapshot.at("status"), "in_progress");
      EXPECT_EQ(acc.snapshot.at("output"), json::array());
      continue;
    }
    EXPECT_FALSE(acc.snapshot.empty()) << type << " before response.created";
    if (acc.snapshot.empty()) continue;
    if (type == "response.in_progress") {
      EXPECT_EQ(d.at("response").at("id"), acc.snapshot.at("id"));
      continue;
    }
    if (type == "response.completed" || type == "response.incomplete" ||
        type == "response.failed") {
      EXPECT_TRUE(acc.terminal.empty()) << "second terminal event " << type;
      acc.terminal = type;
      acc.last = d.at("response").as_object();
      EXPECT_EQ(acc.last.at("id"), acc.snapshot.at("id"));
      continue;
    }
    EXPECT_TRUE(acc.terminal.empty()) << type << " after " << acc.terminal;
    json::array& output = acc.snapshot["output"].as_array();
    const auto index = d.at("output_index").to_number<int64_t>();
    if (type == "response.output_item.added") {
      EXPECT_EQ(index, int64_t(output.size())) << "output_index of a new item";
      output.push_back(d.at("item"));
      continue;
    }
    EXPECT_LT(index, int64_t(output.size())) << type;
    if (index >= int64_t(output.size())) continue;
    json::object& item = output[size_t(index)].as_object();
    if (d.contains("item_id")) {
      EXPECT_EQ(d.at("item_id"), item.at("id")) << type;
    }
    if (type == "response.output_item.done") {
      // Before the SDKs replace the item, what the deltas built must already be the item.
      json::object built = item;
      built["status"] = d.at("item").at("status");
      EXPECT_EQ(json::value(built), d.at("item")) << "deltas do not add up to the done item";
      item = d.at("item").as_object();
    } else if (type == "response.content_part.added") {
      EXPECT_EQ(item.at("type"), "message");
      json::array& content = item["content"].as_array();
      EXPECT_EQ(d.at("content_index"), int64_t(content.size()));
      content.push_back(d.at("part"));
    } else if (type == "response.output_text.delta") {
      EXPECT_EQ(item.at("type"), "message");
      json::array& content = item["content"].as_array();
      const auto ci = size_t(d.at("content_index").to_number<int64_t>());
      EXPECT_LT(ci, content.size());
      if (ci >= content.size()) continue;
      json::object& part = content[ci].as_object();
      EXPECT_EQ(part.at("type"), "output_text");
      std::string text(part.at("text").as_string());
      text += d.at("delta").as_string();
      part["text"] = text;
    } else if (type == "response.output_text.done") {
      EXPECT_EQ(
          d.at("text"),
          item.at("content").at(size_t(d.at("content_index").to_number<int64_t>())).at("text"));
    } else if (type == "response.content_part.done") {
      EXPECT_EQ(d.at("part"),
                item.at("content").at(size_t(d.at("content_index").to_number<int64_t>())));
    } else if (type == "response.function_call_arguments.delta") {
      EXPECT_EQ(item.at("type"), "function_call");
      std::string args(item.at("arguments").as_string());
      args += d.at("delta").as_string();
      item["arguments"] = args;
    } else if (type == "response.function_call_arguments.done") {
      EXPECT_EQ(d.at("arguments"), item.at("arguments"));
    } else {
      ADD_FAILURE() << "unexpected event " << type;
    }
  }
  EXPECT_FALSE(acc.terminal.empty()) << "no terminal event";
  return acc;
}

// Runs chunks through an encoder; returns the SSE text.
std::string encode(ResponsesStreamEncoder& enc, const std::vector<std::string>& chunks) {
  std::string out;
  for (const auto& c : chunks) {
    Status st = enc.feed(c, out);
    EXPECT_TRUE(st.ok()) << st.to_string() << " for " << c;
  }
  return out;
}

std::string text_chunk(std::string_view text, std::string_view finish = {}) {
  json::object choice{{"index", 0}, {"delta", json::object{{"content", text}}}};
  choice["finish_reason"] = finish.empty() ? json::value(nullptr) : json::value(finish);
  return json::serialize(json::object{{"choices", json::array{std::move(choice)}}});
}

std::string finish_chunk(std::string_view finish) {
  return json::serialize(json::object{
      {"choices", json::array{json::object{
                      {"index", 0}, {"delta", json::object()}, {"finish_reason", finish}}}}});
}

std::string call_chunk(int index, std::string_view id, std::string_view name,
                       std::string_view args) {
  json::object fn{{"arguments", args}};
  json::object call{{"index", index}, {"function", json::object()}};
  if (!id.empty()) {
    call["id"] = id;
    call["type"] = "function";
    fn["name"] = name;
  }
  call["function"] = std::move(fn);
  return json::serialize(json::object{
      {"choices",
       json::array{json::object{
           {"index", 0}, {"delta", json::object{{"tool_calls", json::array{std::move(call)}}}}}}}});
}

std::string usage_chunk(int prompt, int completion) {
  return json::serialize(
      json::object{{"choices", json::array()},
                   {"usage", json::object{{"prompt_tokens", prompt},
                                          {"completion_tokens", completion},
                                          {"total_tokens", prompt + completion}}}});
}

const char* kStreamRequest = R"({"model":"fast-alias","input":"hi","stream":true,
    "instructions":"Be kind.","tools":[{"type":"function","name":"get_weather"}]})";

TEST(ResponsesStream, RecordedTextStream) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s1", 1746000000);
  const std::string sse =
      encode(enc, chat_payloads(read_fixture("responses/chat_stream_text.sse")));
  EXPECT_TRUE(enc.finished());
  const std::vector<Event> events = parse_events(sse);
  EXPECT_EQ(
      types_of(events),
      (std::vector<std::string>{
          "response.created", "response.in_progress", "response.output_item.added",
          "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
          "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
          "response.content_part.done", "response.output_item.done", "response.completed"}));
  const Accumulated acc = accumulate(events);
  ASSERT_EQ(acc.terminal, "response.completed");
  EXPECT_EQ(acc.snapshot.at("output"), acc.last.at("output"));
  const std::string expected_text = "Hello, wörld! \"quoted\"\n";
  ASSERT_EQ(acc.last.at("output").as_array().size(), 1u);
  EXPECT_EQ(acc.last.at("output").at(0).at("content").at(0).at("text"), json::value(expected_text));
  EXPECT_EQ(acc.last.at("status"), "completed");
  EXPECT_EQ(acc.last.at("model"), "fast-alias");
  EXPECT_EQ(acc.last.at("instructions"), "Be kind.");
  EXPECT_EQ(acc.last.at("created_at"), 1746000000);
  EXPECT_EQ(acc.last.at("usage"), parse_or_fail(R"({"input_tokens":19,"input_tokens_details":
      {"cached_tokens":4},"output_tokens":6,"output_tokens_details":{"reasoning_tokens":2},
      "total_tokens":25})"));
  EXPECT_EQ(enc.usage(), (TokenUsage{19, 6}));
  EXPECT_EQ(json::value(enc.output()), acc.last.at("output"));
  // The created and final responses are the same object but for status, output and usage.
  json::object created = events[0].data.at("response").as_object(), last = acc.last;
  for (auto* r : {&created, &last})
    for (const char* k : {"status", "output", "usage"}) r->erase(k);
  EXPECT_EQ(created, last);
}

TEST(ResponsesStream, ParallelToolCalls) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s2", 5);
  const std::vector<Event> events = parse_events(
      encode(enc, chat_payloads(read_fixture("responses/chat_stream_parallel_tools.sse"))));
  const Accumulated acc = accumulate(events);
  ASSERT_EQ(acc.terminal, "response.completed");
  EXPECT_EQ(acc.snapshot.at("output"), acc.last.at("output"));
  EXPECT_EQ(without_item_ids(acc.last.at("output")), parse_or_fail(R"([
      {"type":"function_call","status":"completed","arguments":"{\"city\": \"Paris\"}",
       "call_id":"call_paris","name":"get_weather"},
      {"type":"function_call","status":"completed","arguments":"{\"city\": \"Tokyo\"}",
       "call_id":"call_tokyo","name":"get_weather"}])"));
  EXPECT_EQ(acc.last.at("usage").at("total_tokens"), 100);
  size_t arg_deltas = 0;
  for (const auto& e : events) arg_deltas += e.name == "response.function_call_arguments.delta";
  EXPECT_EQ(arg_deltas, 5u);
  EXPECT_EQ(json::value(enc.output()), acc.last.at("output"));
}

TEST(ResponsesStream, TextThenToolCall) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s3", 5);
  const std::vector<Event> events = parse_events(encode(
      enc, {text_chunk("Let me "), text_chunk("look."), call_chunk(0, "call_w", "get_weather", ""),
            call_chunk(0, "", "", "{\"city\""), call_chunk(0, "", "", ":\"Oslo\"}"),
            finish_chunk("tool_calls"), usage_chunk(10, 20), "[DONE]"}));
  EXPECT_EQ(
      types_of(events),
      (std::vector<std::string>{
          "response.created", "response.in_progress", "response.output_item.added",
          "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
          "response.output_text.done", "response.content_part.done", "response.output_item.done",
          "response.output_item.added", "response.function_call_arguments.delta",
          "response.function_call_arguments.delta", "response.function_call_arguments.done",
          "response.output_item.done", "response.completed"}));
  const Accumulated acc = accumulate(events);
  EXPECT_EQ(acc.snapshot.at("output"), acc.last.at("output"));
  EXPECT_EQ(without_item_ids(acc.last.at("output")), parse_or_fail(R"([
      {"type":"message","status":"completed","role":"assistant","content":[
        {"type":"output_text","text":"Let me look.","annotations":[],"logprobs":[]}]},
      {"type":"function_call","status":"completed","arguments":"{\"city\":\"Oslo\"}",
       "call_id":"call_w","name":"get_weather"}])"));
  EXPECT_EQ(acc.last.at("usage").at("input_tokens"), 10);
  EXPECT_EQ(acc.last.at("usage").at("output_tokens"), 20);
}

TEST(ResponsesStream, LengthFinishIsIncomplete) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s4", 5);
  const std::vector<Event> events = parse_events(encode(
      enc, {text_chunk("Once "), text_chunk("upon", "length"), usage_chunk(3, 2), "[DONE]"}));
  const Accumulated acc = accumulate(events);
  ASSERT_EQ(acc.terminal, "response.incomplete");
  EXPECT_EQ(acc.last.at("status"), "incomplete");
  EXPECT_EQ(acc.last.at("incomplete_details"), parse_or_fail(R"({"reason":"max_output_tokens"})"));
  EXPECT_EQ(acc.snapshot.at("output"), acc.last.at("output"));
  EXPECT_EQ(acc.last.at("output").at(0).at("content").at(0).at("text"), "Once upon");
  EXPECT_EQ(events.back().name, "response.incomplete");
}

TEST(ResponsesStream, FailEmitsResponseFailed) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s5", 5);
  std::string out = encode(enc, {text_chunk("partial")});
  enc.fail("upstream connection reset", out);
  EXPECT_TRUE(enc.finished());
  const std::vector<Event> events = parse_events(out);
  const Accumulated acc = accumulate(events);
  ASSERT_EQ(acc.terminal, "response.failed");
  EXPECT_EQ(acc.last.at("status"), "failed");
  EXPECT_EQ(acc.last.at("error").at("message"), "upstream connection reset");
  EXPECT_EQ(acc.last.at("error").at("code"), "server_error");
  // Nothing after the end.
  std::string more;
  EXPECT_TRUE(enc.feed(text_chunk("late"), more).ok());
  enc.finish(more);
  enc.fail("again", more);
  EXPECT_EQ(more, "");

  // A failure before any chunk still starts the response first.
  ResponsesStreamEncoder early(parse_object(kStreamRequest), "resp_s6", 5);
  std::string out2;
  early.fail("no upstream", out2);
  EXPECT_EQ(
      types_of(parse_events(out2)),
      (std::vector<std::string>{"response.created", "response.in_progress", "response.failed"}));
}

TEST(ResponsesStream, NonJsonChunkIsInvalidArgument) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s7", 5);
  std::string out;
  for (const char* bad : {"not json", "[1,2]", "\"text\"", "{\"choices\":"}) {
    Status st = enc.feed(bad, out);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(out, "") << "nothing is appended for a bad chunk";
  EXPECT_FALSE(enc.finished());
  // The stream goes on after.
  out = encode(enc, {text_chunk("ok"), "[DONE]"});
  const Accumulated acc = accumulate(parse_events(out));
  EXPECT_EQ(acc.terminal, "response.completed");
}

TEST(ResponsesStream, HasContentAfterTheFirstContent) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s8", 5);
  std::string out;
  EXPECT_FALSE(enc.has_content());
  ASSERT_TRUE(
      enc.feed(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})", out).ok());
  EXPECT_FALSE(enc.has_content()) << "a role chunk is not content";
  EXPECT_NE(out, "") << "the response starts at the first chunk";
  ASSERT_TRUE(enc.feed(text_chunk("x"), out).ok());
  EXPECT_TRUE(enc.has_content());

  ResponsesStreamEncoder calls(parse_object(kStreamRequest), "resp_s9", 5);
  ASSERT_TRUE(calls.feed(call_chunk(0, "call_1", "f", ""), out).ok());
  EXPECT_TRUE(calls.has_content()) << "a tool call is content";
}

TEST(ResponsesStream, OutputAfterFinishEqualsTheCompletedOutput) {
  ResponsesStreamEncoder enc(parse_object(kStreamRequest), "resp_s10", 5);
  std::string out = encode(enc, {text_chunk("a"), call_chunk(0, "call_1", "f", ""),
                                 call_chunk(1, "call_2", "g", "{\"q\":2}"), finish_chunk("stop")});
  EXPECT_FALSE(enc.finished()) << "finishes at [DONE] or finish()";
  enc.finish(out);
  EXPECT_TRUE(enc.finished());
  std::string again;
  enc.finish(again);
  EXPECT_EQ(again, "") << "finish emits once";
  const Accumulated acc = accumulate(parse_events(out));
  ASSERT_EQ(acc.terminal, "response.completed");
  EXPECT_EQ(json::value(enc.output()), acc.last.at("output"));
  EXPECT_EQ(acc.snapshot.at("output"), acc.last.at("output"));
  ASSERT_EQ(enc.output().size(), 3u);
  // A call whose arguments never came is closed with "{}" (clients parse them).
  EXPECT_EQ(enc.output()[1].at("arguments"), "{}");
  EXPECT_EQ(enc.output()[2].at("arguments"), "{\"q\":2}");
  std::set<std::string> ids;
  for (const auto& item : enc.output()) ids.insert(std::string(item.at("id").as_string()));
  EXPECT_EQ(ids.size(), 3u) << "item ids are distinct";
}

}  // namespace
}  // namespace switchboard::upstream
