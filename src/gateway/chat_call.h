// The request path of POST /v1/chat/completions, in parts (internal to the gateway module):
//   chat_call.cpp      ChatCall: validate, admit (key policy, budget), plan, and for each attempt
//                      a breaker permit and a key lease, then record the outcome everywhere;
//                      handle_chat (runtime.h) runs one under a ClientWatch.
//   upstream_call.cpp  one attempt's exchange with its upstream (send_attempt): the request for
//                      the provider's kind, the answer read whole or a stream relayed.
//   body_scan.cpp      the body forwarded as it came with only `model` spliced (openai_body).
//   client_watch.cpp   waiting for a key inside the coroutine (wait_for_key), and noticing a
//                      client that left (ClientWatch).
// Thread-safety: everything here runs on the request's own server thread.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/object.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/chat_request.h"
#include "gateway/runtime.h"
#include "upstream/translate.h"

namespace switchboard::gateway {

// A stream is held back until its first content so that a failure before it can still fail
// over; an upstream that sends this much without content is relayed from then on instead
// (holding it would grow without a bound).
inline constexpr size_t kMaxHeldStreamBytes = 256 * 1024;

// What one attempt came to.
struct Attempted {
  OutcomeClass cls = OutcomeClass::kSuccess;
  int status = 0;
  std::string body;  // error body (for client errors passed through)
  std::string message;
  upstream::TokenUsage usage;
  bool wrote_response = false;  // streaming: the client has seen bytes
  MonoTime first_content{};     // streaming: when the first content left for the client
  bool anthropic_body =
      false;  // `body` is an Anthropic provider's own answer, for an Anthropic client
  // POST /v1/responses: the provider answered with its own Responses API (body or stream), whose
  // response id and output items are these (a translated stream's output items too).
  bool native_responses = false;
  std::string responses_id;
  std::string responses_output;  // a JSON array, "" when unknown
};

// POST /v1/responses (responses_api.cpp): what the chat path needs of a Responses request, whose
// translation into a chat request is the exchange's body.
struct ResponsesContext {
  boost::json::object request;  // the client's request, echoed in answers
  std::string native_body;      // for providers with the Responses API (model spliced per attempt)
  std::string conversation;     // JSON array: previous responses' items, then this input
  std::string id;               // "resp_<request id>", set by the call before its first attempt
  bool store = true;            // the client's `store` (default true)
  // Why the request cannot be translated for a chat completions provider (a built-in tool, an
  // item only the Responses API knows); "" = it can. When set, only providers that speak the
  // Responses API are tried, and the translation (the exchange's body) serves routing alone.
  std::string native_only;
};

// A successful attempt's answer for a Responses client: a chat completion translated into a
// Responses object (a native answer stays as it came), and the conversation remembered for
// previous_response_id (responses_api.cpp). The message of a 502 when the answer cannot be
// translated.
std::optional<std::string> finish_responses(Runtime& rt, const Snapshot& snap,
                                            ResponsesContext& ctx, Attempted& r,
                                            std::string_view owner);

// The message of an upstream's client error (an OpenAI-shaped body's error.message, or the
// attempt's own), for an answer in another API's shape.
std::string relayed_message(const Attempted& r);

// The body sent to an OpenAI-compatible upstream: the client's bytes with the model replaced
// and, for streams whose client did not ask for usage, usage requested.
std::string openai_body(std::string_view original, ChatRequest& req,
                        std::string_view upstream_model);

// `body` (a JSON object) with its top-level "model" set to `model`: the bytes as they came with
// only the model's value replaced (rebuilt from a parse when the key was written with escapes).
std::string with_model(std::string_view body, std::string_view model);

// The routing hints of a request's headers (x-switchboard-complexity, -category, -session,
// -max-cost-usd) into `info` and `session`; the message of a 400 when one is malformed. Hints
// become map keys, stored rows and log fields: bounded and printable (routing_hints.cpp).
std::optional<std::string> read_routing_hints(const Request& request, routing::RequestInfo& info,
                                              std::string& session);

// Bridges KeyPool::wait_async (callback on any thread) into this coroutine (this thread).
asio::awaitable<keys::AcquireResult> wait_for_key(keys::KeyPool& pool,
                                                  keys::AcquireRequest request);

// A key for one attempt through the limits shared with other gateways (cluster.h): the local
// pool offers the keys it could use, Redis reserves on the first with room in one step, and the
// pool counts the lease in its own view. No room: waits until the first key may have room or a
// gateway releases one of the provider's leases, within `wait_until` (shared_keys.cpp).
struct SharedAcquire {
  enum class Kind { kLease, kNoKey, kUnavailable, kCancelled };
  Kind kind = Kind::kUnavailable;
  keys::AcquireResult result{keys::NoKey{}};  // kLease: the lease; kNoKey: why and until when
  cluster::Reservation reservation;           // kLease: settled with the lease's report
  bool waited = false;
};
asio::awaitable<SharedAcquire> acquire_shared(Runtime& rt, ProviderRuntime& pr,
                                              const keys::AcquireRequest& request,
                                              MonoTime wait_until);

class WatchList;

// Notices a client that closes its connection while its request runs, and then cancels the
// request (Exchange::cancel). Watching starts only once a request has run for a while (see
// client_watch.cpp); until then it costs two pointer updates.
class ClientWatch {
 public:
  explicit ClientWatch(Exchange& ex);
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  ~ClientWatch();

  bool client_left() const;
  MonoTime since() const { return since_; }

 private:
  friend class WatchList;
  struct State;  // shared with the pending wait's callback, which may outlive the request
  void start_watching();

  Exchange& ex_;
  const MonoTime since_;
  WatchList& list_;
  bool listed_ = false;
  ClientWatch* prev_ = nullptr;
  ClientWatch* next_ = nullptr;
  std::shared_ptr<State> state_;  // once watching
};

// What an attempt's exchange needs of its request (owned by the ChatCall).
struct UpstreamCall {
  Runtime& rt;
  Exchange& ex;
  ChatRequest& req;
  const std::string& request_id;
  keys::HeaderList& response_headers;  // rate-limit headers of the answer, for the key pool
  // The x-switchboard-* headers of a streamed answer, made when its head is written.
  // (Formatted header lines, for write_stream_head.)
  std::function<std::string(const routing::Attempt&, const keys::Lease&)> stream_headers;
  // The client speaks Anthropic's API: streams are re-encoded as its events.
  bool anthropic_client = false;
  // That client's own request body: an Anthropic provider gets it as it came (model rewritten),
  // and its answer goes back as it came, nothing lost to a translation and back.
  std::string_view anthropic_body;
  // POST /v1/embeddings: sent to the provider's /embeddings.
  bool embeddings = false;
  // POST /v1/responses: answers and streams go back in the Responses API's shape.
  ResponsesContext* responses = nullptr;
  // The attempt's W3C traceparent ("" = none), set before each attempt.
  std::string traceparent;
};

// The URL of an Azure OpenAI deployment's operation ("chat/completions", "embeddings",
// "responses"): base/deployments/<deployment, percent-encoded>/<op>?api-version=<version>.
std::string azure_url(std::string_view base, std::string_view deployment, std::string_view op,
                      std::string_view api_version);
// The provider answers POST /v1/responses itself (kind openai, responses: native).
bool speaks_responses(const ProviderRuntime& pr);
// A provider's own headers (which replace the gateway's of the same name), proxy and TLS profile.
void add_provider_egress(net::HttpRequest& h, const ProviderRuntime& pr);

// The chat path for a Responses client (chat_call.cpp): `ctx` outlives the call.
asio::awaitable<void> handle_responses_call(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                            Exchange& ex, int gateway_key, ResponsesContext& ctx);

// Sends the attempt on `lease` and reads its answer (or relays its stream) within `deadline`.
asio::awaitable<Attempted> send_attempt(UpstreamCall& c, ProviderRuntime& pr,
                                        const routing::Attempt& a, keys::Lease& lease,
                                        MonoTime deadline);

}  // namespace switchboard::gateway
