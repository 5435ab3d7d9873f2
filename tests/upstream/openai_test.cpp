#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"
#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

TEST(ExtractOpenAiUsage, FindsTopLevelUsageOnly) {
  EXPECT_EQ(
      extract_openai_usage(
          R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\": {\"prompt_tokens\": 99} field"},"finish_reason":"stop"}],
                    "usage" : {"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":0}}})"),
      (TokenUsage{12, 34}));
  // A nested "usage" (in a tool's arguments object, say) is not the response's usage.
  EXPECT_EQ(extract_openai_usage(
                R"({"choices":[{"x":{"usage":{"prompt_tokens":5,"completion_tokens":6}}}]})"),
            std::nullopt);
  EXPECT_EQ(extract_openai_usage(R"({"choices":[],"usage":null})"), std::nullopt);
  // Two top-level usages: the last counts, as for a JSON parser.
  EXPECT_EQ(
      extract_openai_usage(R"({"usage":{"prompt_tokens":1,"completion_tokens":1},"choices":[],)"
                           R"("usage":{"prompt_tokens":8,"completion_tokens":9}})"),
      (TokenUsage{8, 9}));
  EXPECT_EQ(extract_openai_usage(R"({"usage":{"prompt_tokens":7}})"), (TokenUsage{7, 0}));
  EXPECT_EQ(extract_openai_usage(""), std::nullopt);
  EXPECT_EQ(extract_openai_usage("not json"), std::nullopt);
  EXPECT_EQ(extract_openai_usage(R"({"usage":{"prompt_tokens":1,"completion_tokens":2})"),
            std::nullopt);  // truncated
  EXPECT_EQ(extract_openai_usage(R"([{"usage":{"prompt_tokens":1}}])"), std::nullopt);
}

TEST(ExtractOpenAiUsage, ReadsCountsAsJsonNumbers) {
  auto usage = [](std::string_view u) {
    return extract_openai_usage(std::string(R"({"choices":[],"usage":)") + std::string(u) + "}");
  };
  EXPECT_EQ(usage(R"({"prompt_tokens":3,"completion_tokens":4})"), (TokenUsage{3, 4}));
  EXPECT_EQ(usage(R"({ "completion_tokens" : 4 , "prompt_tokens" : 3 })"), (TokenUsage{3, 4}));
  // Fractions and exponents are truncated, as a cast of the number would.
  EXPECT_EQ(usage(R"({"prompt_tokens":12.9,"completion_tokens":1e3})"), (TokenUsage{12, 1000}));
  EXPECT_EQ(usage(R"({"prompt_tokens":-0,"completion_tokens":2E+1})"), (TokenUsage{0, 20}));
  // Bounded to [0, 2^40]: sums and costs of counts cannot overflow, whatever an upstream says.
  const auto big = usage(R"({"prompt_tokens":99999999999999999999,"completion_tokens":1e400})");
  EXPECT_EQ(big, (TokenUsage{int64_t(1) << 40, int64_t(1) << 40}));
  ASSERT_TRUE(big);
  EXPECT_EQ(big->total(), int64_t(1) << 41);
  EXPECT_EQ(usage(R"({"prompt_tokens":9223372036854775807,"completion_tokens":-5})"),
            (TokenUsage{int64_t(1) << 40, 0}));
  EXPECT_EQ(usage(R"({"prompt_tokens":-1e400,"completion_tokens":3})"), (TokenUsage{0, 3}));
  // The last of repeated keys counts, even when it is not a number.
  EXPECT_EQ(usage(R"({"prompt_tokens":1,"prompt_tokens":5})"), (TokenUsage{5, 0}));
  EXPECT_EQ(usage(R"({"prompt_tokens":5,"completion_tokens":2,"prompt_tokens":null})"),
            (TokenUsage{0, 2}));
  // Nested details and other members are skipped.
  EXPECT_EQ(usage(R"({"prompt_tokens_details":{"cached_tokens":9,"x":[1,{"prompt_tokens":8}]},)"
                  R"("note":"a \"quoted\" }","flag":true,"n":null,"completion_tokens":2})"),
            (TokenUsage{0, 2}));
  // A count that is not a number is ignored; with neither count there is no usage.
  EXPECT_EQ(usage(R"({"prompt_tokens":null,"completion_tokens":7})"), (TokenUsage{0, 7}));
  EXPECT_EQ(usage(R"({"prompt_tokens":"12"})"), std::nullopt);
  EXPECT_EQ(usage(R"({"prompt_tokens":"12","completion_tokens":7})"), (TokenUsage{0, 7}));
  EXPECT_EQ(usage(R"({"prompt_tokens":{"n":1},"completion_tokens":7})"), (TokenUsage{0, 7}));
  EXPECT_EQ(usage(R"({"prompt_tokens":[1],"completion_tokens":7})"), (TokenUsage{0, 7}));
  EXPECT_EQ(usage(R"({"total_tokens":12})"), std::nullopt);
  EXPECT_EQ(usage(R"({})"), std::nullopt);
  // Not JSON: no usage rather than a guess.
  for (std::string_view bad :
       {R"({"prompt_tokens":012})", R"({"prompt_tokens":1.})", R"({"prompt_tokens":.5})",
        R"({"prompt_tokens":1e})", R"({"prompt_tokens":+1})", R"({"prompt_tokens":0x10})",
        R"({"prompt_tokens":1,"flag":tru})", R"({"prompt_tokens":1,})", R"({"prompt_tokens" 1})",
        R"([1,2])", R"("usage")", R"(12)"}) {
    EXPECT_EQ(usage(bad), std::nullopt) << bad;
  }
}

TEST(InspectOpenAiChunk, Classifies) {
  EXPECT_TRUE(inspect_openai_chunk("[DONE]").done);
  EXPECT_TRUE(inspect_openai_chunk(" [DONE]\n").done);

  auto role = inspect_openai_chunk(
      R"({"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})");
  EXPECT_FALSE(role.has_content);
  EXPECT_FALSE(role.done);
  EXPECT_FALSE(role.malformed);
  EXPECT_FALSE(role.usage);

  EXPECT_TRUE(inspect_openai_chunk(
                  R"({"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]})")
                  .has_content);
  EXPECT_TRUE(
      inspect_openai_chunk(
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"f","arguments":""}}]},"finish_reason":null}]})")
          .has_content);
  EXPECT_TRUE(inspect_openai_chunk(R"({"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})")
                  .has_content);
  // The word "content" inside a string is not content.
  EXPECT_FALSE(
      inspect_openai_chunk(
          R"({"id":"\"content\":\"x","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]})")
          .has_content);

  // Content already flowed: a plain delta is not walked, usage, errors and content beside usage
  // still are.
  const std::string delta = R"({"choices":[{"index":0,"delta":{"content":"Hi"}}]})";
  EXPECT_FALSE(inspect_openai_chunk(delta, false).has_content);
  EXPECT_FALSE(inspect_openai_chunk(delta, false).malformed);
  auto late = inspect_openai_chunk(
      R"({"choices":[{"index":0,"delta":{"content":"!"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}})",
      false);
  EXPECT_TRUE(late.has_content);
  EXPECT_EQ(late.usage, (TokenUsage{1, 2}));
  EXPECT_FALSE(
      inspect_openai_chunk(R"({"choices":[],"usage":{"prompt_tokens":1}})", false).has_content);
  EXPECT_TRUE(inspect_openai_chunk(R"({"error":{"message":"overloaded"}})", false).is_error);
  EXPECT_TRUE(inspect_openai_chunk("[DONE]", false).done);
  // The words are found wherever the quotes fall (the scan goes sixteen bytes at a time).
  for (size_t pad = 0; pad < 40; ++pad) {
    const std::string id = "\"id\":\"" + std::string(pad, 'x') + "\",";
    auto u = inspect_openai_chunk(
        "{" + id + R"("choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}})", false);
    ASSERT_EQ(u.usage, (TokenUsage{3, 4})) << pad;
    ASSERT_TRUE(inspect_openai_chunk("{" + id + R"("error":{"message":"x"}})", false).is_error)
        << pad;
    // Broken chunks: walked (and found malformed) only when they name usage or an error.
    ASSERT_TRUE(inspect_openai_chunk("{" + id + R"("choices":[},"usage":{}})", false).malformed)
        << pad;
    ASSERT_FALSE(inspect_openai_chunk("{" + id + R"("choices":[},"usages":{}})", false).malformed)
        << pad;
  }

  auto usage = inspect_openai_chunk(
      R"({"id":"x","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}})");
  EXPECT_FALSE(usage.has_content);
  ASSERT_TRUE(usage.usage);
  EXPECT_EQ(*usage.usage, (TokenUsage{10, 20}));
  EXPECT_FALSE(
      inspect_openai_chunk(R"({"choices":[{"delta":{"content":"a"}}],"usage":null})").usage);

  EXPECT_TRUE(
      inspect_openai_chunk(R"({"error":{"message":"boom","type":"server_error"}})").is_error);
  EXPECT_TRUE(inspect_openai_chunk("{\"choices\":[").malformed);
  EXPECT_TRUE(inspect_openai_chunk("hello").malformed);
  EXPECT_TRUE(inspect_openai_chunk("").malformed);
  EXPECT_TRUE(inspect_openai_chunk(R"({"choices":[}])").malformed);
}

}  // namespace
}  // namespace switchboard::upstream

namespace switchboard::upstream {
namespace {

// The usage of generated completions (random content full of quotes, backslashes, brackets and
// the word "usage"; usage last, elsewhere, nested or absent; random whitespace; cut short) against
// a reference that parses the whole body.
std::optional<TokenUsage> reference_usage(std::string_view body) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(body, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const boost::json::value* u = v.get_object().if_contains("usage");
  if (!u || !u->is_object()) return std::nullopt;
  auto count = [&](std::string_view k) -> std::optional<int64_t> {
    const boost::json::value* n = u->get_object().if_contains(k);
    if (!n) return std::nullopt;
    const double kMax = double(int64_t(1) << 40);  // counts are bounded to [0, 2^40]
    if (n->is_int64()) return static_cast<int64_t>(std::clamp(double(n->get_int64()), 0.0, kMax));
    if (n->is_uint64()) return static_cast<int64_t>(std::min(double(n->get_uint64()), kMax));
    if (n->is_double()) return static_cast<int64_t>(std::clamp(n->get_double(), 0.0, kMax));
    return std::nullopt;
  };
  auto p = count("prompt_tokens"), c = count("completion_tokens");
  if (!p && !c) return std::nullopt;
  return TokenUsage{p.value_or(0), c.value_or(0)};
}

TEST(ExtractOpenAiUsage, MatchesAWholeDocumentParse) {
  std::mt19937 rng(20261128);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto ws = [&] {
    static const char* kWs[] = {"", "", "", " ", "\n", "\r\n  ", "\t"};
    return std::string(kWs[pick(7)]);
  };
  auto text = [&] {
    static const char* kBits[] = {
        "a",  "usage", "\\\"", "\\\\",         "}", "{",       "]",
        "[",  ",",     ":",    "\\n",          " ", "\\u00e9", "\\\"usage\\\":{",
        "}}", "\\/",   "é",    "prompt_tokens"};
    std::string t;
    for (int i = pick(12); i > 0; --i) t += kBits[pick(18)];
    return "\"" + t + "\"";
  };
  auto usage = [&] {
    std::string u = "{" + ws();
    std::vector<std::string> members;
    if (pick(5)) members.push_back("\"prompt_tokens\":" + ws() + std::to_string(pick(100000)));
    if (pick(5)) members.push_back("\"completion_tokens\":" + ws() + std::to_string(pick(5000)));
    if (pick(2)) members.push_back("\"total_tokens\":" + std::to_string(pick(100)));
    if (pick(2))
      members.push_back("\"prompt_tokens_details\":{\"cached_tokens\":0,\"note\":" + text() + "}");
    std::shuffle(members.begin(), members.end(), rng);
    for (size_t i = 0; i < members.size(); ++i) u += (i ? "," + ws() : "") + members[i];
    return u + ws() + "}";
  };
  int with_usage = 0, usage_last = 0;
  for (int n = 0; n < 20000; ++n) {
    std::vector<std::string> members = {
        "\"id\":" + ws() + text(), "\"object\":\"chat.completion\"",
        "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":" + text() +
            (pick(4) == 0 ? ",\"usage\":" + usage() : "") + "}," + ws() +
            "\"finish_reason\":\"stop\"}]"};
    const int where = pick(10);  // 0: no usage, 1-2: somewhere, else last
    if (where == 1 || where == 2) {
      members.insert(members.begin() + pick(3), "\"usage\":" + ws() + usage());
    } else if (where > 2) {
      members.push_back("\"usage\"" + ws() + ":" + ws() + usage());
      ++usage_last;
    }
    std::string body = ws() + "{" + ws();
    for (size_t i = 0; i < members.size(); ++i) body += (i ? ws() + "," + ws() : "") + members[i];
    body += ws() + "}" + ws();
    const auto want = reference_usage(body);
    ASSERT_EQ(extract_openai_usage(body), want) << body;
    if (want) ++with_usage;
    // Cut short (a connection that ended early): never a usage the whole body would not give.
    const size_t cut = static_cast<size_t>(pick(static_cast<int>(body.size())));
    const std::string_view prefix(body.data(), cut);
    ASSERT_EQ(extract_openai_usage(prefix), reference_usage(prefix)) << prefix;
  }
  EXPECT_GT(with_usage, 10000);
  EXPECT_GT(usage_last, 12000);
}

// What a chunk's choices carry, decided on a whole-document parse (duplicate keys: the last
// one counts): the reference for the structural walk of inspect_openai_chunk.
bool reference_has_content(std::string_view chunk) {
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(chunk, ec);
  if (ec || !v.is_object()) return false;
  const boost::json::value* choices = v.get_object().if_contains("choices");
  if (!choices || !choices->is_array()) return false;
  auto text = [](const boost::json::object& o, std::string_view k) {
    const boost::json::value* t = o.if_contains(k);
    return t && t->is_string() && !t->get_string().empty();
  };
  for (const boost::json::value& c : choices->get_array()) {
    const boost::json::object* choice = c.if_object();
    if (!choice) continue;
    if (const auto* fr = choice->if_contains("finish_reason"); fr && fr->is_string()) return true;
    const boost::json::value* d = choice->if_contains("delta");
    const boost::json::object* delta = d ? d->if_object() : nullptr;
    if (!delta) continue;
    if (text(*delta, "content") || text(*delta, "refusal") || text(*delta, "reasoning_content"))
      return true;
    for (std::string_view key : {"tool_calls", "function_call"}) {
      const boost::json::value* t = delta->if_contains(key);
      if (t && ((t->is_array() && !t->get_array().empty()) || t->is_object())) return true;
    }
  }
  return false;
}

TEST(InspectOpenAiChunk, ContentMatchesAWholeDocumentParse) {
  std::mt19937 rng(20261206);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  auto ws = [&] {
    static const char* kWs[] = {"", "", "", " ", "\n", "\t "};
    return std::string(kWs[pick(6)]);
  };
  auto text = [&] {
    static const char* kBits[] = {"a",       "\\\"",
                                  "\\\\",    "}",
                                  "{",       "]",
                                  "[",       ",",
                                  ":",       " ",
                                  "\\u00e9", "\\\"content\\\":\\\"x",
                                  "é",       "finish_reason",
                                  "\\n",     "\\/"};
    std::string t;
    for (int i = pick(6); i > 0; --i) t += kBits[pick(16)];
    return "\"" + t + "\"";
  };
  auto value = [&]() -> std::string {
    switch (pick(9)) {
      case 0:
        return "null";
      case 1:
        return "\"\"";
      case 2:
        return text();
      case 3:
        return "[]";
      case 4:
        return "[" + ws() + "]";
      case 5:
        return "[{\"index\":0,\"id\":" + text() + ",\"function\":{\"arguments\":" + text() + "}}]";
      case 6:
        return "{\"name\":" + text() + "}";
      case 7:
        return "{}";
      default:
        return std::to_string(pick(100));
    }
  };
  auto object = [&](std::vector<std::string> members) {
    std::shuffle(members.begin(), members.end(), rng);
    std::string o = "{" + ws();
    for (size_t i = 0; i < members.size(); ++i) o += (i ? "," + ws() : "") + members[i];
    return o + ws() + "}";
  };
  static const char* kDeltaKeys[] = {
      "content", "refusal", "reasoning_content", "tool_calls", "function_call", "role", "other"};
  int with_content = 0;
  for (int n = 0; n < 20000; ++n) {
    std::string choices = "[" + ws();
    const int count = pick(4);
    for (int c = 0; c < count; ++c) {
      std::vector<std::string> delta;
      for (int k = pick(4); k > 0; --k)  // keys may repeat: the last one counts
        delta.push_back("\"" + std::string(kDeltaKeys[pick(7)]) + "\":" + ws() + value());
      std::vector<std::string> choice = {"\"index\":" + std::to_string(c)};
      if (pick(6)) choice.push_back("\"delta\":" + (pick(10) ? object(delta) : value()));
      if (pick(2))
        choice.push_back("\"finish_reason\":" + (pick(3) ? std::string("null") : value()));
      choices += (c ? "," + ws() : "") + (pick(20) ? object(choice) : value());
    }
    choices += ws() + "]";
    const std::string chunk = object({"\"id\":" + text(), "\"choices\":" + ws() + choices,
                                      "\"object\":\"chat.completion.chunk\""});
    const bool want = reference_has_content(chunk);
    ASSERT_EQ(inspect_openai_chunk(chunk).has_content, want) << chunk;
    with_content += want;
  }
  EXPECT_GT(with_content, 3000);
  EXPECT_LT(with_content, 15000);
}

// Every prefix of valid bodies and stream events (what a cut connection delivers) and some
// garbage: every function answers with a value or an error, never a crash.
TEST(Robustness, TruncatedAndGarbageInputs) {
  const std::string body =
      R"({"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"a\"b\\"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}})";
  for (size_t i = 0; i < body.size(); ++i) {
    std::string_view prefix(body.data(), i);
    EXPECT_EQ(extract_openai_usage(prefix), std::nullopt) << i;
    OpenAiChunkInfo info = inspect_openai_chunk(prefix);
    EXPECT_TRUE(info.malformed) << i;
  }
  const std::string event =
      R"({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}})";
  for (size_t i = 0; i < event.size(); ++i) {
    AnthropicStreamTranslator t("m", "id", 1, true);
    std::vector<std::string> out;
    Status s = t.feed("content_block_start", std::string_view(event.data(), i), out);
    EXPECT_FALSE(s.ok()) << i;
  }
  const char* garbage[] = {"\xFF\xFE", "{\"", "[[[[[[[[",          "{\"a\":}",           "nul",
                           "\"str\"",  "12",  "{\"usage\":[1,2]}", "{\"choices\":\"x\"}"};
  for (const char* g : garbage) {
    (void)extract_openai_usage(g);
    (void)inspect_openai_chunk(g);
    AnthropicStreamTranslator t("m", "id", 1, true);
    std::vector<std::string> out;
    (void)t.feed("message_delta", g, out);
  }
  std::string deep(10000, '[');
  (void)extract_openai_usage("{\"usage\":" + deep + "}");
  (void)inspect_openai_chunk("{\"choices\":" + deep);
  AnthropicStreamTranslator t("m", "id", 1, true);
  std::vector<std::string> out;
  EXPECT_FALSE(t.feed("message_start", deep, out).ok());
}

}  // namespace
}  // namespace switchboard::upstream
