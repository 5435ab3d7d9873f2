// The Anthropic translation (upstream/translate.h), both ways: client requests become Anthropic
// bodies, Anthropic responses, stream events and errors become OpenAI's; and for Anthropic
// clients, their requests become OpenAI's and OpenAI answers and chunks become Anthropic's.
// Requests come from clients and everything else from an upstream; neither is trusted.
//
// One input feeds every direction: as a JSON document it is translated as a request and as a
// response; as an SSE stream (or, when it holds no event, as one event's data) it drives the
// stream translator; as bytes it is an error body. Beyond "no crash", the harness checks that
//   - everything produced is valid JSON of the documented shape: a request whose turns alternate
//     user/assistant with non-empty content, a positive max_tokens, temperature and top_p in
//     [0, 1]; a completion whose usage adds up; chunks of the stream's id and model;
//   - token counts are never negative and never overflow;
//   - a stream ends at most once, and nothing comes after message_stop;
//   - failures are Status values with a message, never exceptions.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "upstream/translate.h"

namespace {

namespace json = boost::json;
namespace up = switchboard::upstream;

constexpr std::string_view kUpstreamModel = "claude-fuzz";
constexpr std::string_view kClientModel = "auto";
constexpr std::string_view kResponseId = "chatcmpl-fuzz";

json::value parse_ok(std::string_view text) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec)
    std::fprintf(stderr, "not JSON (%s): %.*s\n", ec.message().c_str(),
                 static_cast<int>(std::min<size_t>(text.size(), 2000)), text.data());
  FUZZ_CHECK(!ec);
  return v;
}

// Boost.JSON 1.81 reads numbers beyond double's range as infinities and writes them back as
// `Infinity`, which is not JSON: documents holding one are checked for shape, not for syntax.
bool has_non_finite(const json::value& v) {
  switch (v.kind()) {
    case json::kind::double_:
      return !std::isfinite(v.get_double());
    case json::kind::array:
      for (const json::value& e : v.get_array())
        if (has_non_finite(e)) return true;
      return false;
    case json::kind::object:
      for (const auto& kv : v.get_object())
        if (has_non_finite(kv.value())) return true;
      return false;
    default:
      return false;
  }
}

bool in_unit_interval(const json::value* v) {
  return v != nullptr && v->is_number() && v->to_number<double>() >= 0 &&
         v->to_number<double>() <= 1;
}

void check_request(std::string_view body) {
  const json::value v = parse_ok(body);
  const json::object& o = v.as_object();
  FUZZ_CHECK(o.at("model").as_string() == kUpstreamModel);
  FUZZ_CHECK(o.at("max_tokens").as_int64() >= 1);
  const json::array& turns = o.at("messages").as_array();
  FUZZ_CHECK(!turns.empty());
  std::string_view previous;
  for (const json::value& t : turns) {
    const std::string_view role = t.at("role").as_string();
    FUZZ_CHECK(role == "user" || role == "assistant");
    FUZZ_CHECK(role != previous);  // Anthropic requires alternation
    previous = role;
    const json::array& content = t.at("content").as_array();
    FUZZ_CHECK(!content.empty());
    for (const json::value& block : content) {
      const std::string_view type = block.at("type").as_string();
      if (type == "text") FUZZ_CHECK(!block.at("text").as_string().empty());
      if (type == "tool_use") FUZZ_CHECK(block.at("input").is_object());
    }
  }
  if (const json::value* t = o.if_contains("temperature")) FUZZ_CHECK(in_unit_interval(t));
  if (const json::value* p = o.if_contains("top_p")) FUZZ_CHECK(in_unit_interval(p));
  if (const json::value* s = o.if_contains("system")) FUZZ_CHECK(!s->as_string().empty());
  if (const json::value* stops = o.if_contains("stop_sequences")) {
    FUZZ_CHECK(!stops->as_array().empty());
    for (const json::value& s : stops->as_array()) FUZZ_CHECK(!s.as_string().empty());
  }
}

void check_usage(const json::object& usage) {
  const int64_t prompt = usage.at("prompt_tokens").as_int64();
  const int64_t completion = usage.at("completion_tokens").as_int64();
  FUZZ_CHECK(prompt >= 0 && completion >= 0);
  FUZZ_CHECK(usage.at("total_tokens").as_int64() == prompt + completion);
}

void check_response(std::string_view body, bool check_syntax) {
  if (!check_syntax) return;
  const json::value v = parse_ok(body);
  const json::object& o = v.as_object();
  FUZZ_CHECK(o.at("model").as_string() == kClientModel);
  const json::object& choice = o.at("choices").as_array().at(0).as_object();
  const std::string_view finish = choice.at("finish_reason").as_string();
  FUZZ_CHECK(finish == "stop" || finish == "length" || finish == "tool_calls" ||
             finish == "content_filter");
  const json::object& message = choice.at("message").as_object();
  FUZZ_CHECK(message.at("role").as_string() == "assistant");
  if (message.at("content").is_null()) FUZZ_CHECK(!message.at("tool_calls").as_array().empty());
  check_usage(o.at("usage").as_object());
}

void check_error(std::string_view body) {
  const json::value v = parse_ok(body);
  const json::object& e = v.at("error").as_object();
  FUZZ_CHECK(e.at("message").is_string());
  const std::string_view type = e.at("type").as_string();
  FUZZ_CHECK(type == "invalid_request_error" || type == "authentication_error" ||
             type == "rate_limit_error" || type == "server_error");
  FUZZ_CHECK(e.at("code").is_string() || e.at("code").is_null());
}

void run_stream(std::string_view in, bool include_usage) {
  std::vector<up::SseEvent> events;
  up::SseParser sse;
  (void)sse.feed(in, events);
  if (events.empty()) events.push_back({.event = "", .data = std::string(in)});

  up::AnthropicStreamTranslator tr(kClientModel, kResponseId, 1700000000, include_usage);
  bool had_content = false;
  for (const up::SseEvent& ev : events) {
    const bool was_finished = tr.finished();
    std::vector<std::string> chunks;
    const switchboard::Status s = tr.feed(ev.event, ev.data, chunks);
    if (was_finished) FUZZ_CHECK(s.ok() && chunks.empty());
    FUZZ_CHECK(tr.usage().prompt_tokens >= 0 && tr.usage().completion_tokens >= 0);
    FUZZ_CHECK(tr.usage().total() >= tr.usage().prompt_tokens);
    FUZZ_CHECK(!had_content || tr.has_content());  // once content went out, it stays out
    had_content = tr.has_content();
    for (const std::string& c : chunks) {
      const json::value v = parse_ok(c);
      const json::object& o = v.as_object();
      FUZZ_CHECK(o.at("id").as_string() == kResponseId);
      FUZZ_CHECK(o.at("object").as_string() == "chat.completion.chunk");
      FUZZ_CHECK(o.at("model").as_string() == kClientModel);
      const json::array& choices = o.at("choices").as_array();
      if (choices.empty()) {
        // Only the usage chunk after message_stop has no choice.
        FUZZ_CHECK(include_usage && tr.finished());
        check_usage(o.at("usage").as_object());
      } else {
        FUZZ_CHECK(choices.at(0).at("delta").is_object());
      }
    }
    if (!s.ok()) {
      FUZZ_CHECK(!s.message().empty());
      break;  // the gateway abandons a stream at its first error
    }
  }
}

// Anthropic clients: what their request becomes is an OpenAI request the gateway validates.
void check_inbound_request(std::string_view body) {
  const json::value v = parse_ok(body);
  const json::object& o = v.as_object();
  FUZZ_CHECK(!o.at("model").as_string().empty());
  FUZZ_CHECK(o.at("max_tokens").as_int64() >= 1);
  const json::array& msgs = o.at("messages").as_array();
  FUZZ_CHECK(!msgs.empty());
  for (const json::value& m : msgs) {
    const std::string_view role = m.at("role").as_string();
    FUZZ_CHECK(role == "system" || role == "user" || role == "assistant" || role == "tool");
    if (role == "tool") FUZZ_CHECK(!m.at("tool_call_id").as_string().empty());
  }
}

void check_inbound_response(std::string_view body) {
  const json::value v = parse_ok(body);
  const json::object& o = v.as_object();
  FUZZ_CHECK(o.at("type").as_string() == "message");
  FUZZ_CHECK(!o.at("content").as_array().empty());
  for (const json::value& b : o.at("content").as_array())
    if (b.at("type").as_string() == "tool_use") FUZZ_CHECK(b.at("input").is_object());
  FUZZ_CHECK(o.at("usage").at("input_tokens").as_int64() >= 0);
  FUZZ_CHECK(o.at("usage").at("output_tokens").as_int64() >= 0);
}

// OpenAI chunks re-encoded for an Anthropic client: every event is JSON named by its type,
// message_start comes first and once, message_stop last and once.
void run_encoder(std::string_view in) {
  std::vector<up::SseEvent> events;
  up::SseParser sse;
  (void)sse.feed(in, events);
  if (events.empty()) events.push_back({.event = "", .data = std::string(in)});
  up::AnthropicStreamEncoder enc("msg_fuzz", kClientModel);
  std::string out;
  for (const up::SseEvent& ev : events) {
    const switchboard::Status s = enc.feed(ev.data, out);
    if (!s.ok()) {
      FUZZ_CHECK(!s.message().empty());
      break;
    }
  }
  enc.finish(out);
  std::vector<up::SseEvent> produced;
  up::SseParser back;
  FUZZ_CHECK(back.feed(out, produced).ok());
  FUZZ_CHECK(!back.has_partial_event());
  FUZZ_CHECK(produced.size() >= 3);
  FUZZ_CHECK(produced.front().event == "message_start");
  FUZZ_CHECK(produced.back().event == "message_stop");
  int starts = 0, stops = 0;
  for (const up::SseEvent& ev : produced) {
    const json::value v = parse_ok(ev.data);
    FUZZ_CHECK(v.at("type").as_string() == ev.event);
    starts += ev.event == "message_start";
    stops += ev.event == "message_stop";
  }
  FUZZ_CHECK(starts == 1 && stops == 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = switchboard::fuzz::as_view(data, size);

  check_error(up::anthropic_error_to_openai(in));
  // Upstream text in an error message: any bytes, always valid JSON out.
  check_error(up::openai_error_json(in, "server_error", in.substr(0, 8)));
  (void)up::classify_http(429, in);
  (void)up::classify_http(400, in);

  json::error_code ec;
  const json::value doc = json::parse(in, ec);
  if (!ec && doc.is_object()) {
    const bool finite = !has_non_finite(doc);
    auto req = up::openai_to_anthropic_request(doc.get_object(), kUpstreamModel, 1024);
    if (req.ok()) {
      if (finite) check_request(*req);
    } else {
      FUZZ_CHECK(!req.status().message().empty());
    }
    auto resp =
        up::anthropic_to_openai_response(doc.get_object(), kClientModel, kResponseId, 1700000000);
    if (resp.ok()) {
      check_response(*resp, finite);
    } else {
      FUZZ_CHECK(!resp.status().message().empty());
    }
    auto inbound = up::anthropic_to_openai_request(doc.get_object());
    if (inbound.ok()) {
      if (finite) check_inbound_request(*inbound);
    } else {
      FUZZ_CHECK(!inbound.status().message().empty());
    }
    auto message = up::openai_to_anthropic_response(doc.get_object(), kClientModel, "msg_fuzz");
    if (message.ok()) {
      if (finite) check_inbound_response(*message);
    } else {
      FUZZ_CHECK(!message.status().message().empty());
    }
  }
  run_encoder(in);
  run_stream(in, /*include_usage=*/(size & 1) == 0);
  return 0;
}
