// One attempt's exchange with its upstream (chat_call.h): the request built for the provider's
// kind, the answer read whole (or classified as an error), or a stream relayed to the client with
// events held back until the first content so that a failure before it can still fail over.
#include <boost/json.hpp>
#include <cctype>
#include <ctime>

#include "common/json.h"
#include "gateway/chat_call.h"
#include "upstream/translate.h"

namespace switchboard::gateway {

std::string azure_url(std::string_view base, std::string_view deployment, std::string_view op,
                      std::string_view api_version) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string url;
  url.reserve(base.size() + deployment.size() * 3 + op.size() + api_version.size() + 32);
  url += base;
  url += "/deployments/";
  // A client may name any `provider/upstream`: the deployment is one path segment, escaped.
  for (char ch : deployment) {
    const auto u = static_cast<unsigned char>(ch);
    if (std::isalnum(u) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      url += ch;
    } else {
      url += '%';
      url += kHex[u >> 4];
      url += kHex[u & 15];
    }
  }
  url += '/';
  url += op;
  url += "?api-version=";
  url += api_version;
  return url;
}

void add_provider_egress(net::HttpRequest& h, const ProviderRuntime& pr) {
  // The operator's headers win over the gateway's defaults (user-agent, anthropic-version...).
  for (const auto& extra : pr.config->headers) {
    std::erase_if(h.headers, [&](const auto& kv) { return kv.first == extra.name; });
    h.headers.emplace_back(extra.name, extra.value);
  }
  h.proxy = pr.proxy;
  h.tls = pr.tls;
}

bool speaks_responses(const ProviderRuntime& pr) {
  return pr.config->kind == ProviderKind::kOpenAI && pr.config->responses == ResponsesMode::kNative;
}

namespace {

// A Responses client's request goes to the provider's own Responses API.
bool native_responses(const UpstreamCall& c, const ProviderRuntime& pr) {
  return c.responses && !c.embeddings && speaks_responses(pr);
}

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
      auto body = upstream::openai_to_anthropic_request(
          c.req.document(c.ex.request.body()), a.upstream, 4096, pr.config->refuse_json_schema);
      if (!body.ok()) {
        error = body.status().message();
        return h;
      }
      h.body = std::move(body.value());
    }
  } else {
    const ProviderConfig& pc = *pr.config;
    if (pc.kind == ProviderKind::kAzure) {
      // Azure OpenAI: the deployment (the model's upstream name) is in the path, the version in
      // the query, the key in api-key.
      h.url = azure_url(pr.base_url, a.upstream, c.embeddings ? "embeddings" : "chat/completions",
                        pc.api_version);
      if (!pc.keyless) h.headers.emplace_back("api-key", lease.secret());
    } else {
      h.url = c.embeddings              ? pr.base_url + "/embeddings"
              : native_responses(c, pr) ? pr.base_url + "/responses"
                                        : pr.call_url;
      if (!pc.keyless) {
        std::string& auth = h.headers.emplace_back("authorization", std::string()).second;
        auth.reserve(7 + lease.secret().size());
        auth += "Bearer ";
        auth += lease.secret();
      }
    }
    h.body = native_responses(c, pr) ? with_model(c.responses->native_body, a.upstream)
                                     : openai_body(c.ex.request.body(), c.req, a.upstream);
  }
  add_provider_egress(h, pr);
  if (c.req.stream) h.headers.emplace_back("accept", "text/event-stream");
  if (!c.traceparent.empty()) h.headers.emplace_back("traceparent", c.traceparent);
  return h;
}

// The seconds of a "retry after N second(s)" in a 429 body (case-insensitive), bounded to a day.
std::optional<std::string> retry_after_in_body(std::string_view body) {
  static constexpr std::string_view kPhrase = "retry after ";
  body = body.substr(0, 64 * 1024);
  for (size_t i = 0; i + kPhrase.size() < body.size(); ++i) {
    size_t k = 0;
    while (k < kPhrase.size() &&
           std::tolower(static_cast<unsigned char>(body[i + k])) == kPhrase[k])
      ++k;
    if (k < kPhrase.size()) continue;
    size_t j = i + k, digits = 0;
    int64_t n = 0;
    while (j < body.size() && std::isdigit(static_cast<unsigned char>(body[j])) && digits < 6) {
      n = n * 10 + (body[j] - '0');
      ++j, ++digits;
    }
    if (digits == 0 || body.substr(j, 7) != " second") continue;
    return std::to_string(std::min<int64_t>(n, 86400));
  }
  return std::nullopt;
}

// An upstream's answer body as a JSON object; null when it is not one.
boost::json::value json_object_or_null(std::string_view body) {
  boost::system::error_code ec;
  boost::json::value doc = boost::json::parse(body, ec);
  return ec || !doc.is_object() ? boost::json::value() : doc;
}

// What the gateway needs of one event of a provider's own Responses stream.
struct NativeEvent {
  bool content = false;  // output the client has now seen (no failover after it)
  bool done = false;     // response.completed or response.incomplete: the stream's end
  bool failed = false;   // response.failed or error
};

NativeEvent inspect_native_event(const upstream::SseEventView& ev, Attempted& r) {
  NativeEvent ne;
  std::string_view type = ev.event;
  if (type.empty()) {
    // Unnamed events carry their type in the payload only: find it cheaply.
    const auto at = ev.data.find("\"type\":\"");
    if (at != std::string::npos) {
      const auto start = at + 8;
      const auto end = ev.data.find('"', start);
      if (end != std::string::npos) type = ev.data.substr(start, end - start);
    }
  }
  if (type.ends_with(".delta") || type == "response.output_item.done") {
    ne.content = true;
  } else if (type == "response.completed" || type == "response.incomplete") {
    ne.done = ne.content = true;
    boost::system::error_code ec;
    auto v = boost::json::parse(ev.data, ec);
    if (!ec && v.is_object())
      if (auto* resp = v.as_object().if_contains("response"); resp && resp->is_object()) {
        const auto& o = resp->as_object();
        if (auto u = upstream::responses_usage(o)) r.usage = *u;
        if (auto* id = o.if_contains("id"); id && id->is_string())
          r.responses_id = std::string(id->as_string());
        if (auto* out = o.if_contains("output"); out && out->is_array())
          r.responses_output = boost::json::serialize(*out);
      }
  } else if (type == "response.failed" || type == "error") {
    ne.failed = true;
  }
  return ne;
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
    translator.emplace(c.req.model, c.request_id, std::time(nullptr), c.req.client_wants_usage,
                       upstream::anthropic_json_tool(c.req.document(c.ex.request.body())));
  std::string pending;  // events not yet sent to the client
  bool started = false, saw_done = false;
  bool terminated = false;  // the last chunk was written
  std::string raw;
  std::vector<upstream::SseEvent> events;
  std::vector<upstream::SseEventView> views;  // of `events`, or of the bytes as they came
  events.reserve(16);  // a read often completes several events: no regrowth per read
  views.reserve(16);
  std::vector<std::string> chunks;
  const bool strip_usage = !pr.anthropic && !c.req.client_wants_usage;
  // An Anthropic client gets Anthropic's events, whatever the provider spoke.
  std::optional<upstream::AnthropicStreamEncoder> encoder;
  if (c.anthropic_client) encoder.emplace("msg_" + c.request_id, c.req.model);
  // A Responses client gets the Responses API's events: translated from the chat chunks, or as
  // they came from a provider that speaks it.
  const bool native = native_responses(c, pr);
  r.native_responses = native;
  std::optional<upstream::ResponsesStreamEncoder> rencoder;
  if (c.responses && !native)
    rencoder.emplace(c.responses->request, c.responses->id, std::time(nullptr));
  // A chat chunk (the data of an event) in the client's API.
  auto encode = [&](std::string_view chunk, std::string& out) -> Status {
    if (encoder) return encoder->feed(chunk, out);
    if (rencoder) return rencoder->feed(chunk, out);
    upstream::append_sse_event(out, chunk);
    return Status::ok_status();
  };
  auto finish_encoding = [&](std::string& out) {
    if (encoder) {
      encoder->finish(out);
    } else if (rencoder) {
      rencoder->finish(out);
      r.responses_output = boost::json::serialize(rencoder->output());
    } else {
      out += upstream::kSseDone;
    }
  };

  auto fail_stream = [&](OutcomeClass cls, std::string message) -> asio::awaitable<Attempted> {
    stream.cancel();
    r.cls = cls;
    r.message = std::move(message);
    if (started) {
      // The client already has content: end the stream with an error event and no [DONE].
      std::string ev;
      if (encoder) {
        ev = upstream::anthropic_error_event("api_error", "upstream stream failed: " + r.message);
      } else if (c.responses) {
        // The SDKs raise an `error` event as an APIError.
        boost::json::object e{{"type", "error"},
                              {"code", "server_error"},
                              {"message", "upstream stream failed: " + r.message},
                              {"param", nullptr}};
        upstream::append_sse_event(ev, boost::json::serialize(e), "error");
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
    // OpenAI to an OpenAI client: events of one data line pass as they came, unparsed.
    views.clear();
    if (translator || native || encoder || rencoder || !parser.feed_plain(raw, views)) {
      events.clear();
      if (auto ps = parser.feed(raw, events); !ps.ok())
        co_return co_await fail_stream(OutcomeClass::kServerError, ps.message());
      for (const auto& ev : events) views.push_back({ev.event, ev.data, {}});
    }
    std::string out;
    bool content_now = false;
    for (const auto& ev : views) {
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
          if (auto es = encode(chunk, out); !es.ok())
            co_return co_await fail_stream(OutcomeClass::kServerError, es.message());
        }
        if (translator->has_content()) content_now = true;
        if (translator->finished()) {
          if (c.anthropic_body.empty()) finish_encoding(out);  // else message_stop went as it came
          saw_done = true;
        }
        r.usage = translator->usage();
        continue;
      }
      if (native) {
        // The provider's own Responses events, as they came.
        const NativeEvent ne = inspect_native_event(ev, r);
        if (ne.failed)
          co_return co_await fail_stream(OutcomeClass::kServerError,
                                         "upstream reported a failed response");
        if (ne.content) content_now = true;
        if (ne.done) saw_done = true;
        upstream::append_sse_event(out, ev.data, ev.event);
        continue;
      }
      // Once content has flowed, which chunk carries it no longer matters.
      auto info = upstream::inspect_openai_chunk(ev.data, !started && !content_now);
      if (info.done) {
        finish_encoding(out);
        saw_done = true;
        continue;
      }
      if (info.is_error) {
        co_return co_await fail_stream(OutcomeClass::kServerError,
                                       "upstream reported an error in the stream");
      }
      if (info.usage) r.usage = *info.usage;
      if (encoder || rencoder) {
        if (info.has_content) content_now = true;
        if (auto es = encode(ev.data, out); !es.ok())
          co_return co_await fail_stream(OutcomeClass::kServerError, es.message());
        continue;
      }
      if (info.usage && strip_usage && !info.has_content)
        continue;  // we asked for it, not the client
      if (info.has_content) content_now = true;
      if (!ev.raw.empty()) {
        out += ev.raw;
      } else {
        upstream::append_sse_event(out, ev.data, ev.event);
      }
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
                                   native ? "upstream stream ended without response.completed"
                                          : "upstream stream ended without [DONE]");
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
    if (head.status == 429 && head.header("retry-after").empty() &&
        head.header("retry-after-ms").empty()) {
      // Azure (and others) may say it only in the body: "... Please retry after 6 seconds."
      if (auto wait = retry_after_in_body(body))
        c.response_headers.emplace_back("retry-after", *wait);
    }
    if (r.cls != OutcomeClass::kSuccess) {
      r.message = "HTTP " + std::to_string(head.status);
      r.body = pr.anthropic ? upstream::anthropic_error_to_openai(body) : std::move(body);
      co_return r;
    }
    if (pr.anthropic) {
      boost::json::value doc = json_object_or_null(body);
      if (!doc.is_object()) {
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
      auto translated = upstream::anthropic_to_openai_response(
          doc.as_object(), c.req.model, c.request_id, std::time(nullptr),
          upstream::anthropic_json_tool(c.req.document(c.ex.request.body())));
      if (!translated.ok()) {
        r.cls = OutcomeClass::kServerError;
        r.message = translated.status().message();
        co_return r;
      }
      r.body = std::move(translated.value());
    } else if (native_responses(c, pr)) {
      boost::json::value doc = json_object_or_null(body);
      if (!doc.is_object()) {
        r.cls = OutcomeClass::kServerError;
        r.message = "upstream sent invalid JSON";
        co_return r;
      }
      const auto& o = doc.as_object();
      if (auto u = upstream::responses_usage(o)) r.usage = *u;
      if (auto* id = o.if_contains("id"); id && id->is_string())
        r.responses_id = std::string(id->as_string());
      if (auto* out = o.if_contains("output"); out && out->is_array())
        r.responses_output = boost::json::serialize(*out);
      r.native_responses = true;
      r.body = std::move(body);
      co_return r;
    } else {
      r.body = std::move(body);
    }
    if (auto u = upstream::extract_openai_usage(r.body)) r.usage = *u;
    co_return r;
  }
  co_return co_await relay_stream(c, pr, a, lease, *stream);
}

}  // namespace switchboard::gateway
