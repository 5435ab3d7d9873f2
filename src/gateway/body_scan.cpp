// Body inspection for forwarding: the byte range of the top-level `model` value, so that the
// client's body is forwarded as it came with only the model replaced (DESIGN.md performance notes).
#include <boost/json.hpp>

#include "common/json.h"
#include "gateway/chat_call.h"

namespace switchboard::gateway {

namespace {

size_t skip_ws(std::string_view s, size_t i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  return i;
}

// Index just past the string that starts at s[i] == '"'.
size_t end_of_string(std::string_view s, size_t i) {
  for (++i; i < s.size(); ++i) {
    if (s[i] == '\\')
      ++i;
    else if (s[i] == '"')
      return i + 1;
  }
  return s.size();
}

// The byte range of the top-level member `key`'s string value in a JSON object already known to
// be valid. Lets the body be forwarded as is, with only the model name replaced.
bool find_top_level_string(std::string_view s, std::string_view key, size_t& start, size_t& end) {
  int depth = 0;
  bool expect_key = false;
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (c == '"') {
      size_t j = end_of_string(s, i);
      if (depth == 1 && expect_key) {
        std::string_view k = s.substr(i + 1, j - i - 2);
        size_t colon = skip_ws(s, j);
        size_t v = skip_ws(s, colon + 1);
        expect_key = false;
        if (k == key) {
          if (v >= s.size() || s[v] != '"') return false;
          start = v;
          end = end_of_string(s, v);
          return true;
        }
        i = colon + 1;
        continue;
      }
      i = j;
      continue;
    }
    if (c == '{' || c == '[') {
      ++depth;
      if (c == '{' && depth == 1) expect_key = true;
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_key = true;
    }
    ++i;
  }
  return false;
}

}  // namespace

// The body sent to an OpenAI-compatible upstream: the client's bytes with the model replaced and,
// for streams whose client did not ask for usage, usage requested (stripped again before the
// client sees it).
std::string with_model(std::string_view body, std::string_view model) {
  size_t start = 0, end = 0;
  if (find_top_level_string(body, "model", start, end)) {
    std::string out;
    out.reserve(body.size() + model.size());
    out.append(body.substr(0, start));
    out += json::quote(model);
    out.append(body.substr(end));
    return out;
  }
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return std::string(body);
  v.as_object()["model"] = model;
  return boost::json::serialize(v);
}

std::string openai_body(std::string_view original, ChatRequest& req,
                        std::string_view upstream_model) {
  size_t start = 0, end = 0;
  std::string out;
  out.reserve(original.size() + 64);
  if (find_top_level_string(original, "model", start, end)) {
    out.append(original.substr(0, start));
    out += json::quote(upstream_model);
    out.append(original.substr(end));
  } else {
    // The key was written with escapes ("mod\u0065l"), which the byte scan does not decode:
    // rebuilt from the document, whose keys are decoded.
    boost::json::object o = req.document(original);
    o["model"] = upstream_model;
    out = boost::json::serialize(o);
  }
  if (req.stream && !req.client_wants_usage) {
    if (!req.stream_options_present) {
      size_t brace = out.find('{');
      out.insert(brace + 1, "\"stream_options\":{\"include_usage\":true},");
    } else {
      // The client's stream_options (null, or without usage) would leave the gateway without the
      // usage it accounts with: rebuild the body with usage requested (rare; stripped again
      // before the client sees it).
      boost::json::object o = req.document(original);
      o["model"] = upstream_model;
      boost::json::value& so = o["stream_options"];
      if (!so.is_object()) so = boost::json::object();
      so.as_object()["include_usage"] = true;
      return boost::json::serialize(o);
    }
  }
  return out;
}

}  // namespace switchboard::gateway
