// Cheap inspection of OpenAI pass-through bodies: usage of a completion, and what a stream
// chunk carries. See translate.h.
#include <algorithm>
#include <array>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <limits>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "upstream/translate.h"

namespace switchboard::upstream {

namespace {

bool is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

size_t skip_ws(std::string_view s, size_t i) {
  while (i < s.size() && is_ws(s[i])) ++i;
  return i;
}

// s[i] is '"': the index just past the closing quote, or npos. Keys and most values end within a
// few bytes: the first 48 are looked at sixteen at a time for a quote or a backslash. A longer
// string (a completion's text) goes by memchr, which glibc vectorises wider: a quote closes it
// when an even number of backslashes precedes it.
size_t skip_string(std::string_view s, size_t i) {
  const char* p = s.data();
  const size_t n = s.size();
  const size_t first = i + 1;
  const size_t near_end = std::min(n, first + 48);
  size_t j = first;
  while (j < near_end) {
#if defined(__SSE2__)
    if (j + 16 <= n) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + j));
      const unsigned hits = unsigned(_mm_movemask_epi8(_mm_or_si128(
          _mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')))));
      if (hits == 0) {
        j += 16;
        continue;
      }
      j += unsigned(__builtin_ctz(hits));
    }
#endif
    if (p[j] == '"') return j + 1;
    if (p[j] == '\\') {
      j += 2;  // a backslash and the byte it escapes
    } else {
      ++j;
    }
  }
  for (size_t from = j; from < n;) {
    const void* q = std::memchr(p + from, '"', n - from);
    if (q == nullptr) break;
    const size_t k = size_t(static_cast<const char*>(q) - p);
    size_t slashes = 0;
    while (k - slashes > first && p[k - 1 - slashes] == '\\') ++slashes;
    if (slashes % 2 == 0) return k + 1;
    from = k + 1;
  }
  return std::string_view::npos;
}

// The bytes the structural walk of a container stops at: strings and brackets.
constexpr std::array<bool, 256> kStructural = [] {
  std::array<bool, 256> t{};
  for (unsigned char c : std::string_view("\"{}[]")) t[c] = true;
  return t;
}();

// The index just past the JSON value starting at s[i], or npos. Structural only: brackets and
// strings are matched, scalars are taken up to the next delimiter without validating them
// (the parts that matter are parsed properly afterwards).
size_t skip_value(std::string_view s, size_t i) {
  if (i >= s.size()) return std::string_view::npos;
  char c = s[i];
  if (c == '"') return skip_string(s, i);
  if (c == '{' || c == '[') {
    // Brackets are matched by kind on a small stack so "[}" is rejected.
    std::string stack(1, c);  // short: no allocation below sixteen levels
    const size_t n = s.size();
    for (++i; i < n; ++i) {
      while (i < n && !kStructural[static_cast<unsigned char>(s[i])]) ++i;
      if (i >= n) break;
      const char d = s[i];
      if (d == '"') {
        i = skip_string(s, i);
        if (i == std::string_view::npos) return i;
        --i;
      } else if (d == '{' || d == '[') {
        stack.push_back(d);
      } else {
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

// Whether `s` holds the string "usage" or "error" (as a key or anywhere else): one pass over its
// quotes, sixteen bytes at a time, instead of a search per word.
bool names_usage_or_error(std::string_view s) {
  const char* p = s.data();
  const size_t n = s.size();
  auto ends_word = [&](size_t q) {  // s[q] is a quote: does `"usage"` or `"error"` end here?
    if (q < 6 || p[q - 6] != '"') return false;
    const std::string_view w(p + q - 5, 5);
    return w == "usage" || w == "error";
  };
  size_t i = 0;
#if defined(__SSE2__)
  const __m128i quote = _mm_set1_epi8('"');
  for (; i + 16 <= n; i += 16) {
    unsigned hits = unsigned(_mm_movemask_epi8(
        _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i)), quote)));
    while (hits != 0) {
      if (ends_word(i + unsigned(__builtin_ctz(hits)))) return true;
      hits &= hits - 1;
    }
  }
#endif
  for (; i < n; ++i)
    if (p[i] == '"' && ends_word(i)) return true;
  return false;
}

// Calls f(raw_element) for each element of the array `s`. False when `s` is not structurally an
// array.
template <typename F>
bool for_each_element(std::string_view s, F&& f) {
  size_t i = skip_ws(s, 0);
  if (i >= s.size() || s[i] != '[') return false;
  i = skip_ws(s, i + 1);
  if (i < s.size() && s[i] == ']') return skip_ws(s, i + 1) == s.size();
  while (i < s.size()) {
    const size_t end = skip_value(s, i);
    if (end == std::string_view::npos) return false;
    f(s.substr(i, end - i));
    i = skip_ws(s, end);
    if (i >= s.size()) return false;
    if (s[i] == ']') return skip_ws(s, i + 1) == s.size();
    if (s[i] != ',') return false;
    i = skip_ws(s, i + 1);
  }
  return false;
}

bool is_string(std::string_view raw) {
  return !raw.empty() && raw.front() == '"';
}
bool is_non_empty_string(std::string_view raw) {
  return is_string(raw) && raw.size() > 2;
}
// A value the walk does not descend into: containers and strings are matched structurally,
// scalars checked against the grammar.
bool plausible_value(std::string_view raw) {
  return raw.front() == '{' || raw.front() == '[' || raw.front() == '"' || is_json_scalar(raw);
}

// Whether a chunk's `choices` carry anything the client sees: a finish reason, a non-empty text
// (content, refusal, reasoning), or a tool call. Walked structurally like the usage (every chunk
// of every stream comes through here), without building a document; with duplicate keys the
// last one counts, as for a parser. Malformed choices carry nothing.
bool choices_have_content(std::string_view raw) {
  // (No search for the names first: five searches of the chunk cost more than the walk.)
  bool valid = true;
  bool content = false;
  const bool array = for_each_element(raw, [&](std::string_view choice) {
    if (!valid) return;
    if (choice.front() != '{') {
      valid = plausible_value(choice);
      return;
    }
    std::string_view finish_reason, delta;
    valid = for_each_member(choice, [&](std::string_view key, std::string_view value) {
      if (key == "finish_reason") {
        finish_reason = value;
      } else if (key == "delta") {
        delta = value;
      } else if (!plausible_value(value)) {
        valid = false;
      }
    });
    if (!valid) return;
    if (!finish_reason.empty() && !plausible_value(finish_reason)) valid = false;
    if (is_string(finish_reason)) content = true;
    if (delta.empty()) return;
    if (delta.front() != '{') {
      if (!plausible_value(delta)) valid = false;
      return;
    }
    std::string_view texts[3], calls[2];  // the last of each name counts
    valid = for_each_member(delta,
                            [&](std::string_view key, std::string_view value) {
                              if (!plausible_value(value)) valid = false;
                              if (key == "content") texts[0] = value;
                              if (key == "refusal") texts[1] = value;
                              if (key == "reasoning_content") texts[2] = value;
                              if (key == "tool_calls") calls[0] = value;
                              if (key == "function_call") calls[1] = value;
                            }) &&
            valid;
    for (std::string_view t : texts) content = content || is_non_empty_string(t);
    for (std::string_view t : calls) {
      if (t.empty()) continue;
      const bool empty_array = t.front() == '[' && skip_ws(t, 1) + 1 == t.size();
      content = content || t.front() == '{' || (t.front() == '[' && !empty_array);
    }
  });
  return array && valid && content;
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

OpenAiChunkInfo inspect_openai_chunk(std::string_view data, bool need_content) {
  OpenAiChunkInfo info;
  size_t b = skip_ws(data, 0);
  size_t e = data.size();
  while (e > b && is_ws(data[e - 1])) --e;
  std::string_view trimmed = data.substr(b, e - b);
  if (trimmed == "[DONE]") {
    info.done = true;
    return info;
  }
  if (!need_content && !names_usage_or_error(trimmed)) {
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
  if (!usage.empty()) info.usage = parse_usage(usage);
  if (!choices.empty() && (need_content || info.usage))
    info.has_content = choices_have_content(choices);
  return info;
}

}  // namespace switchboard::upstream
