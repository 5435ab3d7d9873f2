// Internal to the upstream module: the JSON helpers that the three directions of the Anthropic
// translation (anthropic_request.cpp, anthropic_response.cpp, anthropic_stream.cpp) share. Inline,
// as they were when one file held them all, since the stream translator calls them per event.
// Thread-safety: pure functions of their arguments.
#pragma once

#include <algorithm>
#include <boost/json.hpp>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <utility>

namespace switchboard::upstream::anthropic_detail {

namespace json = boost::json;

// Tool arguments and schemas may nest deeper than Boost.JSON's default of 32.
inline json::parse_options lenient_depth() {
  json::parse_options opt;
  opt.max_depth = 256;
  return opt;
}

// An integer from any JSON number that holds one exactly.
inline std::optional<int64_t> as_int(const json::value& v) {
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64()) {
    if (v.get_uint64() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    return static_cast<int64_t>(v.get_uint64());
  }
  if (v.is_double()) {
    double d = v.get_double();
    if (d >= -9.0e18 && d <= 9.0e18 && d == static_cast<double>(static_cast<int64_t>(d))) {
      return static_cast<int64_t>(d);
    }
  }
  return std::nullopt;
}

// Absent and null are the same to OpenAI clients.
inline const json::value* member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return (v && !v->is_null()) ? v : nullptr;
}

// A token count from the upstream, bounded to [0, 2^40] as extract_openai_usage bounds OpenAI's:
// a negative or huge count (whose sums overflowed, found by fuzz/translate_fuzz) must not reach
// the key pool's accounting or the costs.
inline int64_t token_count(const json::value& v) {
  return std::clamp<int64_t>(as_int(v).value_or(0), 0, int64_t{1} << 40);
}

inline int64_t token_member(const json::object* o, std::string_view key) {
  if (!o) return 0;
  const json::value* v = member(*o, key);
  if (!v) return 0;
  return token_count(*v);
}

inline std::string_view string_member(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  if (v && v->is_string()) return v->get_string();
  return {};
}

// Anthropic's stop_reason and OpenAI's finish_reason: one table for both directions (the first
// row that matches wins, so each direction has one answer).
inline constexpr std::pair<std::string_view, std::string_view> kStopReasons[] = {
    {"end_turn", "stop"},          {"max_tokens", "length"},  {"tool_use", "tool_calls"},
    {"refusal", "content_filter"}, {"stop_sequence", "stop"}, {"pause_turn", "stop"},
};

inline std::string_view finish_reason_for(std::string_view stop_reason) {
  for (const auto& [anthropic, openai] : kStopReasons)
    if (anthropic == stop_reason) return openai;
  return "stop";  // anything new
}

inline std::string_view stop_reason_for(std::string_view finish_reason) {
  for (const auto& [anthropic, openai] : kStopReasons)
    if (openai == finish_reason) return anthropic;
  return "end_turn";  // anything new (function_call, a vendor's own)
}

}  // namespace switchboard::upstream::anthropic_detail
