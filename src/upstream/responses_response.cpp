// OpenAI Responses API clients: a chat completion (whole or streamed) back into a Responses object
// or its event stream. See translate.h for the mapping rules.
#include <boost/json.hpp>
#include <map>

#include "upstream/anthropic_json.h"
#include "upstream/translate.h"

namespace switchboard::upstream {

namespace json = boost::json;
using anthropic_detail::member;
using anthropic_detail::string_member;
using anthropic_detail::token_member;

namespace {

// The response's settings as OpenAI echoes them, with its defaults for what was not sent.
json::object base_response(const json::object& request, std::string_view id, int64_t created_at,
                           std::string_view status) {
  auto echo = [&](std::string_view key, json::value fallback) -> json::value {
    const json::value* v = member(request, key);
    return v ? *v : std::move(fallback);
  };
  json::object r;
  r["id"] = id;
  r["object"] = "response";
  r["created_at"] = created_at;
  r["status"] = status;
  r["error"] = nullptr;
  r["incomplete_details"] = nullptr;
  r["instructions"] = echo("instructions", nullptr);
  r["max_output_tokens"] = echo("max_output_tokens", nullptr);
  r["model"] = echo("model", "");
  r["output"] = json::array();
  r["parallel_tool_calls"] = echo("parallel_tool_calls", true);
  r["previous_response_id"] = echo("previous_response_id", nullptr);
  json::object reasoning{{"effort", nullptr}, {"summary", nullptr}};
  if (const json::value* rv = member(request, "reasoning"))
    if (const json::object* ro = rv->if_object())
      if (const json::value* e = member(*ro, "effort")) reasoning["effort"] = *e;
  r["reasoning"] = std::move(reasoning);
  r["store"] = echo("store", true);
  r["temperature"] = echo("temperature", 1.0);
  r["text"] = echo("text", json::object{{"format", json::object{{"type", "text"}}}});
  r["tool_choice"] = echo("tool_choice", "auto");
  r["tools"] = echo("tools", json::array());
  r["top_p"] = echo("top_p", 1.0);
  r["truncation"] = "disabled";
  r["usage"] = nullptr;
  r["user"] = echo("user", nullptr);
  r["metadata"] = echo("metadata", json::object());
  return r;
}

json::object usage_object(const TokenUsage& u, int64_t cached, int64_t reasoning) {
  return json::object{
      {"input_tokens", u.prompt_tokens},
      {"input_tokens_details", json::object{{"cached_tokens", cached}}},
      {"output_tokens", u.completion_tokens},
      {"output_tokens_details", json::object{{"reasoning_tokens", reasoning}}},
      {"total_tokens", u.total()},
  };
}

// The chat usage object's counts (each bounded as everywhere else).
void read_usage(const json::object& usage, TokenUsage& u, int64_t& cached, int64_t& reasoning) {
  u.prompt_tokens = token_member(&usage, "prompt_tokens");
  u.completion_tokens = token_member(&usage, "completion_tokens");
  if (const json::value* d = member(usage, "prompt_tokens_details"))
    cached = token_member(d->if_object(), "cached_tokens");
  if (const json::value* d = member(usage, "completion_tokens_details"))
    reasoning = token_member(d->if_object(), "reasoning_tokens");
}

// status and incomplete_details for a chat finish_reason.
void set_finish(json::object& r, std::string_view finish_reason) {
  if (finish_reason == "length" || finish_reason == "content_filter") {
    r["status"] = "incomplete";
    r["incomplete_details"] = json::object{
        {"reason", finish_reason == "length" ? "max_output_tokens" : "content_filter"}};
  } else {
    r["status"] = "completed";
  }
}

json::object text_part(std::string_view text) {
  return json::object{{"type", "output_text"},
                      {"text", text},
                      {"annotations", json::array()},
                      {"logprobs", json::array()}};
}

json::object message_item(std::string_view id, std::string_view status, json::array content) {
  return json::object{{"id", id},
                      {"type", "message"},
                      {"status", status},
                      {"role", "assistant"},
                      {"content", std::move(content)}};
}

json::object call_item(std::string_view id, std::string_view call_id, std::string_view name,
                       std::string_view arguments, std::string_view status) {
  return json::object{{"id", id},           {"type", "function_call"},
                      {"status", status},   {"arguments", arguments},
                      {"call_id", call_id}, {"name", name}};
}

// "resp_abc" → "abc": the suffix that names the response's items.
std::string_view id_suffix(std::string_view response_id) {
  if (auto u = response_id.find('_'); u != std::string_view::npos) return response_id.substr(u + 1);
  return response_id;
}

std::string item_id(std::string_view prefix, std::string_view response_id, size_t index) {
  std::string id(prefix);
  id += id_suffix(response_id);
  id += '_';
  id += std::to_string(index);
  return id;
}

}  // namespace

std::optional<TokenUsage> responses_usage(const json::object& response) {
  const json::value* u = member(response, "usage");
  const json::object* uo = u ? u->if_object() : nullptr;
  if (!uo) return std::nullopt;
  return TokenUsage{token_member(uo, "input_tokens"), token_member(uo, "output_tokens")};
}

Result<std::string> chat_to_responses_response(const json::object& completion,
                                               const json::object& request,
                                               std::string_view response_id, int64_t created_at,
                                               json::array& output) {
  const json::value* choices = member(completion, "choices");
  if (!choices || !choices->is_array() || choices->get_array().empty() ||
      !choices->get_array()[0].is_object())
    return Status::unavailable("the upstream's answer has no choices");
  const json::object& choice = choices->get_array()[0].get_object();
  const json::value* mv = member(choice, "message");
  const json::object* msg = mv ? mv->if_object() : nullptr;
  if (!msg) return Status::unavailable("the upstream's answer has no message");
  json::object r = base_response(request, response_id, created_at, "completed");
  output.clear();
  json::array content;
  if (auto text = string_member(*msg, "content"); !text.empty()) content.push_back(text_part(text));
  if (auto refusal = string_member(*msg, "refusal"); !refusal.empty())
    content.push_back(json::object{{"type", "refusal"}, {"refusal", refusal}});
  if (!content.empty())
    output.push_back(
        message_item(item_id("msg_", response_id, output.size()), "completed", std::move(content)));
  if (const json::value* calls = member(*msg, "tool_calls"); calls && calls->is_array()) {
    for (const auto& cv : calls->get_array()) {
      const json::object* call = cv.if_object();
      if (!call) return Status::unavailable("the upstream's answer has a malformed tool call");
      const json::value* fv = member(*call, "function");
      const json::object* fn = fv ? fv->if_object() : nullptr;
      if (!fn) return Status::unavailable("the upstream's answer has a tool call without function");
      output.push_back(call_item(item_id("fc_", response_id, output.size()),
                                 string_member(*call, "id"), string_member(*fn, "name"),
                                 string_member(*fn, "arguments"), "completed"));
    }
  }
  set_finish(r, string_member(choice, "finish_reason"));
  TokenUsage u;
  int64_t cached = 0, reasoning = 0;
  if (const json::value* uv = member(completion, "usage"); uv && uv->is_object())
    read_usage(uv->get_object(), u, cached, reasoning);
  r["usage"] = usage_object(u, cached, reasoning);
  r["output"] = output;
  return json::serialize(r);
}

// ---- the stream ----------------------------------------------------------------------------

struct ResponsesStreamEncoder::State {
  json::object request;
  std::string id;
  int64_t created_at = 0;
  int64_t seq = 0;
  bool started = false, finished = false, has_content = false;
  std::string finish_reason;
  TokenUsage usage;
  int64_t cached = 0, reasoning = 0;
  // Items by output_index, with what is still open.
  struct Item {
    bool is_text = false;
    bool open = true;
    std::string text;  // text: the text so far; call: the arguments so far
    std::string call_id, name;
    std::string id;
  };
  std::vector<Item> items;
  int text_item = -1;            // the open text item, -1 = none
  std::map<int64_t, int> calls;  // chat tool call index → output index
  json::array output;

  void event(std::string& out, std::string_view type, json::object payload) {
    payload.emplace("type", type);
    payload.emplace("sequence_number", seq++);
    out += "event: ";
    out += type;
    out += "\ndata: ";
    out += json::serialize(payload);
    out += "\n\n";
  }

  void start(std::string& out) {
    if (started) return;
    started = true;
    json::object r = base_response(request, id, created_at, "in_progress");
    event(out, "response.created", {{"response", r}});
    event(out, "response.in_progress", {{"response", std::move(r)}});
  }

  json::object item_json(const Item& it, std::string_view status) const {
    if (it.is_text) {
      json::array content;
      if (!it.open || status == "completed") content.push_back(text_part(it.text));
      return message_item(it.id, status, std::move(content));
    }
    return call_item(it.id, it.call_id, it.name, it.text, status);
  }

  int open_text(std::string& out) {
    if (text_item >= 0) return text_item;
    Item it;
    it.is_text = true;
    it.id = item_id("msg_", id, items.size());
    items.push_back(std::move(it));
    text_item = int(items.size()) - 1;
    event(
        out, "response.output_item.added",
        {{"output_index", text_item}, {"item", message_item(items.back().id, "in_progress", {})}});
    event(out, "response.content_part.added",
          {{"item_id", items.back().id},
           {"output_index", text_item},
           {"content_index", 0},
           {"part", text_part("")}});
    return text_item;
  }

  void close_item(std::string& out, int index) {
    Item& it = items[size_t(index)];
    if (!it.open) return;
    it.open = false;
    if (it.is_text) {
      event(out, "response.output_text.done",
            {{"item_id", it.id},
             {"output_index", index},
             {"content_index", 0},
             {"text", it.text},
             {"logprobs", json::array()}});
      event(out, "response.content_part.done",
            {{"item_id", it.id},
             {"output_index", index},
             {"content_index", 0},
             {"part", text_part(it.text)}});
      if (text_item == index) text_item = -1;
    } else {
      if (it.text.empty()) {  // clients parse the arguments; a delta keeps the deltas whole
        it.text = "{}";
        event(out, "response.function_call_arguments.delta",
              {{"item_id", it.id}, {"output_index", index}, {"delta", it.text}});
      }
      event(out, "response.function_call_arguments.done",
            {{"item_id", it.id}, {"output_index", index}, {"arguments", it.text}});
    }
    event(out, "response.output_item.done",
          {{"output_index", index}, {"item", item_json(it, "completed")}});
  }
};

ResponsesStreamEncoder::ResponsesStreamEncoder(const json::object& request, std::string response_id,
                                               int64_t created_at)
    : s_(std::make_unique<State>()) {
  s_->request = request;
  s_->id = std::move(response_id);
  s_->created_at = created_at;
}

ResponsesStreamEncoder::~ResponsesStreamEncoder() = default;

bool ResponsesStreamEncoder::finished() const {
  return s_->finished;
}
bool ResponsesStreamEncoder::has_content() const {
  return s_->has_content;
}
const TokenUsage& ResponsesStreamEncoder::usage() const {
  return s_->usage;
}
const json::array& ResponsesStreamEncoder::output() const {
  return s_->output;
}

Status ResponsesStreamEncoder::feed(std::string_view data, std::string& out) {
  State& s = *s_;
  if (s.finished) return Status::ok_status();
  if (data == "[DONE]") {
    finish(out);
    return Status::ok_status();
  }
  boost::system::error_code ec;
  json::value v = json::parse(data, ec, {}, anthropic_detail::lenient_depth());
  if (ec || !v.is_object()) return Status::invalid_argument("a stream chunk is not a JSON object");
  const json::object& chunk = v.get_object();
  s.start(out);
  if (const json::value* uv = member(chunk, "usage"); uv && uv->is_object())
    read_usage(uv->get_object(), s.usage, s.cached, s.reasoning);
  const json::value* cv = member(chunk, "choices");
  if (!cv || !cv->is_array() || cv->get_array().empty()) return Status::ok_status();
  const json::object* choice = cv->get_array()[0].if_object();
  if (!choice) return Status::ok_status();
  if (auto fr = string_member(*choice, "finish_reason"); !fr.empty()) {
    s.finish_reason = fr;
    s.has_content = true;
  }
  const json::value* dv = member(*choice, "delta");
  const json::object* delta = dv ? dv->if_object() : nullptr;
  if (!delta) return Status::ok_status();
  if (auto text = string_member(*delta, "content"); !text.empty()) {
    const int index = s.open_text(out);
    State::Item& it = s.items[size_t(index)];
    it.text += text;
    s.has_content = true;
    s.event(out, "response.output_text.delta",
            {{"item_id", it.id},
             {"output_index", index},
             {"content_index", 0},
             {"delta", text},
             {"logprobs", json::array()}});
  }
  if (const json::value* tv = member(*delta, "tool_calls"); tv && tv->is_array()) {
    for (const auto& callv : tv->get_array()) {
      const json::object* call = callv.if_object();
      if (!call) continue;
      const int64_t chat_index =
          member(*call, "index") ? anthropic_detail::as_int(call->at("index")).value_or(0) : 0;
      const json::value* fv = member(*call, "function");
      const json::object* fn = fv ? fv->if_object() : nullptr;
      auto found = s.calls.find(chat_index);
      if (found == s.calls.end()) {
        // A new call: the text before it is complete.
        if (s.text_item >= 0) s.close_item(out, s.text_item);
        State::Item it;
        it.call_id = std::string(string_member(*call, "id"));
        it.name = fn ? std::string(string_member(*fn, "name")) : std::string();
        it.id = item_id("fc_", s.id, s.items.size());
        s.items.push_back(std::move(it));
        const int index = int(s.items.size()) - 1;
        found = s.calls.emplace(chat_index, index).first;
        s.event(out, "response.output_item.added",
                {{"output_index", index}, {"item", s.item_json(s.items.back(), "in_progress")}});
      }
      s.has_content = true;
      State::Item& it = s.items[size_t(found->second)];
      if (!fn) continue;
      if (auto args = string_member(*fn, "arguments"); !args.empty()) {
        it.text += args;
        s.event(out, "response.function_call_arguments.delta",
                {{"item_id", it.id}, {"output_index", found->second}, {"delta", args}});
      }
    }
  }
  return Status::ok_status();
}

void ResponsesStreamEncoder::finish(std::string& out) {
  State& s = *s_;
  if (s.finished) return;
  s.start(out);
  for (size_t i = 0; i < s.items.size(); ++i) s.close_item(out, int(i));
  s.finished = true;
  s.output.clear();
  for (const auto& it : s.items) s.output.push_back(s.item_json(it, "completed"));
  json::object r = base_response(s.request, s.id, s.created_at, "completed");
  set_finish(r, s.finish_reason);
  r["output"] = s.output;
  r["usage"] = usage_object(s.usage, s.cached, s.reasoning);
  const bool incomplete = r["status"] == "incomplete";
  s.event(out, incomplete ? "response.incomplete" : "response.completed",
          {{"response", std::move(r)}});
}

void ResponsesStreamEncoder::fail(std::string_view message, std::string& out) {
  State& s = *s_;
  if (s.finished) return;
  s.start(out);
  s.finished = true;
  json::object r = base_response(s.request, s.id, s.created_at, "failed");
  r["error"] = json::object{{"code", "server_error"}, {"message", message}};
  s.event(out, "response.failed", {{"response", std::move(r)}});
}

}  // namespace switchboard::upstream
