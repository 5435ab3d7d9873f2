// OpenAI Chat Completions request -> Anthropic Messages request. See translate.h for the mapping
// rules.
#include <algorithm>
#include <boost/json.hpp>

#include "upstream/anthropic_json.h"
#include "upstream/translate.h"

namespace switchboard::upstream {

namespace json = boost::json;
using anthropic_detail::as_int;
using anthropic_detail::lenient_depth;
using anthropic_detail::member;
using anthropic_detail::string_member;

namespace {

Status bad(const std::string& field, std::string_view what) {
  return Status::invalid_argument(field + ": " + std::string(what));
}

std::string at(const std::string& field, size_t i) {
  return field + "[" + std::to_string(i) + "]";
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

Result<json::object> image_block(const json::object& part, const std::string& field) {
  const json::value* iu = member(part, "image_url");
  std::string_view url;
  if (iu && iu->is_string()) {
    url = iu->get_string();  // a shorthand some clients use
  } else if (iu && iu->is_object()) {
    const json::value* u = member(iu->get_object(), "url");
    if (!u || !u->is_string()) return bad(field + ".image_url.url", "must be a string");
    url = u->get_string();
  } else {
    return bad(field + ".image_url", "must be an object with a url");
  }
  json::object source;
  if (starts_with_nocase(url, "data:")) {
    std::string_view rest = url.substr(5);
    size_t comma = rest.find(',');
    if (comma == std::string_view::npos) {
      return bad(field + ".image_url.url", "data: URL without a ',' before the data");
    }
    std::string_view meta = rest.substr(0, comma);
    std::string_view data = rest.substr(comma + 1);
    constexpr std::string_view kB64 = ";base64";
    if (meta.size() < kB64.size() || meta.substr(meta.size() - kB64.size()) != kB64) {
      return bad(field + ".image_url.url", "data: URL must be base64-encoded");
    }
    std::string_view media_type = meta.substr(0, meta.find(';'));
    if (media_type.empty() || data.empty()) {
      return bad(field + ".image_url.url", "data: URL needs a media type and data");
    }
    source["type"] = "base64";
    source["media_type"] = media_type;
    source["data"] = data;
  } else if (starts_with_nocase(url, "http://") || starts_with_nocase(url, "https://")) {
    source["type"] = "url";
    source["url"] = url;
  } else {
    return bad(field + ".image_url.url", "must be a data: URL or an http(s) URL");
  }
  json::object block;
  block["type"] = "image";
  block["source"] = std::move(source);
  return block;
}

enum class PartsFor { kUser, kAssistant, kTool };

// OpenAI message content (string, array of parts, or null) → Anthropic content blocks.
// Empty texts are dropped: Anthropic rejects empty text blocks.
Result<json::array> content_blocks(const json::value* content, const std::string& field,
                                   PartsFor who) {
  json::array blocks;
  if (!content) return blocks;
  if (content->is_string()) {
    if (!content->get_string().empty()) {
      blocks.push_back(json::object{{"type", "text"}, {"text", content->get_string()}});
    }
    return blocks;
  }
  const json::array* parts = content->if_array();
  if (!parts) return bad(field, "must be a string, an array of content parts or null");
  for (size_t j = 0; j < parts->size(); ++j) {
    std::string pf = at(field, j);
    const json::object* part = (*parts)[j].if_object();
    if (!part) return bad(pf, "must be an object");
    const json::value* type = member(*part, "type");
    if (!type || !type->is_string()) return bad(pf + ".type", "must be a string");
    std::string_view t = type->get_string();
    if (t == "text" || (t == "refusal" && who == PartsFor::kAssistant)) {
      const json::value* text = member(*part, t == "text" ? "text" : "refusal");
      if (!text || !text->is_string()) return bad(pf + "." + std::string(t), "must be a string");
      if (text->get_string().empty()) continue;
      json::object block{{"type", "text"}, {"text", text->get_string()}};
      // Prompt-caching hints pass through: clients that know Anthropic set them on parts.
      if (const json::value* cc = member(*part, "cache_control"); cc && cc->is_object()) {
        block["cache_control"] = *cc;
      }
      blocks.push_back(std::move(block));
    } else if (t == "image_url" && who != PartsFor::kAssistant) {
      auto img = image_block(*part, pf);
      if (!img.ok()) return img.status();
      blocks.push_back(std::move(img).value());
    } else {
      return bad(pf + ".type", "unsupported content part type '" + std::string(t) + "'");
    }
  }
  return blocks;
}

Result<std::string> system_text(const json::value* content, const std::string& field) {
  auto blocks = content_blocks(content, field, PartsFor::kAssistant);
  if (!blocks.ok()) return blocks.status();
  std::string text;
  for (const json::value& b : *blocks) {
    if (!text.empty()) text += "\n";
    text += b.at("text").get_string();
  }
  return text;
}

Status tool_use_blocks(const json::object& msg, const std::string& field, json::array& blocks) {
  const json::value* calls_v = member(msg, "tool_calls");
  if (!calls_v) return Status::ok_status();
  const json::array* calls = calls_v->if_array();
  if (!calls) return bad(field + ".tool_calls", "must be an array");
  for (size_t k = 0; k < calls->size(); ++k) {
    std::string cf = at(field + ".tool_calls", k);
    const json::object* call = (*calls)[k].if_object();
    if (!call) return bad(cf, "must be an object");
    const json::value* id = member(*call, "id");
    if (!id || !id->is_string()) return bad(cf + ".id", "must be a string");
    if (const json::value* type = member(*call, "type");
        type && !(type->is_string() && type->get_string() == "function")) {
      return bad(cf + ".type", "must be \"function\"");
    }
    const json::value* fn_v = member(*call, "function");
    if (!fn_v || !fn_v->is_object()) return bad(cf + ".function", "must be an object");
    const json::object& fn = fn_v->get_object();
    const json::value* name = member(fn, "name");
    if (!name || !name->is_string()) return bad(cf + ".function.name", "must be a string");
    json::value input;
    const json::value* args = member(fn, "arguments");
    if (!args) {
      input = json::object();
    } else if (args->is_object()) {
      input = *args;  // some clients send the object itself
    } else if (args->is_string()) {
      std::string_view s = args->get_string();
      if (s.find_first_not_of(" \t\r\n") == std::string_view::npos) {
        input = json::object();  // "" means no arguments
      } else {
        json::error_code ec;
        input = json::parse(s, ec, {}, lenient_depth());
        if (ec) return bad(cf + ".function.arguments", "invalid JSON: " + ec.message());
        if (!input.is_object()) {
          return bad(cf + ".function.arguments", "must encode a JSON object");
        }
      }
    } else {
      return bad(cf + ".function.arguments", "must be a JSON string");
    }
    blocks.push_back(json::object{{"type", "tool_use"},
                                  {"id", id->get_string()},
                                  {"name", name->get_string()},
                                  {"input", std::move(input)}});
  }
  return Status::ok_status();
}

Result<json::object> tool_result_block(const json::object& msg, const std::string& field) {
  const json::value* id = member(msg, "tool_call_id");
  if (!id || !id->is_string()) return bad(field + ".tool_call_id", "must be a string");
  json::object block{{"type", "tool_result"}, {"tool_use_id", id->get_string()}};
  const json::value* content = member(msg, "content");
  if (content && content->is_string()) {
    if (!content->get_string().empty()) block["content"] = content->get_string();
  } else {
    auto blocks = content_blocks(content, field + ".content", PartsFor::kTool);
    if (!blocks.ok()) return blocks.status();
    if (!blocks->empty()) block["content"] = std::move(blocks).value();
  }
  return block;
}

Result<json::array> translate_tools(const json::value& v) {
  const json::array* tools = v.if_array();
  if (!tools) return bad("tools", "must be an array");
  json::array out;
  for (size_t i = 0; i < tools->size(); ++i) {
    std::string tf = at("tools", i);
    const json::object* tool = (*tools)[i].if_object();
    if (!tool) return bad(tf, "must be an object");
    if (const json::value* type = member(*tool, "type");
        type && !(type->is_string() && type->get_string() == "function")) {
      return bad(tf + ".type", "only function tools are supported");
    }
    const json::value* fn_v = member(*tool, "function");
    if (!fn_v || !fn_v->is_object()) return bad(tf + ".function", "must be an object");
    const json::object& fn = fn_v->get_object();
    const json::value* name = member(fn, "name");
    if (!name || !name->is_string() || name->get_string().empty()) {
      return bad(tf + ".function.name", "must be a non-empty string");
    }
    json::object t{{"name", name->get_string()}};
    if (const json::value* d = member(fn, "description")) {
      if (!d->is_string()) return bad(tf + ".function.description", "must be a string");
      t["description"] = *d;
    }
    json::object schema;
    if (const json::value* p = member(fn, "parameters")) {
      if (!p->is_object()) return bad(tf + ".function.parameters", "must be an object");
      schema = p->get_object();
    }
    // Anthropic insists on an object schema; OpenAI allows omitting it for no-argument tools.
    if (!schema.contains("type")) schema["type"] = "object";
    t["input_schema"] = std::move(schema);
    out.push_back(std::move(t));
  }
  return out;
}

Result<json::object> translate_tool_choice(const json::value& v) {
  if (v.is_string()) {
    std::string_view s = v.get_string();
    if (s == "auto") return json::object{{"type", "auto"}};
    if (s == "none") return json::object{{"type", "none"}};
    if (s == "required") return json::object{{"type", "any"}};
    return bad("tool_choice", "must be \"auto\", \"none\", \"required\" or a function choice");
  }
  if (const json::object* o = v.if_object()) {
    const json::value* fn = member(*o, "function");
    const json::value* name = fn && fn->is_object() ? member(fn->get_object(), "name") : nullptr;
    if (!name || !name->is_string()) return bad("tool_choice.function.name", "must be a string");
    return json::object{{"type", "tool"}, {"name", name->get_string()}};
  }
  return bad("tool_choice", "must be a string or an object");
}

Result<double> number_field(const json::object& req, std::string_view key) {
  const json::value* v = member(req, key);
  if (!v->is_number()) return bad(std::string(key), "must be a number");
  return v->to_number<double>();  // cannot throw: is_number() was checked
}

}  // namespace

std::string anthropic_json_tool(const json::object& req) {
  const json::value* rf = member(req, "response_format");
  const json::object* f = rf ? rf->if_object() : nullptr;
  if (!f) return {};
  const std::string_view type = string_member(*f, "type");
  if (type == "json_schema") {
    const json::value* js = member(*f, "json_schema");
    const json::object* o = js ? js->if_object() : nullptr;
    const std::string_view name = o ? string_member(*o, "name") : std::string_view();
    return name.empty() ? std::string("json_response") : std::string(name);
  }
  return type == "json_object" ? std::string("json_response") : std::string();
}

Result<std::string> openai_to_anthropic_request(const json::object& req,
                                                std::string_view upstream_model,
                                                int64_t default_max_tokens,
                                                bool refuse_json_schema) {
  // What Anthropic cannot do is refused, never dropped without a word.
  if (const json::value* lp = member(req, "logprobs"); lp && lp->is_bool() && lp->get_bool())
    return bad("logprobs", "Anthropic models do not return log probabilities");
  if (member(req, "top_logprobs"))
    return bad("top_logprobs", "Anthropic models do not return log probabilities");
  const std::string json_tool = anthropic_json_tool(req);
  if (!json_tool.empty() && refuse_json_schema)
    return bad("response_format",
               "structured output is refused for this provider by its configuration "
               "(json_schema: refuse); Anthropic models have no JSON mode");
  const json::value* msgs_v = member(req, "messages");
  if (!msgs_v) return bad("messages", "missing");
  const json::array* msgs = msgs_v->if_array();
  if (!msgs) return bad("messages", "must be an array");
  if (msgs->empty()) return bad("messages", "must not be empty");

  std::string system;
  json::array turns;
  std::string last_role;
  auto add_turn = [&](std::string_view role, json::array blocks) {
    if (blocks.empty()) return;
    if (!turns.empty() && last_role == role) {
      json::array& prev = turns.back().get_object()["content"].get_array();
      for (json::value& b : blocks) prev.push_back(std::move(b));
      return;
    }
    turns.push_back(json::object{{"role", role}, {"content", std::move(blocks)}});
    last_role = role;
  };

  for (size_t i = 0; i < msgs->size(); ++i) {
    std::string mf = at("messages", i);
    const json::object* m = (*msgs)[i].if_object();
    if (!m) return bad(mf, "must be an object");
    const json::value* role_v = member(*m, "role");
    if (!role_v || !role_v->is_string()) return bad(mf + ".role", "must be a string");
    std::string_view role = role_v->get_string();
    const json::value* content = member(*m, "content");
    std::string cf = mf + ".content";

    if (role == "system" || role == "developer") {
      auto text = system_text(content, cf);
      if (!text.ok()) return text.status();
      if (!text->empty()) {
        if (!system.empty()) system += "\n\n";
        system += *text;
      }
    } else if (role == "user") {
      auto blocks = content_blocks(content, cf, PartsFor::kUser);
      if (!blocks.ok()) return blocks.status();
      add_turn("user", std::move(blocks).value());
    } else if (role == "assistant") {
      auto blocks = content_blocks(content, cf, PartsFor::kAssistant);
      if (!blocks.ok()) return blocks.status();
      if (Status s = tool_use_blocks(*m, mf, *blocks); !s.ok()) return s;
      add_turn("assistant", std::move(blocks).value());
    } else if (role == "tool") {
      auto block = tool_result_block(*m, mf);
      if (!block.ok()) return block.status();
      // Tool results go back as a user turn; a run of them merges into one turn.
      add_turn("user", json::array{std::move(block).value()});
    } else {
      return bad(mf + ".role", "unsupported role '" + std::string(role) + "'");
    }
  }
  if (turns.empty()) return bad("messages", "no user or assistant content to send");

  json::object out;
  out["model"] = upstream_model;

  int64_t max_tokens = default_max_tokens;
  for (std::string_view key : {"max_tokens", "max_completion_tokens"}) {
    if (const json::value* v = member(req, key)) {
      auto n = as_int(*v);
      if (!n || *n <= 0) return bad(std::string(key), "must be a positive integer");
      max_tokens = *n;  // max_completion_tokens (checked last) wins: it replaced max_tokens
    }
  }
  out["max_tokens"] = max_tokens;
  if (!system.empty()) out["system"] = system;
  out["messages"] = std::move(turns);

  if (const json::value* n = member(req, "n")) {
    auto count = as_int(*n);
    if (!count || *count < 1) return bad("n", "must be a positive integer");
    if (*count > 1) return bad("n", "only n=1 is supported by Anthropic models");
  }

  bool no_parallel = false;
  if (const json::value* p = member(req, "parallel_tool_calls")) {
    if (!p->is_bool()) return bad("parallel_tool_calls", "must be a boolean");
    no_parallel = !p->get_bool();
  }
  if (const json::value* tools_v = member(req, "tools")) {
    auto tools = translate_tools(*tools_v);
    if (!tools.ok()) return tools.status();
    if (!tools->empty()) {
      out["tools"] = std::move(tools).value();
      json::object choice{{"type", "auto"}};
      bool have_choice = false;
      if (const json::value* tc = member(req, "tool_choice")) {
        auto c = translate_tool_choice(*tc);
        if (!c.ok()) return c.status();
        choice = std::move(c).value();
        have_choice = true;
      }
      if (no_parallel && string_member(choice, "type") != "none") {
        choice["disable_parallel_tool_use"] = true;
        have_choice = true;
      }
      if (have_choice) out["tool_choice"] = std::move(choice);
    }
  } else if (const json::value* tc = member(req, "tool_choice")) {
    // Without tools there is nothing to choose; still reject nonsense.
    auto c = translate_tool_choice(*tc);
    if (!c.ok()) return c.status();
  }
  if (!json_tool.empty()) {
    // response_format as a tool whose input is the answer (anthropic_to_openai_response turns
    // its call back into the message's content). With the client's own tools the model must
    // call one of them or this one; without, this one.
    const json::value* rf = member(req, "response_format");
    const json::object& f = rf->get_object();
    json::value schema = json::object{{"type", "object"}};
    if (string_member(f, "type") == "json_schema") {
      const json::value* js = member(f, "json_schema");
      const json::object* o = js ? js->if_object() : nullptr;
      const json::value* sv = o ? member(*o, "schema") : nullptr;
      if (!sv || !sv->is_object())
        return bad("response_format.json_schema.schema", "must be an object");
      schema = *sv;
    }
    json::array& tools = out["tools"].is_array() ? out["tools"].get_array()
                                                 : (out["tools"] = json::array()).get_array();
    for (const auto& t : tools)
      if (t.is_object() && string_member(t.get_object(), "name") == json_tool)
        return bad("response_format",
                   "the schema's name '" + json_tool + "' is also a tool's name");
    tools.push_back(
        json::object{{"name", json_tool},
                     {"description",
                      "Give your final answer as this tool's input: it is the JSON object "
                      "the caller asked for."},
                     {"input_schema", std::move(schema)}});
    const json::value* choice = out.if_contains("tool_choice");
    const std::string_view kind =
        choice && choice->is_object() ? string_member(choice->get_object(), "type") : "auto";
    if (tools.size() == 1 || kind == "none") {
      out["tool_choice"] = json::object{{"type", "tool"}, {"name", json_tool}};
    } else if (kind == "auto") {
      out["tool_choice"] = json::object{{"type", "any"}};
    }
  }

  if (member(req, "temperature")) {
    auto t = number_field(req, "temperature");
    if (!t.ok()) return t.status();
    if (*t < 0) return bad("temperature", "must not be negative");
    out["temperature"] = std::min(*t, 1.0);
  }
  if (member(req, "top_p")) {
    auto p = number_field(req, "top_p");
    if (!p.ok()) return p.status();
    if (*p < 0 || *p > 1) return bad("top_p", "must be between 0 and 1");
    out["top_p"] = *p;
  }
  if (const json::value* stop = member(req, "stop")) {
    json::array seqs;
    if (stop->is_string()) {
      if (!stop->get_string().empty()) seqs.push_back(*stop);
    } else if (const json::array* list = stop->if_array()) {
      for (size_t i = 0; i < list->size(); ++i) {
        if (!(*list)[i].is_string()) return bad(at("stop", i), "must be a string");
        if (!(*list)[i].get_string().empty()) seqs.push_back((*list)[i]);
      }
    } else {
      return bad("stop", "must be a string or an array of strings");
    }
    if (!seqs.empty()) out["stop_sequences"] = std::move(seqs);
  }
  if (const json::value* s = member(req, "stream")) {
    if (!s->is_bool()) return bad("stream", "must be a boolean");
    if (s->get_bool()) out["stream"] = true;
  }
  if (const json::value* u = member(req, "user")) {
    if (!u->is_string()) return bad("user", "must be a string");
    if (!u->get_string().empty()) out["metadata"] = json::object{{"user_id", *u}};
  }
  return json::serialize(out);
}

}  // namespace switchboard::upstream
