// Anthropic Messages response (and error body) -> OpenAI Chat Completions response. See
// translate.h for the mapping rules.
#include <boost/json.hpp>

#include "upstream/anthropic_json.h"
#include "upstream/translate.h"

namespace switchboard::upstream {

namespace json = boost::json;
using anthropic_detail::finish_reason_for;
using anthropic_detail::string_member;
using anthropic_detail::token_member;

TokenUsage anthropic_message_usage(const json::object& message) {
  const json::value* usage_v = message.if_contains("usage");
  const json::object* usage = usage_v ? usage_v->if_object() : nullptr;
  TokenUsage u;
  u.prompt_tokens = token_member(usage, "input_tokens") +
                    token_member(usage, "cache_read_input_tokens") +
                    token_member(usage, "cache_creation_input_tokens");
  u.completion_tokens = token_member(usage, "output_tokens");
  return u;
}

Result<std::string> anthropic_to_openai_response(const json::object& resp,
                                                 std::string_view client_model,
                                                 std::string_view response_id, int64_t created_unix,
                                                 std::string_view json_tool) {
  if (string_member(resp, "type") == "error") {
    const json::value* e = resp.if_contains("error");
    std::string msg = "anthropic error";
    if (e && e->is_object()) msg = std::string(string_member(e->get_object(), "message"));
    return Status::unavailable("anthropic response is an error: " + msg);
  }
  const json::value* content_v = resp.if_contains("content");
  if (!content_v || !content_v->is_array()) {
    return Status::unavailable("anthropic response: content is not an array");
  }
  std::string text;
  json::array tool_calls;
  for (const json::value& b : content_v->get_array()) {
    const json::object* block = b.if_object();
    if (!block) return Status::unavailable("anthropic response: content block is not an object");
    std::string_view type = string_member(*block, "type");
    if (type == "text") {
      text += string_member(*block, "text");
    } else if (type == "tool_use" && !json_tool.empty() &&
               string_member(*block, "name") == json_tool) {
      const json::value* input = block->if_contains("input");
      text += input ? json::serialize(*input) : std::string("{}");
    } else if (type == "tool_use") {
      const json::value* input = block->if_contains("input");
      json::object fn{{"name", string_member(*block, "name")},
                      {"arguments", input ? json::serialize(*input) : std::string("{}")}};
      tool_calls.push_back(json::object{
          {"id", string_member(*block, "id")}, {"type", "function"}, {"function", std::move(fn)}});
    }
    // thinking, redacted_thinking and server-tool blocks have no Chat Completions equivalent.
  }

  json::object message{{"role", "assistant"}};
  if (text.empty() && !tool_calls.empty()) {
    message["content"] = nullptr;
  } else {
    message["content"] = text;
  }
  if (!tool_calls.empty()) message["tool_calls"] = std::move(tool_calls);

  std::string_view stop_reason = string_member(resp, "stop_reason");
  const bool structured =
      !json_tool.empty() && stop_reason == "tool_use" && !message.contains("tool_calls");
  if (structured) stop_reason = "end_turn";  // the answer, not a call to make
  const TokenUsage usage = anthropic_message_usage(resp);
  const int64_t prompt = usage.prompt_tokens;
  const int64_t completion = usage.completion_tokens;

  json::object out{
      {"id", response_id},
      {"object", "chat.completion"},
      {"created", created_unix},
      {"model", client_model},
      {"choices", json::array{json::object{{"index", 0},
                                           {"message", std::move(message)},
                                           {"logprobs", nullptr},
                                           {"finish_reason", finish_reason_for(stop_reason)}}}},
      {"usage", json::object{{"prompt_tokens", prompt},
                             {"completion_tokens", completion},
                             {"total_tokens", prompt + completion}}}};
  return json::serialize(out);
}

std::string anthropic_error_to_openai(std::string_view body) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
  const json::object* err = nullptr;
  if (!ec && v.is_object()) {
    if (const json::value* e = v.get_object().if_contains("error")) err = e->if_object();
  }
  if (!err) return openai_error_json("upstream returned an unrecognised error", "server_error");
  std::string_view type = string_member(*err, "type");
  std::string_view openai_type;
  switch (classify_anthropic_error_type(type)) {
    case OutcomeClass::kClientError:
      openai_type = "invalid_request_error";
      break;
    case OutcomeClass::kAuthFailed:
      openai_type = "authentication_error";
      break;
    case OutcomeClass::kRateLimited:
      openai_type = "rate_limit_error";
      break;
    default:
      openai_type = "server_error";
  }
  return openai_error_json(string_member(*err, "message"), openai_type, type);
}

}  // namespace switchboard::upstream
