// One attempt's exchange with its upstream (chat_call.h): the request built for the provider's
// kind, the answer read whole (or classified as an error), or a stream relayed to the client with
// events held back until the first content so that a failure before it can still fail over.
#include <boost/json.hpp>
#include <ctime>

#include "common/json.h"
#include "gateway/chat_call.h"
#include "upstream/translate.h"

namespace switchboard::gateway {

namespace {

net::HttpRequest build_request(UpstreamCall& c, const ProviderRuntime& pr,
                               const routing::Attempt& a, const keys::Lease& lease,
                               MonoTime deadline, std::string& error) {
  net::HttpRequest h;
  h.deadline = deadline;
  h.headers.reserve(5);
  h.headers.emplace_back("content-type", "application/json");
  h.headers.emplace_back("user-agent", "switchboard/" SWITCHBOARD_VERSION);
  if (pr.anthropic) {
    h.url = pr.call_url;
    h.headers.emplace_back("x-api-key", lease.secret());
    // An Anthropic client's version and beta flags go on to an Anthropic provider (bounded: they
    // are the client's bytes; the server already refused control characters in headers).
    auto version = c.ex.request["anthropic-version"];
    h.headers.emplace_back("anthropic-version",
                           c.anthropic_client && !version.empty() && version.size() <= 64
                               ? std::string(version)
                               : std::string("2023-06-01"));
    if (auto beta = c.ex.request["anthropic-beta"];
        c.anthropic_client && !beta.empty() && beta.size() <= 1024)
      h.headers.emplace_back("anthropic-beta", std::string(beta));
    if (!c.anthropic_body.empty()) {
      h.body = with_model(c.anthropic_body, a.upstream);  // Anthropic to Anthropic: as it came
    } else {
      auto body =
          upstream::openai_to_anthropic_request(c.req.document(c.ex.request.body()), a.upstream);
      if (!body.ok()) {
        error = body.status().message();
        return h;
      }
      h.body = std::move(body.value());
    }
  } else {
    h.url = c.embeddings ? pr.base_url + "/embeddings" : pr.call_url;
    std::string& auth = h.headers.emplace_back("authorization", std::string()).second;
    auth.reserve(7 + lease.secret().size());
    auth += "Bearer ";
    auth += lease.secret();
    h.body = openai_body(c.ex.request.body(), c.req, a.upstream);
  }
  if (c.req.stream) h.headers.emplace_back("accept", "text/event-stream");
  if (!c.traceparent.empty()) h.headers.emplace_back("traceparent", c.traceparent);
  return h;
}

// Streams an SSE answer to the client. Events are held until the first content-bearing one, so
// that a failure before it can still fail over; after it, bytes are relayed as they come.
asio::awaitable<Attempted> relay_stream(UpstreamCall& c, ProviderRuntime& pr,
                                        const routing::Attempt& a, keys::Lease& lease,
                                        net::HttpStream& stream) {
  Attempted r;
  r.status = 200;
  upstream::SseParser parser;
  std::optional<upstream::AnthropicStreamTranslator> translator;
  if (pr.anthropic)
    translator.emplace(c.req.model, c.request_id, std::time(nullptr), c.req.client_wants_usage);
  std::string pending;  // events not yet sent to the client
  bool started = false, saw_done = false;
  bool terminated = false;  // the last chunk was written
  std::string raw;
  std::vector<upstream::SseEvent> events;
  std::vector<std::string> chunks;
  const bool strip_usage = !pr.anthropic && !c.req.client_wants_usage;
  // An Anthropic client gets Anthropic's events, whatever the provider spoke.
  std::optional<upstream::AnthropicStreamEncoder> encoder;
  if (c.anthropic_client) encoder.emplace("msg_" + c.request_id, c.req.model);

  auto fail_stream = [&](OutcomeClass cls, std::string message) -> asio::awaitable<Attempted> {
    stream.cancel();
    r.cls = cls;
    r.message = std::move(message);
    if (started) {
      // The client already has content: end the stream with an error event and no [DONE].
      std::string ev;
      if (encoder) {
        ev = upstream::anthropic_error_event("api_error", "upstream stream failed: " + r.message);
      } else {
        upstream::append_sse_event(
            ev, upstream::openai_error_json("upstream stream failed: " + r.message, "server_error",
                                            std::string(to_string(cls))));
      }
      co_await write_chunk(c.ex, ev);
      co_await finish_chunks(c.ex);
      c.ex.close = true;
      r.wrote_response = true;
    }
    co_return r;
  };

  bool done = false;
  while (!done) {
    raw.clear();
    auto st = co_await stream.read_some(raw, done);
    if (!st.ok())
      co_return co_await fail_stream(upstream::classify_transport(st.error), st.message);
    events.clear();
    if (auto ps = parser.feed(raw, events); !ps.ok())
      co_return co_await fail_stream(OutcomeClass::kServerError, ps.message());
    std::string out;
    bool content_now = false;
    for (const auto& ev : events) {
      if (translator) {
        chunks.clear();
        auto ts = translator->feed(ev.event, ev.data, chunks);
        if (!ts.ok()) {
          OutcomeClass cls =
              ts.code() == StatusCode::kResourceExhausted  ? OutcomeClass::kRateLimited
              : ts.code() == StatusCode::kPermissionDenied ? OutcomeClass::kAuthFailed
                                                           : OutcomeClass::kServerError;
          co_return co_await fail_stream(cls, ts.message());
        }
        if (!c.anthropic_body.empty()) {
          // Anthropic to Anthropic: the events as they came (the translator still tells content,
          // usage, errors and the end).
          upstream::append_sse_event(out, ev.data, ev.event);
          chunks.clear();
        }
        for (const auto& chunk : chunks) {
          if (!encoder) {
            upstream::append_sse_event(out, chunk);
          } else if (auto es = encoder->feed(chunk, out); !es.ok()) {
            co_return co_await fail_stream(OutcomeClass::kServerError, es.message());
          }
        }
        if (translator->has_content()) content_now = true;
        if (translator->finished()) {
          if (!c.anthropic_body.empty()) {
            // message_stop went out as it came
          } else if (encoder) {
            encoder->finish(out);
          } else {
            out += upstream::kSseDone;
          }
          saw_done = true;
        }
        r.usage = translator->usage();
        continue;
      }
      auto info = upstream::inspect_openai_chunk(ev.data);
      if (info.done) {
        if (encoder) {
          encoder->finish(out);
        } else {
          out += upstream::kSseDone;
        }
        saw_done = true;
        continue;
      }
      if (info.is_error) {
        co_return co_await fail_stream(OutcomeClass::kServerError,
                                       "upstream reported an error in the stream");
      }
      if (info.usage) r.usage = *info.usage;
      if (encoder) {
        if (info.has_content) content_now = true;
        if (auto es = encoder->feed(ev.data, out); !es.ok())
          co_return co_await fail_stream(OutcomeClass::kServerError, es.message());
        continue;
      }
      if (info.usage && strip_usage && !info.has_content)
        continue;  // we asked for it, not the client
      if (info.has_content) content_now = true;
      upstream::append_sse_event(out, ev.data, ev.event);
    }
    // Everything this read delivered leaves in one write; the stream's end (the upstream closed
    // after [DONE]) rides along with the last events, and the head with the first.
    const bool last = done && saw_done;
    if (!started) {
      pending += out;
      if (content_now || pending.size() > kMaxHeldStreamBytes || last) {
        if (!co_await write_stream_head(c.ex, http::status::ok, c.stream_headers(a, lease), pending,
                                        last)) {
          stream.cancel();
          r.cls = OutcomeClass::kCancelled;
          r.wrote_response = true;
          co_return r;
        }
        started = true;
        terminated = last;
        r.wrote_response = true;
        if (content_now) r.first_content = c.rt.clock.now();
        pending.clear();
      }
    } else if (!out.empty() || last) {
      if (!co_await write_chunk(c.ex, out, last)) {
        stream.cancel();
        r.cls = OutcomeClass::kCancelled;
        co_return r;
      }
      terminated = last;
    }
  }
  if (!saw_done) {
    co_return co_await fail_stream(OutcomeClass::kServerError,
                                   "upstream stream ended without [DONE]");
  }
  if (!terminated) co_await finish_chunks(c.ex);
  r.cls = OutcomeClass::kSuccess;
  co_return r;
}

}  // namespace

std::string relayed_message(const Attempted& r) {
  boost::system::error_code ec;
  auto v = boost::json::parse(r.body, ec);
  if (!ec && v.is_object())
    if (auto* e = v.as_object().if_contains("error"); e && e->is_object())
      if (auto* m = e->as_object().if_contains("message"); m && m->is_string())
        return std::string(m->as_string());
  return r.message.empty() ? "the upstream rejected the request" : r.message;
}

asio::awaitable<Attempted> send_attempt(UpstreamCall& c, ProviderRuntime& pr,
                                        const routing::Attempt& a, keys::Lease& lease,
                                        MonoTime deadline) {
  Attempted r;
  std::string build_error;
  net::HttpRequest h = build_request(c, pr, a, lease, deadline, build_error);
  if (!build_error.empty()) {
    r.cls = OutcomeClass::kClientError;
    r.status = 400;
    r.message = build_error;
    co_return r;
  }
  auto& client = *c.rt.clients[c.ex.thread_index];
  std::unique_ptr<net::HttpStream> stream;
  auto st = co_await client.start(h, stream);
  if (!st.ok()) {
    r.cls = upstream::classify_transport(st.error);
    r.message = st.message;
    co_return r;
  }
  const auto& head = stream->head();
  for (const auto& [k, v] : head.headers) {
    if (k.size() > 5 &&
        (k[0] == 'x' || k[0] == 'X' || k[0] == 'r' || k[0] == 'R' || k[0] == 'a' || k[0] == 'A'))
      c.response_headers.emplace_back(k, v);
  }
  r.status = head.status;
  if (head.status < 200 || head.status >= 300 || !c.req.stream) {
    // Whole body: an error to classify, or a complete non-stream answer.
    std::string body;
    bool done = false;
    while (!done) {
      st = co_await stream->read_some(body, done);
      if (!st.ok()) {
        r.cls = upstream::classify_transport(st.error);
        r.message = st.message;
        co_return r;
      }
      if (body.size() > (64u << 20)) {
        r.cls = OutcomeClass::kServerError;
        r.message = "upstream response too large";
        co_return r;
      }
    }
    r.cls = upstream::classify_http(head.status, body);
    if (r.cls != OutcomeClass::kSuccess) {
      r.message = "HTTP " + std::to_string(head.status);
      r.body = pr.anthropic ? upstream::anthropic_error_to_openai(body) : std::move(body);
      co_return r;
    }
    if (pr.anthropic) {
      boost::system::error_code ec;
      auto doc = boost::json::parse(body, ec);
      if (ec || !doc.is_object()) {
        r.cls = OutcomeClass::kServerError;
        r.message = "upstream sent invalid JSON";
        co_return r;
      }
      if (!c.anthropic_body.empty()) {
        if (doc.as_object().if_contains("content") == nullptr) {
          r.cls = OutcomeClass::kServerError;
          r.message = "anthropic response without content";
          co_return r;
        }
        r.usage = upstream::anthropic_message_usage(doc.as_object());
        r.body = std::move(body);
        r.anthropic_body = true;
        co_return r;
      }
      auto translated = upstream::anthropic_to_openai_response(doc.as_object(), c.req.model,
                                                               c.request_id, std::time(nullptr));
      if (!translated.ok()) {
        r.cls = OutcomeClass::kServerError;
        r.message = translated.status().message();
        co_return r;
      }
      r.body = std::move(translated.value());
    } else {
      r.body = std::move(body);
    }
    if (auto u = upstream::extract_openai_usage(r.body)) r.usage = *u;
    co_return r;
  }
  co_return co_await relay_stream(c, pr, a, lease, *stream);
}

}  // namespace switchboard::gateway
