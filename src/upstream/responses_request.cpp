// OpenAI Responses API clients: their request (input items, instructions, tools, text format)
// into a chat completion request. See translate.h for the mapping rules.
#include <boost/json.hpp>

#include "upstream/anthropic_json.h"
#include "upstream/translate.h"

namespace switchboard::upstream {

namespace json = boost::json;
using anthropic_detail::member;
using anthropic_detail::string_member;

namespace {

Status bad(const std::string& field, std::string_view what) {
  return Status::invalid_argument(field + ": " + std::string(what));
}

std::string at(std::string_view field, size_t i) {
  return std::string(field) + "[" + std::to_string(i) + "]";
}

// The text of a content list (or string) whose parts are all textual: system, developer and
// assistant turns, and function_call_output's output.
Result<std::string> joined_text(const json::value& content, const std::string& field,
                                std::string_view separator) {
  if (content.is_string()) return std::string(content.get_string());
  if (!content.is_array()) return bad(field, "must be a string or a list of content parts");
  std::string out;
  const auto& parts = content.get_array();
  for (size_t i = 0; i < parts.size(); ++i) {
    const json::object* part = parts[i].if_object();
    if (!part) return bad(at(field, i), "must be an object");
    const std::string_view type = string_member(*part, "type");
    std::string_view text;
    if (type == "input_text" || type == "output_text" || type == "text") {
      text = string_member(*part, "text");
    } else if (type == "refusal") {
      text = string_member(*part, "refusal");
    } else {
      return bad(at(field, i) + ".type",
                 "only text parts can go here, not '" + std::string(type) + "'");
    }
    if (!out.empty() && !text.empty()) out += separator;
    out += text;
  }
  return out;
}

// A user turn's content as chat content parts (a lone text stays a plain string).
Result<json::value> user_content(const json::value& content, const std::string& field) {
  if (content.is_string()) return json::value(content.get_string());
  if (!content.is_array()) return bad(field, "must be a string or a list of content parts");
  json::array parts;
  const auto& in = content.get_array();
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string f = at(field, i);
    const json::object* part = in[i].if_object();
    if (!part) return bad(f, "must be an object");
    const std::string_view type = string_member(*part, "type");
    if (type == "input_text" || type == "output_text" || type == "text") {
      parts.push_back(json::object{{"type", "text"}, {"text", string_member(*part, "text")}});
    } else if (type == "input_image") {
      const std::string_view url = string_member(*part, "image_url");
      if (url.empty())
        return bad(f,
                   "input_image needs image_url (file_id references cannot be resolved by "
                   "the gateway)");
      json::object image{{"url", url}};
      if (auto d = string_member(*part, "detail"); !d.empty()) image["detail"] = d;
      parts.push_back(json::object{{"type", "image_url"}, {"image_url", std::move(image)}});
    } else if (type == "input_file") {
      const std::string_view data = string_member(*part, "file_data");
      if (data.empty())
        return bad(f,
                   "input_file needs file_data (file_id and file_url references cannot be "
                   "resolved by the gateway)");
      json::object file{{"file_data", data}};
      if (auto n = string_member(*part, "filename"); !n.empty()) file["filename"] = n;
      parts.push_back(json::object{{"type", "file"}, {"file", std::move(file)}});
    } else {
      return bad(f + ".type", "unknown content part '" + std::string(type) + "'");
    }
  }
  if (parts.size() == 1 && parts[0].as_object().at("type") == "text")
    return json::value(parts[0].as_object().at("text"));
  return json::value(std::move(parts));
}

// Chat messages from items, with consecutive function calls gathered into one assistant turn.
class MessageBuilder {
 public:
  explicit MessageBuilder(json::array& out) : out_(out) {}

  Status add(const json::object& item, const std::string& f) {
    std::string_view type = string_member(item, "type");
    if (type.empty() && item.contains("role")) type = "message";
    if (type == "message") return message(item, f);
    if (type == "function_call") return function_call(item, f);
    if (type == "function_call_output") {
      const std::string_view call_id = string_member(item, "call_id");
      if (call_id.empty()) return bad(f + ".call_id", "must be a non-empty string");
      const json::value* output = member(item, "output");
      std::string text;
      if (output) {
        auto t = joined_text(*output, f + ".output", "\n");
        if (!t.ok()) return t.status();
        text = std::move(t.value());
      }
      out_.push_back(
          json::object{{"role", "tool"}, {"tool_call_id", call_id}, {"content", std::move(text)}});
      open_turn_ = last_assistant_ = kNone;
      return Status::ok_status();
    }
    if (type == "reasoning") return Status::ok_status();  // a provider's own; not portable
    if (type == "item_reference")
      return bad(f, "item_reference cannot be resolved by the gateway; send the item itself");
    return bad(f + ".type", "the gateway cannot carry '" + std::string(type) +
                                "' items to a chat completions provider");
  }

 private:
  Status message(const json::object& item, const std::string& f) {
    const std::string_view role = string_member(item, "role");
    const json::value* content = member(item, "content");
    if (!content) return bad(f + ".content", "is required");
    open_turn_ = last_assistant_ = kNone;
    if (role == "user") {
      auto c = user_content(*content, f + ".content");
      if (!c.ok()) return c.status();
      out_.push_back(json::object{{"role", "user"}, {"content", std::move(c.value())}});
    } else if (role == "assistant" || role == "system" || role == "developer") {
      auto t = joined_text(*content, f + ".content", role == "assistant" ? "" : "\n\n");
      if (!t.ok()) return t.status();
      out_.push_back(json::object{{"role", role == "developer" ? "system" : role},
                                  {"content", std::move(t.value())}});
      if (role == "assistant") last_assistant_ = out_.size() - 1;
      return Status::ok_status();
    } else {
      return bad(f + ".role", "must be user, assistant, system or developer");
    }
    return Status::ok_status();
  }

  Status function_call(const json::object& item, const std::string& f) {
    const std::string_view call_id = string_member(item, "call_id");
    const std::string_view name = string_member(item, "name");
    if (call_id.empty()) return bad(f + ".call_id", "must be a non-empty string");
    if (name.empty()) return bad(f + ".name", "must be a non-empty string");
    const json::value* args = member(item, "arguments");
    if (args && !args->is_string()) return bad(f + ".arguments", "must be a string");
    json::object call{{"id", call_id},
                      {"type", "function"},
                      {"function", json::object{{"name", name},
                                                {"arguments", args ? args->get_string() : "{}"}}}};
    if (open_turn_ == kNone) {
      // The calls join the assistant's text just before them, as one chat turn.
      if (last_assistant_ != kNone) {
        open_turn_ = last_assistant_;
      } else {
        out_.push_back(json::object{{"role", "assistant"}, {"content", nullptr}});
        open_turn_ = out_.size() - 1;
      }
      out_[open_turn_].as_object()["tool_calls"] = json::array();
      last_assistant_ = kNone;
    }
    out_[open_turn_].as_object()["tool_calls"].as_array().push_back(std::move(call));
    return Status::ok_status();
  }

  // Indexes into out_ (its elements move when it grows).
  static constexpr size_t kNone = size_t(-1);
  json::array& out_;
  size_t open_turn_ = kNone;       // the assistant turn gathering tool calls
  size_t last_assistant_ = kNone;  // the assistant text turn just added, which calls may join
};

Result<json::array> chat_tools(const json::array& tools) {
  json::array out;
  for (size_t i = 0; i < tools.size(); ++i) {
    const std::string f = at("tools", i);
    const json::object* t = tools[i].if_object();
    if (!t) return bad(f, "must be an object");
    const std::string_view type = string_member(*t, "type");
    if (type != "function")
      return bad(f + ".type", "built-in tool '" + std::string(type) +
                                  "' needs a provider with the Responses API; only function "
                                  "tools are translated");
    const std::string_view name = string_member(*t, "name");
    if (name.empty()) return bad(f + ".name", "must be a non-empty string");
    json::object fn{{"name", name}};
    if (auto* d = member(*t, "description")) fn["description"] = *d;
    if (auto* p = member(*t, "parameters")) fn["parameters"] = *p;
    if (auto* s = member(*t, "strict")) fn["strict"] = *s;
    out.push_back(json::object{{"type", "function"}, {"function", std::move(fn)}});
  }
  return out;
}

}  // namespace

Result<json::array> responses_input_items(const json::object& request) {
  const json::value* input = member(request, "input");
  if (!input) return bad("input", "is required");
  if (input->is_string())
    return json::array{
        json::object{{"type", "message"}, {"role", "user"}, {"content", input->get_string()}}};
  if (!input->is_array()) return bad("input", "must be a string or a list of items");
  json::array items = input->get_array();
  for (size_t i = 0; i < items.size(); ++i) {
    json::object* item = items[i].if_object();
    if (!item) return bad(at("input", i), "must be an object");
    if (!item->contains("type") && item->contains("role")) (*item)["type"] = "message";
  }
  return items;
}

Result<std::string> responses_to_chat_request(const json::object& request,
                                              const json::array& items) {
  if (auto* b = member(request, "background"); b && b->is_bool() && b->get_bool())
    return bad("background", "background responses are not supported by the gateway");
  if (member(request, "conversation"))
    return bad("conversation", "conversations are not supported; use previous_response_id");
  json::object chat;
  const json::value* model = member(request, "model");
  if (!model || !model->is_string()) return bad("model", "must be a string");
  chat["model"] = *model;
  json::array messages;
  if (const json::value* ins = member(request, "instructions")) {
    if (!ins->is_string()) return bad("instructions", "must be a string");
    if (!ins->get_string().empty())
      messages.push_back(json::object{{"role", "system"}, {"content", *ins}});
  }
  MessageBuilder builder(messages);
  for (size_t i = 0; i < items.size(); ++i) {
    const json::object* item = items[i].if_object();
    if (!item) return bad(at("input", i), "must be an object");
    if (Status st = builder.add(*item, at("input", i)); !st.ok()) return st;
  }
  if (messages.empty()) return bad("input", "must not be empty");
  chat["messages"] = std::move(messages);

  if (const json::value* tools = member(request, "tools")) {
    if (!tools->is_array()) return bad("tools", "must be a list");
    if (!tools->get_array().empty()) {
      auto t = chat_tools(tools->get_array());
      if (!t.ok()) return t.status();
      chat["tools"] = std::move(t.value());
    }
  }
  if (const json::value* choice = member(request, "tool_choice")) {
    if (choice->is_string()) {
      const auto c = choice->get_string();
      if (c != "auto" && c != "none" && c != "required")
        return bad("tool_choice", "must be auto, none, required or a function");
      chat["tool_choice"] = *choice;
    } else if (const json::object* o = choice->if_object();
               o && string_member(*o, "type") == "function" && !string_member(*o, "name").empty()) {
      chat["tool_choice"] = json::object{
          {"type", "function"}, {"function", json::object{{"name", string_member(*o, "name")}}}};
    } else {
      return bad("tool_choice", "must be auto, none, required or {type: function, name}");
    }
  }
  if (const json::value* text = member(request, "text")) {
    const json::object* t = text->if_object();
    if (!t) return bad("text", "must be an object");
    if (const json::value* fv = member(*t, "format")) {
      const json::object* fmt = fv->if_object();
      if (!fmt) return bad("text.format", "must be an object");
      const std::string_view type = string_member(*fmt, "type");
      if (type == "json_schema") {
        json::object schema;
        const std::string_view name = string_member(*fmt, "name");
        if (name.empty()) return bad("text.format.name", "must be a non-empty string");
        schema["name"] = name;
        const json::value* s = member(*fmt, "schema");
        if (!s || !s->is_object()) return bad("text.format.schema", "must be an object");
        schema["schema"] = *s;
        if (auto* st = member(*fmt, "strict")) schema["strict"] = *st;
        if (auto* d = member(*fmt, "description")) schema["description"] = *d;
        chat["response_format"] =
            json::object{{"type", "json_schema"}, {"json_schema", std::move(schema)}};
      } else if (type == "json_object") {
        chat["response_format"] = json::object{{"type", "json_object"}};
      } else if (type != "text") {
        return bad("text.format.type", "must be text, json_schema or json_object");
      }
    }
  }
  if (const json::value* m = member(request, "max_output_tokens")) {
    if (!anthropic_detail::as_int(*m) || *anthropic_detail::as_int(*m) < 1)
      return bad("max_output_tokens", "must be a positive integer");
    chat["max_tokens"] = *m;
  }
  for (const char* k : {"temperature", "top_p", "parallel_tool_calls", "user"})
    if (const json::value* v = member(request, k)) chat[k] = *v;
  if (const json::value* r = member(request, "reasoning"))
    if (const json::object* ro = r->if_object())
      if (auto effort = string_member(*ro, "effort"); !effort.empty())
        chat["reasoning_effort"] = effort;
  if (const json::value* st = member(request, "stream"); st && st->is_bool() && st->get_bool()) {
    chat["stream"] = true;
    chat["stream_options"] = json::object{{"include_usage", true}};
  }
  return json::serialize(chat);
}

}  // namespace switchboard::upstream
