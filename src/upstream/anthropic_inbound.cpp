// Anthropic Messages API clients over the OpenAI-shaped request path: their request into an
// OpenAI chat request, the answer (whole or streamed) back into Anthropic's shape. See
// translate.h for the mapping rules.
#include <boost/json.hpp>
#include <boost/json/monotonic_resource.hpp>

#include "common/json.h"
#include "upstream/anthropic_json.h"
#include "upstream/translate.h"

namespace switchboard::upstream {

namespace json = boost::json;
using anthropic_detail::as_int;
using anthropic_detail::lenient_depth;
using anthropic_detail::member;
using anthropic_detail::stop_reason_for;
using anthropic_detail::string_member;
using anthropic_detail::token_member;

namespace {

Status bad(const std::string& field, std::string_view what) {
  return Status::invalid_argument(field + ": " + std::string(what));
}

std::string at(const std::string& field, size_t i) {
  return field + "[" + std::to_string(i) + "]";
}

// A text block's text, or an error naming the field.
Result<std::string_view> block_text(const json::object& block, const std::string& field) {
  const json::value* t = block.if_contains("text");
  if (!t || !t->is_string()) return bad(field + ".text", "must be a string");
  return std::string_view(t->get_string());
}

// An image block as an OpenAI image_url part.
Result<json::object> image_part(const json::object& block, const std::string& field) {
  const json::value* sv = member(block, "source");
  const json::object* src = sv ? sv->if_object() : nullptr;
  if (!src) return bad(field + ".source", "must be an object");
  const std::string_view type = string_member(*src, "type");
  std::string url;
  if (type == "base64") {
    const std::string_view media = string_member(*src, "media_type");
    const std::string_view data = string_member(*src, "data");
    if (media.empty() || data.empty())
      return bad(field + ".source", "a base64 source needs media_type and data");
    url.reserve(media.size() + data.size() + 13);
    url.append("data:").append(media).append(";base64,").append(data);
  } else if (type == "url") {
    url = std::string(string_member(*src, "url"));
    if (url.empty()) return bad(field + ".source.url", "must be a non-empty string");
  } else {
    return bad(field + ".source.type", "must be base64 or url");
  }
  return json::object{{"type", "image_url"}, {"image_url", json::object{{"url", std::move(url)}}}};
}

// A tool_result's content (a string, or text and image blocks) as the text of a tool message.
// Images cannot ride in an OpenAI tool message: they are named, not dropped silently.
Result<std::string> tool_result_text(const json::object& block, const std::string& field) {
  const json::value* c = member(block, "content");
  if (!c) return std::string();
  if (c->is_string()) return std::string(c->get_string());
  const json::array* parts = c->if_array();
  if (!parts) return bad(field + ".content", "must be a string or an array of blocks");
  std::string text;
  for (size_t i = 0; i < parts->size(); ++i) {
    const json::object* p = (*parts)[i].if_object();
    const std::string pf = at(field + ".content", i);
    if (!p) return bad(pf, "must be an object");
    const std::string_view type = string_member(*p, "type");
    if (type == "text") {
      auto t = block_text(*p, pf);
      if (!t.ok()) return t.status();
      if (!text.empty()) text += "\n";
      text += *t;
    } else if (type == "image") {
      if (!text.empty()) text += "\n";
      text += "[image]";
    } else {
      return bad(pf + ".type", "must be text or image");
    }
  }
  return text;
}

// One Anthropic message as OpenAI messages (a user turn may become tool messages and a user
// message).
Status translate_message(const json::object& m, const std::string& field, json::array& out) {
  const std::string_view role = string_member(m, "role");
  if (role != "user" && role != "assistant")
    return bad(field + ".role", "must be user or assistant");
  const json::value* content = m.if_contains("content");
  if (!content) return bad(field + ".content", "is required");
  if (content->is_string()) {
    out.push_back(json::object{{"role", role}, {"content", content->get_string()}});
    return Status();
  }
  const json::array* blocks = content->if_array();
  if (!blocks) return bad(field + ".content", "must be a string or an array of blocks");
  json::array parts;       // user: text and image parts
  std::string text;        // assistant: the texts
  json::array tool_calls;  // assistant
  json::array tool_msgs;   // user: tool results, first
  for (size_t i = 0; i < blocks->size(); ++i) {
    const std::string bf = at(field + ".content", i);
    const json::object* b = (*blocks)[i].if_object();
    if (!b) return bad(bf, "must be an object");
    const std::string_view type = string_member(*b, "type");
    if (type == "text") {
      auto t = block_text(*b, bf);
      if (!t.ok()) return t.status();
      if (role == "assistant") {
        text += *t;
      } else {
        parts.push_back(json::object{{"type", "text"}, {"text", *t}});
      }
    } else if (type == "image" && role == "user") {
      auto img = image_part(*b, bf);
      if (!img.ok()) return img.status();
      parts.push_back(std::move(*img));
    } else if (type == "tool_result" && role == "user") {
      const std::string_view id = string_member(*b, "tool_use_id");
      if (id.empty()) return bad(bf + ".tool_use_id", "must be a non-empty string");
      auto t = tool_result_text(*b, bf);
      if (!t.ok()) return t.status();
      tool_msgs.push_back(
          json::object{{"role", "tool"}, {"tool_call_id", id}, {"content", std::move(*t)}});
    } else if (type == "tool_use" && role == "assistant") {
      const std::string_view id = string_member(*b, "id");
      const std::string_view name = string_member(*b, "name");
      if (id.empty() || name.empty()) return bad(bf, "a tool_use block needs an id and a name");
      const json::value* input = b->if_contains("input");
      if (input && !input->is_object()) return bad(bf + ".input", "must be an object");
      tool_calls.push_back(json::object{
          {"id", id},
          {"type", "function"},
          {"function",
           json::object{{"name", name}, {"arguments", input ? json::serialize(*input) : "{}"}}}});
    } else if (type == "thinking" || type == "redacted_thinking") {
      continue;  // the model's own notes: no OpenAI equivalent to send back
    } else {
      return bad(bf + ".type", "'" + std::string(type) + "' blocks are not supported in a " +
                                   std::string(role) + " turn");
    }
  }
  for (auto& t : tool_msgs) out.push_back(std::move(t));
  if (role == "assistant") {
    if (text.empty() && tool_calls.empty()) return Status();
    json::object msg{{"role", "assistant"}};
    if (text.empty()) {
      msg["content"] = nullptr;
    } else {
      msg["content"] = std::move(text);
    }
    if (!tool_calls.empty()) msg["tool_calls"] = std::move(tool_calls);
    out.push_back(std::move(msg));
  } else if (!parts.empty()) {
    if (parts.size() == 1 && string_member(parts[0].get_object(), "type") == "text") {
      out.push_back(json::object{{"role", "user"}, {"content", parts[0].get_object().at("text")}});
    } else {
      out.push_back(json::object{{"role", "user"}, {"content", std::move(parts)}});
    }
  }
  return Status();
}

Result<json::array> translate_tools(const json::value& v) {
  const json::array* tools = v.if_array();
  if (!tools) return bad("tools", "must be an array");
  json::array out;
  for (size_t i = 0; i < tools->size(); ++i) {
    const std::string tf = at("tools", i);
    const json::object* t = (*tools)[i].if_object();
    if (!t) return bad(tf, "must be an object");
    const std::string_view type = string_member(*t, "type");
    if (!type.empty() && type != "custom")
      return bad(tf + ".type", "server tool '" + std::string(type) + "' is not supported");
    const std::string_view name = string_member(*t, "name");
    if (name.empty()) return bad(tf + ".name", "must be a non-empty string");
    json::object fn{{"name", name}};
    if (const json::value* d = member(*t, "description"); d && d->is_string())
      fn["description"] = d->get_string();
    const json::value* schema = member(*t, "input_schema");
    if (schema && !schema->is_object()) return bad(tf + ".input_schema", "must be an object");
    fn["parameters"] = schema ? *schema : json::value(json::object{{"type", "object"}});
    out.push_back(json::object{{"type", "function"}, {"function", std::move(fn)}});
  }
  return out;
}

Status translate_tool_choice(const json::value& v, json::object& out) {
  const json::object* tc = v.if_object();
  if (!tc) return bad("tool_choice", "must be an object");
  const std::string_view type = string_member(*tc, "type");
  if (type == "auto") {
    out["tool_choice"] = "auto";
  } else if (type == "any") {
    out["tool_choice"] = "required";
  } else if (type == "none") {
    out["tool_choice"] = "none";
  } else if (type == "tool") {
    const std::string_view name = string_member(*tc, "name");
    if (name.empty()) return bad("tool_choice.name", "must be a non-empty string");
    out["tool_choice"] =
        json::object{{"type", "function"}, {"function", json::object{{"name", name}}}};
  } else {
    return bad("tool_choice.type", "must be auto, any, tool or none");
  }
  if (const json::value* d = member(*tc, "disable_parallel_tool_use");
      d && d->is_bool() && d->get_bool())
    out["parallel_tool_calls"] = false;
  return Status();
}

// OpenAI's usage as Anthropic's: prompt tokens served from the provider's prompt cache
// (prompt_tokens_details.cached_tokens) are Anthropic's cache_read_input_tokens, apart from
// input_tokens, as Anthropic counts them.
int64_t cached_tokens(const json::object* usage) {
  if (!usage) return 0;
  const json::value* d = member(*usage, "prompt_tokens_details");
  return d && d->is_object() ? std::min(token_member(usage, "prompt_tokens"),
                                        token_member(&d->get_object(), "cached_tokens"))
                             : 0;
}

json::object anthropic_usage_of(int64_t prompt, int64_t completion, int64_t cached) {
  json::object out{{"input_tokens", prompt - cached}, {"output_tokens", completion}};
  if (cached > 0) out["cache_read_input_tokens"] = cached;
  return out;
}

std::string_view error_type_for(int status) {
  switch (status) {
    case 400:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 413:
      return "request_too_large";
    case 429:
      return "rate_limit_error";
    case 529:
      return "overloaded_error";
    default:
      return status >= 500 ? "api_error" : "invalid_request_error";
  }
}

}  // namespace

Result<std::string> anthropic_to_openai_request(const json::object& req) {
  json::object out;
  const json::value* model = member(req, "model");
  if (!model || !model->is_string() || model->get_string().empty())
    return bad("model", "must be a non-empty string");
  out["model"] = model->get_string();

  const json::value* mt = member(req, "max_tokens");
  const std::optional<int64_t> max_tokens = mt ? as_int(*mt) : std::nullopt;
  if (!max_tokens || *max_tokens < 1) return bad("max_tokens", "must be a positive integer");
  out["max_tokens"] = *max_tokens;

  json::array messages;
  if (const json::value* sys = member(req, "system")) {
    std::string text;
    if (sys->is_string()) {
      text = std::string(sys->get_string());
    } else if (const json::array* blocks = sys->if_array()) {
      for (size_t i = 0; i < blocks->size(); ++i) {
        const json::object* b = (*blocks)[i].if_object();
        if (!b || string_member(*b, "type") != "text")
          return bad(at("system", i), "must be a text block");
        auto t = block_text(*b, at("system", i));
        if (!t.ok()) return t.status();
        if (!text.empty()) text += "\n\n";
        text += *t;
      }
    } else {
      return bad("system", "must be a string or an array of text blocks");
    }
    if (!text.empty()) messages.push_back(json::object{{"role", "system"}, {"content", text}});
  }
  const json::value* mv = member(req, "messages");
  const json::array* in = mv ? mv->if_array() : nullptr;
  if (!in || in->empty()) return bad("messages", "must be a non-empty array");
  for (size_t i = 0; i < in->size(); ++i) {
    const json::object* m = (*in)[i].if_object();
    if (!m) return bad(at("messages", i), "must be an object");
    if (Status st = translate_message(*m, at("messages", i), messages); !st.ok()) return st;
  }
  if (messages.empty()) return bad("messages", "has no content");
  out["messages"] = std::move(messages);

  for (const char* k : {"temperature", "top_p"}) {
    if (const json::value* v = member(req, k)) {
      if (!v->is_number()) return bad(k, "must be a number");
      out[k] = *v;
    }
  }
  if (const json::value* ss = member(req, "stop_sequences")) {
    const json::array* a = ss->if_array();
    if (!a) return bad("stop_sequences", "must be an array of strings");
    for (const auto& s : *a)
      if (!s.is_string()) return bad("stop_sequences", "must be an array of strings");
    if (!a->empty()) out["stop"] = *a;
  }
  if (const json::value* st = member(req, "stream")) {
    if (!st->is_bool()) return bad("stream", "must be a boolean");
    if (st->get_bool()) {
      out["stream"] = true;
      out["stream_options"] = json::object{{"include_usage", true}};
    }
  }
  if (const json::value* md = member(req, "metadata"); md && md->is_object()) {
    const std::string_view user = string_member(md->get_object(), "user_id");
    if (!user.empty()) out["user"] = user;
  }
  if (const json::value* tools = member(req, "tools")) {
    auto t = translate_tools(*tools);
    if (!t.ok()) return t.status();
    if (!t->empty()) out["tools"] = std::move(*t);
  }
  if (const json::value* tc = member(req, "tool_choice")) {
    if (Status st = translate_tool_choice(*tc, out); !st.ok()) return st;
  }
  return json::serialize(out);
}

Result<std::string> openai_to_anthropic_response(const json::object& resp,
                                                 std::string_view client_model,
                                                 std::string_view message_id) {
  const json::value* cv = resp.if_contains("choices");
  const json::array* choices = cv ? cv->if_array() : nullptr;
  if (!choices || choices->empty() || !(*choices)[0].is_object())
    return Status::unavailable("upstream answer has no choices");
  const json::object& choice = (*choices)[0].get_object();
  const json::value* mv = choice.if_contains("message");
  const json::object* msg = mv ? mv->if_object() : nullptr;
  if (!msg) return Status::unavailable("upstream answer has no message");
  json::array content;
  if (const json::value* c = member(*msg, "content");
      c && c->is_string() && !c->get_string().empty())
    content.push_back(json::object{{"type", "text"}, {"text", c->get_string()}});
  if (const json::value* tcs = member(*msg, "tool_calls"); tcs && tcs->is_array()) {
    for (const auto& tv : tcs->get_array()) {
      const json::object* tc = tv.if_object();
      if (!tc) return Status::unavailable("upstream tool call is not an object");
      const json::value* fv = tc->if_contains("function");
      const json::object* fn = fv ? fv->if_object() : nullptr;
      if (!fn) return Status::unavailable("upstream tool call has no function");
      const std::string_view args = string_member(*fn, "arguments");
      json::value input = json::object{};
      if (!args.empty()) {
        json::error_code ec;
        input = json::parse(args, ec, {}, lenient_depth());
        if (ec || !input.is_object())
          return Status::unavailable("upstream tool call arguments are not a JSON object");
      }
      content.push_back(json::object{{"type", "tool_use"},
                                     {"id", string_member(*tc, "id")},
                                     {"name", string_member(*fn, "name")},
                                     {"input", std::move(input)}});
    }
  }
  if (content.empty()) content.push_back(json::object{{"type", "text"}, {"text", ""}});
  const json::value* uv = resp.if_contains("usage");
  const json::object* usage = uv ? uv->if_object() : nullptr;
  json::object out{{"id", message_id},
                   {"type", "message"},
                   {"role", "assistant"},
                   {"model", client_model},
                   {"content", std::move(content)},
                   {"stop_reason", stop_reason_for(string_member(choice, "finish_reason"))},
                   {"stop_sequence", nullptr},
                   {"usage", anthropic_usage_of(token_member(usage, "prompt_tokens"),
                                                token_member(usage, "completion_tokens"),
                                                cached_tokens(usage))}};
  return json::serialize(out);
}

// ---- the stream -------------------------------------------------------------------------------

AnthropicStreamEncoder::AnthropicStreamEncoder(std::string_view message_id,
                                               std::string_view client_model)
    : id_(message_id), model_(client_model) {}

void AnthropicStreamEncoder::event(std::string& out, std::string_view type,
                                   const json::object& payload) {
  append_sse_event(out, json::serialize(payload), type);
}

// Written directly: one per streamed token, so no document is built for it.
void AnthropicStreamEncoder::delta_event(std::string& out, std::string_view type,
                                         std::string_view field, std::string_view value) {
  out += "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":";
  out += std::to_string(open_block_);
  out += ",\"delta\":{\"type\":\"";
  out += type;
  out += "\",\"";
  out += field;
  out += "\":\"";
  switchboard::json::append_escaped(out, value);
  out += "\"}}\n\n";
}

void AnthropicStreamEncoder::start(std::string& out) {
  if (started_) return;
  started_ = true;
  event(out, "message_start",
        json::object{{"type", "message_start"},
                     {"message", json::object{{"id", id_},
                                              {"type", "message"},
                                              {"role", "assistant"},
                                              {"model", model_},
                                              {"content", json::array{}},
                                              {"stop_reason", nullptr},
                                              {"stop_sequence", nullptr},
                                              {"usage", json::object{{"input_tokens", 0},
                                                                     {"output_tokens", 0}}}}}});
  // As Anthropic's own streams do: a ping after message_start (clients expect and skip it).
  event(out, "ping", json::object{{"type", "ping"}});
}

void AnthropicStreamEncoder::close_block(std::string& out) {
  if (open_block_ < 0) return;
  event(out, "content_block_stop",
        json::object{{"type", "content_block_stop"}, {"index", open_block_}});
  open_block_ = -1;
  open_tool_ = -1;
  open_text_ = false;
}

Status AnthropicStreamEncoder::feed(std::string_view data, std::string& out) {
  if (finished_) return Status();
  if (data == "[DONE]") {
    finish(out);
    return Status();
  }
  json::error_code ec;
  // A chunk's document lives on the stack (one per event, on the stream's hot path).
  unsigned char buffer[4096];
  json::monotonic_resource arena(buffer, sizeof buffer);
  json::value v = json::parse(data, ec, &arena, lenient_depth());
  if (ec || !v.is_object()) return Status::invalid_argument("stream chunk is not a JSON object");
  const json::object& chunk = v.get_object();
  start(out);
  if (const json::value* u = member(chunk, "usage"); u && u->is_object()) {
    usage_.prompt_tokens = token_member(&u->get_object(), "prompt_tokens");
    usage_.completion_tokens = token_member(&u->get_object(), "completion_tokens");
    cached_tokens_ = cached_tokens(&u->get_object());
  }
  const json::value* cv = chunk.if_contains("choices");
  const json::array* choices = cv ? cv->if_array() : nullptr;
  if (!choices || choices->empty() || !(*choices)[0].is_object()) return Status();
  const json::object& choice = (*choices)[0].get_object();
  if (const json::value* dv = member(choice, "delta"); dv && dv->is_object()) {
    const json::object& delta = dv->get_object();
    if (const json::value* c = member(delta, "content");
        c && c->is_string() && !c->get_string().empty()) {
      if (!open_text_) {
        close_block(out);
        open_block_ = next_block_++;
        open_text_ = true;
        event(out, "content_block_start",
              json::object{{"type", "content_block_start"},
                           {"index", open_block_},
                           {"content_block", json::object{{"type", "text"}, {"text", ""}}}});
      }
      delta_event(out, "text_delta", "text", c->get_string());
    }
    if (const json::value* tv = member(delta, "tool_calls"); tv && tv->is_array()) {
      for (const auto& t : tv->get_array()) {
        const json::object* tc = t.if_object();
        if (!tc) continue;
        const int index =
            int(as_int(tc->contains("index") ? tc->at("index") : json::value(0)).value_or(0));
        const json::value* fv = member(*tc, "function");
        const json::object* fn = fv ? fv->if_object() : nullptr;
        if (index != open_tool_) {  // a new call starts its own block
          close_block(out);
          open_block_ = next_block_++;
          open_tool_ = index;
          event(out, "content_block_start",
                json::object{
                    {"type", "content_block_start"},
                    {"index", open_block_},
                    {"content_block", json::object{{"type", "tool_use"},
                                                   {"id", string_member(*tc, "id")},
                                                   {"name", fn ? string_member(*fn, "name") : ""},
                                                   {"input", json::object{}}}}});
        }
        const std::string_view args = fn ? string_member(*fn, "arguments") : std::string_view();
        if (!args.empty()) delta_event(out, "input_json_delta", "partial_json", args);
      }
    }
  }
  if (const json::value* fr = member(choice, "finish_reason"); fr && fr->is_string())
    stop_reason_ = std::string(stop_reason_for(fr->get_string()));
  return Status();
}

void AnthropicStreamEncoder::finish(std::string& out) {
  if (finished_) return;
  start(out);
  close_block(out);
  finished_ = true;
  event(out, "message_delta",
        json::object{
            {"type", "message_delta"},
            {"delta", json::object{{"stop_reason", stop_reason_}, {"stop_sequence", nullptr}}},
            {"usage",
             anthropic_usage_of(usage_.prompt_tokens, usage_.completion_tokens, cached_tokens_)}});
  event(out, "message_stop", json::object{{"type", "message_stop"}});
}

std::string anthropic_error_json(int status, std::string_view message) {
  return json::serialize(json::object{
      {"type", "error"},
      {"error", json::object{{"type", error_type_for(status)}, {"message", message}}}});
}

std::string anthropic_error_event(std::string_view type, std::string_view message) {
  return format_sse_event(
      json::serialize(json::object{{"type", "error"},
                                   {"error", json::object{{"type", type}, {"message", message}}}}),
      "error");
}

}  // namespace switchboard::upstream
