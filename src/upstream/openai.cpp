// Cheap inspection of OpenAI pass-through bodies: usage of a completion, and what a stream
// chunk carries. See translate.h.
#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <limits>

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

// s[i] is '"': the index just past the closing quote, or npos. Most of a completion's bytes are
// inside strings, so the search for the closing quote goes by memchr; a quote closes the string
// when an even number of backslashes precedes it.
size_t skip_string(std::string_view s, size_t i) {
  const size_t first = i + 1;
  // Keys and short values end within a few bytes: looked for inline before calling memchr.
  const size_t near_end = std::min(s.size(), first + 24);
  size_t from = first;
  for (; from < near_end; ++from) {
    if (s[from] == '\\') {
      ++from;
    } else if (s[from] == '"') {
      return from + 1;
    }
  }
  while (from < s.size()) {
    const void* q = std::memchr(s.data() + from, '"', s.size() - from);
    if (q == nullptr) break;
    const size_t j = static_cast<size_t>(static_cast<const char*>(q) - s.data());
    size_t slashes = 0;
    while (j - slashes > first && s[j - 1 - slashes] == '\\') ++slashes;
    if (slashes % 2 == 0) return j + 1;
    from = j + 1;
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

// A JSON number's value as an integer (a fraction or exponent is truncated toward zero, as a
// cast of the double would); nullopt when `raw` is not a JSON number.
std::optional<int64_t> json_number(std::string_view raw) {
  // RFC 8259 grammar: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
  size_t i = 0;
  const size_t n = raw.size();
  auto digits = [&] {
    const size_t start = i;
    while (i < n && raw[i] >= '0' && raw[i] <= '9') ++i;
    return i - start;
  };
  if (i < n && raw[i] == '-') ++i;
  const size_t int_start = i;
  const size_t int_digits = digits();
  if (int_digits == 0 || (int_digits > 1 && raw[int_start] == '0')) return std::nullopt;
  bool integral = true;
  if (i < n && raw[i] == '.') {
    ++i;
    if (digits() == 0) return std::nullopt;
    integral = false;
  }
  if (i < n && (raw[i] == 'e' || raw[i] == 'E')) {
    ++i;
    if (i < n && (raw[i] == '+' || raw[i] == '-')) ++i;
    if (digits() == 0) return std::nullopt;
    integral = false;
  }
  if (i != n) return std::nullopt;
  if (integral) {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(raw.data(), raw.data() + n, v);
    if (ec == std::errc() && end == raw.data() + n) return v;
  }
  // A fraction, an exponent, or an integer beyond int64: through a double, saturated.
  double d = 0;
  auto [end, ec] = std::from_chars(raw.data(), raw.data() + n, d);
  if (ec == std::errc::result_out_of_range) {
    d = std::strtod(std::string(raw).c_str(),
                    nullptr);  // ±HUGE_VAL or 0, where from_chars gives up
  } else if (ec != std::errc() || end != raw.data() + n) {
    return std::nullopt;
  }
  if (!(d > -9.2e18)) return std::numeric_limits<int64_t>::min();
  if (!(d < 9.2e18)) return std::numeric_limits<int64_t>::max();
  return static_cast<int64_t>(d);
}

bool is_json_scalar(std::string_view raw) {
  return raw == "null" || raw == "true" || raw == "false" || json_number(raw).has_value();
}

// The two counts of a `usage` object, read without building a document (this runs for every
// completion): members are walked structurally, the counts parsed as JSON numbers, other scalars
// checked against the grammar. Nested values (the *_details objects) are matched, not parsed.
// Counts are bounded to [0, 2^40], so that sums and costs made of them cannot overflow.
std::optional<TokenUsage> parse_usage(std::string_view raw) {
  if (raw == "null") return std::nullopt;
  constexpr int64_t kMaxCount = int64_t(1) << 40;
  std::optional<int64_t> prompt, completion;
  bool valid = true;
  auto scalar_ok = [](std::string_view value) {
    return value.front() == '{' || value.front() == '[' || value.front() == '"' ||
           is_json_scalar(value);
  };
  const bool object = for_each_member(raw, [&](std::string_view key, std::string_view value) {
    std::optional<int64_t>* slot = key == "prompt_tokens"       ? &prompt
                                   : key == "completion_tokens" ? &completion
                                                                : nullptr;
    if (slot == nullptr) {
      valid = valid && scalar_ok(value);
    } else if (auto v = json_number(value)) {
      *slot = std::clamp<int64_t>(*v, 0, kMaxCount);
    } else {
      slot->reset();  // the last value counts, and this one is not a count (null, "12", {})
      valid = valid && scalar_ok(value);
    }
  });
  if (!object || !valid) return std::nullopt;
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
  bool ok = for_each_member(body, [&](std::string_view key, std::string_view raw) {
    if (key == "usage") usage = parse_usage(raw);  // the last one counts, as for a parser
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
