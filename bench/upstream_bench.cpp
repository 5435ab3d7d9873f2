// Upstream hot paths: SSE parsing, stream chunk inspection and translation, usage extraction.
// Run: switchboard_bench --benchmark_filter=Upstream
#include <benchmark/benchmark.h>

#include <algorithm>
#include <boost/json.hpp>
#include <string>
#include <vector>

#include "upstream/translate.h"

namespace switchboard::upstream {
namespace {

// A typical OpenAI text stream: one role chunk, many short text deltas, a finish and usage.
std::string openai_stream(int deltas) {
  std::string body;
  const std::string prefix =
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":)";
  body +=
      "data: " + prefix + R"({"role":"assistant","content":""},"finish_reason":null}]})" + "\n\n";
  for (int i = 0; i < deltas; ++i) {
    body += "data: " + prefix + R"({"content":" token"},"logprobs":null,"finish_reason":null}]})" +
            "\n\n";
  }
  body += "data: " + prefix + R"({},"finish_reason":"stop"}]})" + "\n\n";
  body += "data: [DONE]\n\n";
  return body;
}

void BM_UpstreamSseParse(benchmark::State& state) {
  std::string body = openai_stream(200);
  const size_t chunk = static_cast<size_t>(state.range(0));
  std::vector<SseEvent> events;
  events.reserve(256);
  for (auto _ : state) {
    SseParser p;
    events.clear();
    for (size_t pos = 0; pos < body.size(); pos += chunk) {
      Status s = p.feed(std::string_view(body).substr(pos, chunk), events);
      benchmark::DoNotOptimize(s);
    }
    benchmark::DoNotOptimize(events.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_UpstreamSseParse)->Arg(64)->Arg(1460)->Arg(16384);

// The relay's fast path over the same stream: whole one-line events as views (a read that ends
// inside an event goes to feed() instead, so the chunks here end at event boundaries).
void BM_UpstreamSseFeedPlain(benchmark::State& state) {
  const std::string body = openai_stream(200);
  std::vector<std::string_view> reads;  // about range(0) bytes each, cut after an event
  for (size_t pos = 0; pos < body.size();) {
    size_t end = body.find("\n\n", std::min(body.size(), pos + size_t(state.range(0))) - 1);
    end = end == std::string::npos ? body.size() : end + 2;
    reads.push_back(std::string_view(body).substr(pos, end - pos));
    pos = end;
  }
  std::vector<SseEventView> events;
  events.reserve(256);
  for (auto _ : state) {
    SseParser p;
    events.clear();
    for (std::string_view r : reads) {
      bool ok = p.feed_plain(r, events);
      benchmark::DoNotOptimize(ok);
    }
    benchmark::DoNotOptimize(events.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_UpstreamSseFeedPlain)->Arg(64)->Arg(1460)->Arg(16384);

void BM_UpstreamInspectOpenAiChunk(benchmark::State& state) {
  const std::string chunk =
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]})";
  for (auto _ : state) {
    OpenAiChunkInfo info = inspect_openai_chunk(chunk);
    benchmark::DoNotOptimize(info);
  }
}
BENCHMARK(BM_UpstreamInspectOpenAiChunk);

// The same chunk once content has flowed (the relay's case for most chunks of a stream).
void BM_UpstreamInspectOpenAiChunkAfterContent(benchmark::State& state) {
  const std::string chunk =
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}]})";
  for (auto _ : state) {
    OpenAiChunkInfo info = inspect_openai_chunk(chunk, false);
    benchmark::DoNotOptimize(info);
  }
}
BENCHMARK(BM_UpstreamInspectOpenAiChunkAfterContent);

void BM_UpstreamExtractUsage(benchmark::State& state) {
  std::string text(static_cast<size_t>(state.range(0)), 'x');
  const std::string body =
      R"({"id":"chatcmpl-1","object":"chat.completion","created":1718000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":")" +
      text +
      R"("},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":340,"total_tokens":352}})";
  for (auto _ : state) {
    auto usage = extract_openai_usage(body);
    benchmark::DoNotOptimize(usage);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}
BENCHMARK(BM_UpstreamExtractUsage)->Arg(100)->Arg(10000);

void BM_UpstreamAnthropicStreamDelta(benchmark::State& state) {
  AnthropicStreamTranslator t("claude-sonnet", "chatcmpl-sb-1", 1718000000, true);
  std::vector<std::string> out;
  Status s = t.feed(
      "message_start",
      R"({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":10,"output_tokens":1}}})",
      out);
  s = t.feed(
      "content_block_start",
      R"({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})", out);
  const std::string delta =
      R"({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" token"}})";
  for (auto _ : state) {
    out.clear();
    s = t.feed("content_block_delta", delta, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_UpstreamAnthropicStreamDelta);

void BM_UpstreamOpenAiToAnthropicRequest(benchmark::State& state) {
  const boost::json::object req = boost::json::parse(R"({"model":"claude","messages":[
      {"role":"system","content":"You are helpful."},
      {"role":"user","content":"Write a haiku about the sea."},
      {"role":"assistant","content":"Waves fold into foam"},
      {"role":"user","content":"Another one, about rivers."}],
      "max_tokens":256,"temperature":0.7,"stream":true})")
                                      .as_object();
  for (auto _ : state) {
    auto r = openai_to_anthropic_request(req, "claude-sonnet-4-20250514");
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_UpstreamOpenAiToAnthropicRequest);

// The same conversation from an Anthropic client, into the OpenAI request the gateway routes.
void BM_UpstreamAnthropicToOpenAiRequest(benchmark::State& state) {
  const boost::json::object req = boost::json::parse(R"({"model":"auto","max_tokens":256,
      "system":[{"type":"text","text":"You are helpful.","cache_control":{"type":"ephemeral"}}],
      "messages":[
      {"role":"user","content":"Write a haiku about the sea."},
      {"role":"assistant","content":[{"type":"text","text":"Waves fold into foam"}]},
      {"role":"user","content":[{"type":"text","text":"Another one, about rivers."}]}],
      "temperature":0.7,"stream":true})")
                                      .as_object();
  for (auto _ : state) {
    auto r = anthropic_to_openai_request(req);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_UpstreamAnthropicToOpenAiRequest);

// One OpenAI text delta re-encoded as Anthropic's content_block_delta event.
void BM_UpstreamAnthropicStreamEncodeDelta(benchmark::State& state) {
  AnthropicStreamEncoder enc("msg_sb-1", "auto");
  std::string out;
  const std::string prefix =
      R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1718000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":)";
  Status s = enc.feed(prefix + R"({"role":"assistant","content":""},"finish_reason":null}]})", out);
  const std::string delta = prefix + R"({"content":" token"},"finish_reason":null}]})";
  for (auto _ : state) {
    out.clear();
    s = enc.feed(delta, out);
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_UpstreamAnthropicStreamEncodeDelta);

}  // namespace
}  // namespace switchboard::upstream
