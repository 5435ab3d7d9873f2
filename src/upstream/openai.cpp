// Cheap inspection of OpenAI pass-through bodies: usage of a completion, and what a stream
// chunk carries. See translate.h.
#include <boost/json.hpp>

#include "upstream/translate.h"

namespace switchboard::upstream {

namespace json = boost::json;

namespace {

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t skip_ws(std::string_view s, size_t i) {
  while (i < s.size() && is_ws(s[i])) ++i;
  return i;
}

// s[i] is '"': the index just past the closing quote, or npos.
size_t skip_string(std::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// The index just past the JSON value starting at s[i], or npos. Structural only: brackets and
// strings are matched, scalars are taken up to the next delimiter without validating them
// (the parts that matter are parsed properly afterwards).
size_t skip_value(std::string_view s, size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  char c = s[i];
  if (c == '"') return skip_string(s, i);
  if (c == '{' || c == '[') {
    // Brackets are matched by kind on a small stack so "[}" is rejected.
    std::string stack(1, c);
    for (++i; i < s.size(); ++i) {
      char d = s[i];
      if (d == '"') {
        i = skip_string(s, i);
        if (i == std::string_view::npos) return i;
        --i;
      } else if (d == '{' || d == '[') {
        stack.push_back(d);
      } else if (d == '}' || d == ']') {
        if (stack.back() != (d == '}' ? '{' : '[')) return std::string_view::npos;
        stack.pop_back();
        if (stack.empty()) return i + 1;
      }
    }
    return std::string_view::npos;
  }
  size_t start = i;
  while (i < s.size() && !is_ws(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']') ++i;
  return i == start ? std::string_view::npos : i;
}

// Calls f(key, raw_value) for each member of the top-level object. False when `s` is not
// structurally an object.
template <typename F>
bool for_each_member(std::string_view s, F&& f) {
  size_t i = skip_ws(s, 0);
  if (i >= s.size() || s[i] != '{') return false;
  i = skip_ws(s, i + 1);
  if (i < s.size() && s[i] == '}') return skip_ws(s, i + 1) == s.size();
  while (i < s.size()) {
    if (s[i] != '"') return false;
    size_t key_end = skip_string(s, i);
    if (key_end == std::string_view::npos) return false;
    std::string_view key = s.substr(i + 1, key_end - i - 2);
    i = skip_ws(s, key_end);
    if (i >= s.size() || s[i] != ':') return false;
    i = skip_ws(s, i + 1);
    size_t end = skip_value(s, i);
    if (end == std::string_view::npos) return false;
    f(key, s.substr(i, end - i));
    i = skip_ws(s, end);
    if (i >= s.size()) return false;
    if (s[i] == '}') return skip_ws(s, i + 1) == s.size();
    if (s[i] != ',') return false;
    i = skip_ws(s, i + 1);
  }
  return false;
}

std::optional<int64_t> as_int(const json::value* v) {
  if (!v) return std::nullopt;
  if (v->is_int64()) return v->get_int64();
  if (v->is_uint64()) return static_cast<int64_t>(v->get_uint64());
  if (v->is_double()) return static_cast<int64_t>(v->get_double());
  return std::nullopt;
}

std::optional<TokenUsage> parse_usage(std::string_view raw) {
  if (raw == "null") return std::nullopt;
  unsigned char buf[1024];
  json::monotonic_resource mr(buf, sizeof(buf));
  json::error_code ec;
  json::value v = json::parse(raw, ec, &mr);
  if (ec || !v.is_object()) return std::nullopt;
  const json::object& u = v.get_object();
  auto prompt = as_int(u.if_contains("prompt_tokens"));
  auto completion = as_int(u.if_contains("completion_tokens"));
  if (!prompt && !completion) return std::nullopt;
  return TokenUsage{prompt.value_or(0), completion.value_or(0)};
}

bool non_empty_string(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() && !v->get_string().empty();
}

bool choices_have_content(std::string_view raw) {
  // Most chunks are a text delta; a chunk whose choices mention none of these names cannot
  // carry content, and is answered without a parse.
  if (raw.find("\"content\"") == std::string_view::npos &&
      raw.find("\"tool_calls\"") == std::string_view::npos &&
      raw.find("\"finish_reason\"") == std::string_view::npos &&
      raw.find("\"refusal\"") == std::string_view::npos &&
      raw.find("\"reasoning_content\"") == std::string_view::npos &&
      raw.find("\"function_call\"") == std::string_view::npos) {
    return false;
  }
  unsigned char buf[4096];
  json::monotonic_resource mr(buf, sizeof(buf));
  json::error_code ec;
  json::value v = json::parse(raw, ec, &mr);
  if (ec || !v.is_array()) return false;
  for (const json::value& c : v.get_array()) {
    const json::object* choice = c.if_object();
    if (!choice) continue;
    if (const json::value* fr = choice->if_contains("finish_reason"); fr && fr->is_string()) {
      return true;
    }
    const json::value* d = choice->if_contains("delta");
    const json::object* delta = d ? d->if_object() : nullptr;
    if (!delta) continue;
    if (non_empty_string(*delta, "content") || non_empty_string(*delta, "refusal") ||
        non_empty_string(*delta, "reasoning_content")) {
      return true;
    }
    for (std::string_view key : {"tool_calls", "function_call"}) {
      const json::value* t = delta->if_contains(key);
      if (t && ((t->is_array() && !t->get_array().empty()) || t->is_object())) return true;
    }
  }
  return false;
}

}  // namespace

std::optional<TokenUsage> extract_openai_usage(std::string_view body) {
  std::optional<TokenUsage> usage;
  bool found = false;
  bool ok = for_each_member(body, [&](std::string_view key, std::string_view raw) {
    if (!found && key == "usage") {
      found = true;
      usage = parse_usage(raw);
    }
  });
  if (!ok) return std::nullopt;
  return usage;
}

OpenAiChunkInfo inspect_openai_chunk(std::string_view data) {
  OpenAiChunkInfo info;
  size_t b = skip_ws(data, 0);
  size_t e = data.size();
  while (e > b && is_ws(data[e - 1])) --e;
  std::string_view trimmed = data.substr(b, e - b);
  if (trimmed == "[DONE]") {
    info.done = true;
    return info;
  }
  std::string_view choices;
  std::string_view usage;
  bool ok = for_each_member(trimmed, [&](std::string_view key, std::string_view raw) {
    if (key == "choices") {
      choices = raw;
    } else if (key == "usage") {
      usage = raw;
    } else if (key == "error" && !raw.empty() && raw.front() == '{') {
      info.is_error = true;
    }
  });
  if (!ok) {
    info.malformed = true;
    return info;
  }
  if (!choices.empty()) info.has_content = choices_have_content(choices);
  if (!usage.empty()) info.usage = parse_usage(usage);
  return info;
}

}  // namespace switchboard::upstream
