// Chat request validation (gateway/chat_request.h): the first thing the gateway does with a
// client's body, in one pass of Boost.JSON's streaming parser with a hand-written handler.
//
// The oracle is the same body parsed into a document by Boost.JSON (duplicate keys: the last one
// counts, as the validator documents). The harness checks
//   - the validator calls a body invalid JSON exactly when the document parser does;
//   - whatever it accepts satisfies, read from the document, every rule it documents (model a
//     non-empty string, messages a non-empty array of objects with a known role and a content of
//     the right kind, stream a boolean, token limits >= 1, temperature and top_p in range, ...);
//   - what it reports (model, stream, max_tokens, include_usage, the prompt token estimate)
//     equals what the document says;
//   - `document()` gives that same document.
// Rules only ever added to the validator (e.g. on the model's name) keep these checks true.
#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "gateway/chat_request.h"
#include "routing/routing.h"

namespace {

namespace json = boost::json;

const json::value* get(const json::object& o, std::string_view key) {
  return o.if_contains(key);
}

bool absent_or_null(const json::value* v) {
  return v == nullptr || v->is_null();
}

// The prompt estimate as the validator documents it, from the document: per message, 4 plus
// the content's text length / 4 (text parts of an array, 765 per image part).
int64_t expected_prompt_tokens(const json::array& messages) {
  int64_t total = 0;
  for (const json::value& m : messages) {
    const json::value* content = get(m.as_object(), "content");
    if (content == nullptr) continue;
    int64_t tokens = 0;
    if (content->is_string()) {
      tokens = switchboard::routing::estimate_tokens(content->get_string().size());
    } else if (content->is_array()) {
      for (const json::value& part : content->get_array()) {
        const json::object* p = part.if_object();
        if (p == nullptr) continue;
        const json::value* text = get(*p, "text");
        if (text != nullptr && text->is_string()) {
          tokens += switchboard::routing::estimate_tokens(text->get_string().size());
        } else if (p->contains("image_url")) {
          tokens += 765;
        }
      }
    }
    total += tokens + 4;
  }
  return total;
}

std::optional<double> number(const json::value* v) {
  if (v == nullptr || !v->is_number()) return std::nullopt;
  return v->to_number<double>();
}

void check_accepted(const json::object& doc, const switchboard::gateway::ChatRequest& req) {
  const json::value* model = get(doc, "model");
  FUZZ_CHECK(model != nullptr && model->is_string() && !model->get_string().empty());
  FUZZ_CHECK(req.model == std::string_view(model->get_string()));

  const json::value* messages = get(doc, "messages");
  FUZZ_CHECK(messages != nullptr && messages->is_array() && !messages->get_array().empty());
  static constexpr std::string_view kRoles[] = {"system",    "developer", "user",
                                                "assistant", "tool",      "function"};
  for (const json::value& m : messages->get_array()) {
    FUZZ_CHECK(m.is_object());
    const json::value* role = get(m.get_object(), "role");
    FUZZ_CHECK(role != nullptr && role->is_string());
    FUZZ_CHECK(std::find(std::begin(kRoles), std::end(kRoles),
                         std::string_view(role->get_string())) != std::end(kRoles));
    const json::value* content = get(m.get_object(), "content");
    FUZZ_CHECK(content == nullptr || content->is_null() || content->is_string() ||
               content->is_array());
  }
  FUZZ_CHECK(req.prompt_tokens == expected_prompt_tokens(messages->get_array()));
  FUZZ_CHECK(req.prompt_tokens >= 0);

  const json::value* stream = get(doc, "stream");
  FUZZ_CHECK(stream == nullptr || stream->is_bool());
  FUZZ_CHECK(req.stream == (stream != nullptr && stream->get_bool()));

  // max_completion_tokens, when present and not null, wins over max_tokens.
  int64_t max_tokens = 0;
  for (std::string_view key : {"max_tokens", "max_completion_tokens"}) {
    const json::value* v = get(doc, key);
    if (absent_or_null(v)) continue;
    FUZZ_CHECK(v->is_int64() || v->is_uint64());
    const int64_t n = v->is_int64() ? v->get_int64() : INT64_MAX;
    FUZZ_CHECK(n >= 1);
    max_tokens = std::min<int64_t>(n, int64_t{1} << 40);
  }
  FUZZ_CHECK(req.max_tokens == max_tokens);

  if (const json::value* t = get(doc, "temperature"); !absent_or_null(t)) {
    FUZZ_CHECK(number(t) && *number(t) >= 0 && *number(t) <= 2);
  }
  if (const json::value* p = get(doc, "top_p"); !absent_or_null(p)) {
    FUZZ_CHECK(number(p) && *number(p) >= 0 && *number(p) <= 1);
  }
  if (const json::value* n = get(doc, "n"); !absent_or_null(n)) {
    FUZZ_CHECK(n->is_int64() && n->get_int64() >= 1);
  }

  const json::value* so = get(doc, "stream_options");
  FUZZ_CHECK(req.stream_options_present == (so != nullptr));
  FUZZ_CHECK(absent_or_null(so) || so->is_object());
  bool wants_usage = false;
  if (so != nullptr && so->is_object()) {
    const json::value* iu = get(so->get_object(), "include_usage");
    wants_usage = iu != nullptr && iu->is_bool() && iu->get_bool();
  }
  FUZZ_CHECK(req.client_wants_usage == wants_usage);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body = switchboard::fuzz::as_view(data, size);
  switchboard::gateway::ChatRequest req;
  const std::optional<std::string> error = switchboard::gateway::validate_chat_request(body, req);

  json::error_code ec;
  const json::value doc = json::parse(body, ec);
  const bool invalid_json = error && error->starts_with("request body is not valid JSON");
  FUZZ_CHECK(invalid_json == bool(ec));
  if (error) {
    FUZZ_CHECK(!error->empty());
    if (!ec && !doc.is_object()) FUZZ_CHECK(*error == "request body must be a JSON object");
    return 0;
  }
  FUZZ_CHECK(doc.is_object());
  check_accepted(doc.get_object(), req);
  // The document the Anthropic translation gets is the body's.
  FUZZ_CHECK(req.document(body) == doc.get_object());
  return 0;
}
