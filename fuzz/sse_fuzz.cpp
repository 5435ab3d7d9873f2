// Server-Sent Events and OpenAI stream inspection (upstream/translate.h): every streamed byte an
// upstream sends goes through SseParser, every `data:` payload through inspect_openai_chunk, and
// every non-stream completion through extract_openai_usage.
//
// The harness checks that
//   - the parser yields the same events, last id and partial state whether the body arrives whole,
//     byte by byte or in random slices (the parser promises exactly the events of the whole body);
//   - a bounded parser fails once an event outgrows its budget, stays failed, and yields only a
//     prefix of the unbounded parser's events, none beyond the budget;
//   - append_sse_event round-trips: what it writes parses back to the one event it was given;
//   - the relay's fast path (feed_plain) takes a body only when it is whole one-line events, and
//     then gives views of exactly the events feed() gives, each written back as its own bytes;
//   - the cheap scanners agree with a real JSON parse wherever the input is valid JSON (keys
//     written with \u escapes excepted, as documented): the usage found, whether a chunk carries
//     content, an error or usage, and that a JSON object is never called malformed.
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <cmath>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "upstream/translate.h"

namespace {

namespace json = boost::json;
namespace up = switchboard::upstream;
using switchboard::fuzz::Slicer;

constexpr size_t kUnbounded = size_t{1} << 30;
constexpr size_t kSmallBudget = 64;

struct Parsed {
  std::vector<up::SseEvent> events;
  std::string last_id;
  bool partial = false;
  bool failed = false;
};

Parsed parse_slices(const std::vector<std::string_view>& slices, size_t budget) {
  Parsed p;
  up::SseParser parser(budget);
  for (std::string_view s : slices) {
    const switchboard::Status st = parser.feed(s, p.events);
    if (!st.ok()) {
      FUZZ_CHECK(parser.failed() && !s.empty());
      // Failed for good: every later feed reports it again and yields nothing.
      std::vector<up::SseEvent> more;
      FUZZ_CHECK(!parser.feed("data: x\n\n", more).ok() && more.empty());
      p.failed = true;
      break;
    }
  }
  p.last_id = parser.last_event_id();
  p.partial = parser.has_partial_event();
  return p;
}

bool same(const Parsed& a, const Parsed& b) {
  return a.events == b.events && a.last_id == b.last_id && a.partial == b.partial;
}

std::string normalize_newlines(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out += '\n';
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

void check_round_trip(std::string_view data, std::string_view event) {
  std::vector<up::SseEvent> out;
  up::SseParser parser(kUnbounded);
  FUZZ_CHECK(parser.feed(up::format_sse_event(data, event), out).ok());
  FUZZ_CHECK(out.size() == 1 && !parser.has_partial_event());
  FUZZ_CHECK(out[0].data == normalize_newlines(data));
  std::string name;
  for (char c : event)
    if (c != '\r' && c != '\n') name += c;
  FUZZ_CHECK(out[0].event == name);
}

// ---- the scanners against a document ---------------------------------------------------------

struct Count {
  int64_t value = 0;
  bool approximate = false;  // read through a double, whose last bit Boost.JSON may round apart
};

std::optional<Count> count_of(const json::value* v) {
  constexpr int64_t kMax = int64_t{1} << 40;
  if (v == nullptr) return std::nullopt;
  if (v->is_int64()) return Count{std::clamp<int64_t>(v->get_int64(), 0, kMax)};
  if (v->is_uint64()) return Count{kMax};
  if (v->is_double()) {
    const double d = v->get_double();
    if (!(d > 0)) return Count{0, true};
    if (!(d < static_cast<double>(kMax))) return Count{kMax, true};
    return Count{static_cast<int64_t>(d), true};
  }
  return std::nullopt;
}

struct ExpectedUsage {
  std::optional<Count> prompt, completion;
};

std::optional<ExpectedUsage> expected_usage(const json::object& o) {
  const json::value* u = o.if_contains("usage");
  if (u == nullptr || !u->is_object()) return std::nullopt;
  ExpectedUsage e{count_of(u->get_object().if_contains("prompt_tokens")),
                  count_of(u->get_object().if_contains("completion_tokens"))};
  if (!e.prompt && !e.completion) return std::nullopt;
  return e;
}

bool matches(int64_t got, const std::optional<Count>& want) {
  const Count c = want.value_or(Count{});
  return c.approximate ? std::llabs(got - c.value) <= 1 : got == c.value;
}

void check_usage(const std::optional<up::TokenUsage>& got,
                 const std::optional<ExpectedUsage>& want) {
  FUZZ_CHECK(got.has_value() == want.has_value());
  if (!got) return;
  FUZZ_CHECK(matches(got->prompt_tokens, want->prompt));
  FUZZ_CHECK(matches(got->completion_tokens, want->completion));
}

bool non_empty_string(const json::object& o, std::string_view key) {
  const json::value* v = o.if_contains(key);
  return v != nullptr && v->is_string() && !v->get_string().empty();
}

bool expected_has_content(const json::object& o) {
  const json::value* choices = o.if_contains("choices");
  if (choices == nullptr || !choices->is_array()) return false;
  for (const json::value& c : choices->get_array()) {
    const json::object* choice = c.if_object();
    if (choice == nullptr) continue;
    const json::value* fr = choice->if_contains("finish_reason");
    if (fr != nullptr && fr->is_string()) return true;
    const json::value* d = choice->if_contains("delta");
    if (d == nullptr || !d->is_object()) continue;
    const json::object& delta = d->get_object();
    if (non_empty_string(delta, "content") || non_empty_string(delta, "refusal") ||
        non_empty_string(delta, "reasoning_content"))
      return true;
    for (std::string_view key : {"tool_calls", "function_call"}) {
      const json::value* t = delta.if_contains(key);
      if (t != nullptr && ((t->is_array() && !t->get_array().empty()) || t->is_object()))
        return true;
    }
  }
  return false;
}

void check_scanners(std::string_view text) {
  const up::OpenAiChunkInfo info = up::inspect_openai_chunk(text);
  const std::optional<up::TokenUsage> usage = up::extract_openai_usage(text);
  for (const auto* u : {&info.usage, &usage}) {
    if (*u) {
      FUZZ_CHECK((*u)->prompt_tokens >= 0 && (*u)->prompt_tokens <= (int64_t{1} << 40));
      FUZZ_CHECK((*u)->completion_tokens >= 0 && (*u)->completion_tokens <= (int64_t{1} << 40));
    }
  }
  if (info.done) FUZZ_CHECK(!info.malformed && !info.has_content && !info.usage);

  json::error_code ec;
  const json::value doc = json::parse(text, ec);
  if (ec) return;  // the scanners are lenient with what is not JSON; that is allowed
  if (!doc.is_object()) {
    FUZZ_CHECK(info.malformed && !usage);
    return;
  }
  // Keys written with escapes are documented as not recognised.
  if (text.find("\\u") != std::string_view::npos) return;
  const json::object& o = doc.get_object();
  FUZZ_CHECK(!info.malformed && !info.done);
  check_usage(usage, expected_usage(o));
  check_usage(info.usage, expected_usage(o));
  FUZZ_CHECK(info.has_content == expected_has_content(o));
  const json::value* err = o.if_contains("error");
  if (err != nullptr && err->is_object()) FUZZ_CHECK(info.is_error);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = switchboard::fuzz::as_view(data, size);
  Slicer slicer(in);

  const Parsed whole = parse_slices({in}, kUnbounded);
  FUZZ_CHECK(!whole.failed);
  std::vector<std::string_view> bytes;
  for (size_t i = 0; i < in.size(); ++i) bytes.push_back(in.substr(i, 1));
  FUZZ_CHECK(same(whole, parse_slices(bytes, kUnbounded)));
  const std::vector<std::string_view> slices = slicer.slices(in, 23);
  FUZZ_CHECK(same(whole, parse_slices(slices, kUnbounded)));

  const Parsed bounded = parse_slices(slices, kSmallBudget);
  FUZZ_CHECK(bounded.events.size() <= whole.events.size());
  for (size_t i = 0; i < bounded.events.size(); ++i) {
    FUZZ_CHECK(bounded.events[i] == whole.events[i]);
    FUZZ_CHECK(bounded.events[i].data.size() < kSmallBudget);
  }
  if (!bounded.failed) FUZZ_CHECK(same(whole, bounded));
  for (const up::SseEvent& ev : whole.events) {
    // An event that outgrew the budget must have stopped the bounded parser by then.
    if (ev.data.size() >= kSmallBudget) FUZZ_CHECK(bounded.failed);
  }

  std::vector<up::SseEventView> views;
  up::SseParser fast;
  if (fast.feed_plain(in, views)) {
    FUZZ_CHECK(!whole.partial && views.size() == whole.events.size());
    std::string as_came;
    for (size_t i = 0; i < views.size(); ++i) {
      FUZZ_CHECK(views[i].data == whole.events[i].data && whole.events[i].event.empty());
      std::string written;
      up::append_sse_event(written, views[i].data);
      FUZZ_CHECK(written == views[i].raw);
      as_came += views[i].raw;
    }
    FUZZ_CHECK(as_came == in);
  } else {
    FUZZ_CHECK(views.empty());
  }

  for (const up::SseEvent& ev : whole.events) {
    check_round_trip(ev.data, ev.event);
    check_scanners(ev.data);
  }
  check_round_trip(in, in.substr(0, 16));
  check_scanners(in);
  return 0;
}
