// The pure-logic half of talking to upstream providers: Server-Sent Events framing, the
// translation between OpenAI Chat Completions and the Anthropic Messages API (requests, responses
// and streams), cheap inspection of OpenAI pass-through bodies, and the classification of HTTP and
// transport failures into the key pool's outcome classes. Nothing here does I/O: the HTTP client
// feeds bytes in and sends what comes out, so every rule is testable without a socket.
//
// Errors never escape as exceptions: every function returns a Status/Result or a plain value,
// and Boost.JSON is used through its error_code overloads.
//
// Thread-safety: free functions are pure and may be called from any thread. SseParser and
// AnthropicStreamTranslator hold per-stream state and are not synchronised: one stream, one owner
// (the connection's io_context thread). Distinct instances are independent.
#pragma once

#include <boost/json/fwd.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/outcome.h"
#include "common/status.h"

namespace switchboard::upstream {

// ---------------------------------------------------------------------------------------------
// Server-Sent Events (https://html.spec.whatwg.org/multipage/server-sent-events.html)
// ---------------------------------------------------------------------------------------------

struct SseEvent {
  std::string event;  // the `event:` field; empty when the event was not named ("message")
  std::string data;   // `data:` lines joined with '\n' (no trailing newline)
  std::string id;     // the last event id in effect when this event was dispatched
  std::optional<int64_t> retry;  // a valid `retry:` field seen in this event's block, in ms

  bool operator==(const SseEvent&) const = default;
};

// An event seen through views: of a parsed SseEvent (`raw` empty), or of the bytes as they came
// (SseParser::feed_plain: `raw` is the whole event, which a relay may pass on unchanged).
struct SseEventView {
  std::string_view event, data, raw;
};

inline constexpr size_t kDefaultMaxSseEventBytes = size_t{1} << 20;  // 1 MiB

// Incremental SSE parser. Feed it the response body in chunks split anywhere (inside a field,
// inside a "\r\n" pair, inside a UTF-8 sequence) and it yields exactly the events the spec's
// parser would yield for the concatenated body:
//   - lines end with LF, CRLF or CR; a leading UTF-8 BOM is skipped;
//   - `:` lines are comments and ignored; `field: value` drops one space after the colon; a line
//     without a colon is a field with an empty value; unknown fields are ignored;
//   - an empty line dispatches the event, unless no `data:` line was seen, in which case the
//     block is dropped (as browsers do) but its `id:` still takes effect;
//   - an `id:` containing NUL is ignored; `retry:` that is not all digits is ignored.
// Memory is bounded: once the event being assembled (its data plus the unfinished line) exceeds
// `max_event_bytes`, feed returns ResourceExhausted and the parser stays failed (every later feed
// returns the same error), so a hostile or broken upstream cannot grow it without limit.
// A body that ends in the middle of an event leaves `has_partial_event()` true: the caller can
// tell a truncated stream from a complete one.
class SseParser {
 public:
  explicit SseParser(size_t max_event_bytes = kDefaultMaxSseEventBytes)
      : max_event_bytes_(max_event_bytes) {}

  // Parses `chunk` and appends every event it completes to `out`. Events completed before an
  // oversize error are still appended.
  Status feed(std::string_view chunk, std::vector<SseEvent>& out);

  // The fast path of a relay: when nothing is buffered and `chunk` is made only of whole events
  // of one `data: ` line each with LF line ends ("data: <payload>\n\n"), appends a view of each
  // event (its payload and its bytes) and returns true. Otherwise returns false and consumes
  // nothing (feed it then). Such events read the same through feed(), and append_sse_event
  // writes their payload back as exactly their bytes: they may be passed on as they came.
  bool feed_plain(std::string_view chunk, std::vector<SseEventView>& out);

  // True when bytes of an undispatched event (or an unfinished line) are buffered.
  bool has_partial_event() const;
  const std::string& last_event_id() const { return last_event_id_; }
  bool failed() const { return failed_; }

 private:
  Status process_line(std::string_view line, std::vector<SseEvent>& out);
  Status oversize() const;

  size_t max_event_bytes_;
  std::string line_;  // an unfinished line carried over from the previous chunk
  std::string data_;
  std::string event_;
  std::string last_event_id_;
  std::optional<int64_t> retry_;
  bool seen_field_ = false;   // any field line since the last dispatch
  bool skip_lf_ = false;      // the previous chunk ended in '\r': a leading '\n' belongs to it
  bool bom_checked_ = false;  // the first bytes have been checked for a BOM
  bool failed_ = false;
};

// Appends one SSE event to `out`: `event: <name>\n` when `event` is non-empty, one `data: ` line
// per line of `data` (a multi-line payload stays one event), then the blank line.
void append_sse_event(std::string& out, std::string_view data, std::string_view event = {});
std::string format_sse_event(std::string_view data, std::string_view event = {});
// The OpenAI end-of-stream marker, "data: [DONE]\n\n".
inline constexpr std::string_view kSseDone = "data: [DONE]\n\n";

// ---------------------------------------------------------------------------------------------
// Token usage
// ---------------------------------------------------------------------------------------------

struct TokenUsage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t total() const { return prompt_tokens + completion_tokens; }
  bool operator==(const TokenUsage&) const = default;
};

// The top-level `usage` of a non-stream OpenAI chat completion body, or nullopt when the body
// has none (or is not a JSON object). Cheap: one byte scan that tracks nesting and strings to find
// the top-level "usage" member, then a parse of that member only; the rest of the body (the
// completion text) is never materialised. Keys written with escapes are not recognised. The last
// top-level `usage` counts, and within it the last of each count; counts are bounded to
// [0, 2^40] (an upstream's nonsense cannot overflow sums or costs), a count that is not a number
// is taken as absent.
std::optional<TokenUsage> extract_openai_usage(std::string_view body);

// What the gateway needs to know about one OpenAI stream chunk (the body of a `data:` line).
struct OpenAiChunkInfo {
  bool done = false;         // the `[DONE]` marker
  bool has_content = false;  // non-empty delta.content, any delta.tool_calls, or a finish_reason
  bool is_error = false;     // a top-level `error` object (some servers report failures in-stream)
  bool malformed = false;    // not JSON, or not an object
  std::optional<TokenUsage> usage;  // a non-null `usage` (stream_options.include_usage)
};
// Cheap: walked structurally, without a document or an allocation. With `need_content` false
// (the caller already knows content has flowed) `has_content` is worked out only for a chunk that
// carries usage, and a chunk that names neither `usage` nor `error` is not walked at all (nor
// reported malformed): most chunks of a stream cost a search for two words.
OpenAiChunkInfo inspect_openai_chunk(std::string_view data, bool need_content = true);

// ---------------------------------------------------------------------------------------------
// Anthropic Messages API <-> OpenAI Chat Completions
// ---------------------------------------------------------------------------------------------

// Translates an OpenAI chat completion request into an Anthropic Messages request body for
// `upstream_model`:
//   system/developer messages   → top-level `system` (texts joined with a blank line)
//   user/assistant content      → content blocks: text; image_url with a `data:<type>;base64,`
//                                 URL → base64 image source, http(s) URL → url image source
//   assistant tool_calls        → tool_use blocks (`arguments` parsed into `input`; must be a JSON
//                                 object, "" counts as {})
//   tool messages               → tool_result blocks in a user turn
//   consecutive same-role turns → merged into one (Anthropic requires alternation); empty turns
//                                 are dropped
//   tools / tool_choice         → {name, description, input_schema} / auto, none, any, tool;
//                                 parallel_tool_calls:false → disable_parallel_tool_use
//   max_completion_tokens, else max_tokens, else `default_max_tokens` (Anthropic requires it);
//   temperature (clamped to Anthropic's [0, 1] so a fallback to Claude does not fail on a value
//   valid for OpenAI), top_p, stop (string or list) → stop_sequences, stream, user →
//   metadata.user_id. Other OpenAI fields are dropped; n > 1 cannot be served and is an error.
// Wrong shapes give InvalidArgument naming the field, e.g. "messages[2].content: ...".
//   response_format json_schema / json_object → a tool named after the schema ("json_response"
//   for json_object) whose input_schema is the schema, forced (tool_choice tool), or with the
//   client's own tools tool_choice any; the answer's call of it comes back as the message's
//   content (anthropic_to_openai_response, AnthropicStreamTranslator given anthropic_json_tool).
//   With `refuse_json_schema` (the provider's `json_schema: refuse`) it is an InvalidArgument
//   instead. logprobs / top_logprobs are InvalidArgument: Anthropic has none.
Result<std::string> openai_to_anthropic_request(const boost::json::object& openai_request,
                                                std::string_view upstream_model,
                                                int64_t default_max_tokens = 4096,
                                                bool refuse_json_schema = false);
// The name of the tool that carries a request's response_format to Anthropic, "" when none.
std::string anthropic_json_tool(const boost::json::object& openai_request);

// Translates a non-stream Anthropic Messages response into an OpenAI chat completion:
// text blocks joined into message.content (null when there are only tool calls), tool_use blocks
// → tool_calls, stop_reason → finish_reason (end_turn/stop_sequence/pause_turn → stop, max_tokens
// → length, tool_use → tool_calls, refusal → content_filter), usage with cache reads and cache
// writes counted as prompt tokens (each count bounded to [0, 2^40], as for OpenAI's usage).
// Thinking blocks are dropped. A body that is not a Messages response gives Unavailable (the
// upstream misbehaved; the gateway treats it as a server error).
// A tool_use block of `json_tool` (anthropic_json_tool) is the structured answer: its input
// becomes message.content, and a tool_use stop without other calls is finish_reason stop.
Result<std::string> anthropic_to_openai_response(const boost::json::object& anthropic_response,
                                                 std::string_view client_model,
                                                 std::string_view response_id, int64_t created_unix,
                                                 std::string_view json_tool = {});

// Translates an Anthropic streaming response, one SSE event at a time, into OpenAI
// `chat.completion.chunk` payloads (the text after `data: `; the caller frames them and sends
// `[DONE]` once finished()). Chunks carry id/created/model from the constructor.
//   message_start        → {"delta":{"role":"assistant","content":""}} (not content-bearing)
//   text_delta           → {"delta":{"content":...}} (empty texts produce nothing)
//   tool_use block start → {"delta":{"tool_calls":[{index,id,type,function:{name,arguments:""}}]}}
//                          where index counts tool calls from 0, not Anthropic block indexes
//   input_json_delta     → {"delta":{"tool_calls":[{index,function:{arguments:partial}}]}}; a
//                          tool block that streamed no arguments gets "{}" at its stop, so clients
//                          always receive parseable arguments
//   message_delta        → a chunk with finish_reason (mapped as for responses); updates usage
//   message_stop         → finished(); plus {"choices":[],"usage":{...}} when include_usage
//   ping, thinking deltas, unknown events → nothing (Anthropic may add event types)
//   error                → a non-ok Status carrying the error's type and message:
//                          ResourceExhausted for rate_limit_error, InvalidArgument for
//                          invalid_request_error, PermissionDenied for authentication and
//                          permission errors, Unavailable otherwise (overloaded_error, api_error)
// Invalid JSON or impossible sequences (a delta for a block never started) give Unavailable.
// Events after message_stop are ignored.
class AnthropicStreamTranslator {
 public:
  // `json_tool`: as for anthropic_to_openai_response, its block streams as content deltas.
  AnthropicStreamTranslator(std::string_view client_model, std::string_view response_id,
                            int64_t created_unix, bool include_usage,
                            std::string_view json_tool = {});

  Status feed(std::string_view event_name, std::string_view data,
              std::vector<std::string>& out_chunks);

  // Tokens seen so far: input (plus cache reads and writes) from message_start, output updated by
  // each message_delta (Anthropic reports it cumulatively); each count bounded to [0, 2^40].
  const TokenUsage& usage() const { return usage_; }
  // True once a content-bearing chunk (text, a tool call, a finish_reason) has been produced:
  // until then a failure can still fail over without the client noticing.
  bool has_content() const { return has_content_; }
  bool finished() const { return finished_; }

 private:
  enum class BlockKind : uint8_t { kOther, kText, kToolUse, kJsonAnswer };
  struct Block {
    BlockKind kind = BlockKind::kOther;
    int tool_index = -1;
    bool got_arguments = false;
    bool open = false;
  };

  Status on_event(std::string_view type, const boost::json::object& ev,
                  std::vector<std::string>& out);
  void ensure_role(std::vector<std::string>& out);
  std::string chunk(std::string_view delta_json, std::string_view finish_reason = {}) const;
  Block* block_at(const boost::json::object& ev);

  std::string json_tool_;  // the structured answer's tool ("" = none)
  std::string prefix_;     // {"id":..,"object":"chat.completion.chunk","created":..,"model":..,
  bool include_usage_;
  bool role_sent_ = false;
  bool has_content_ = false;
  bool finished_ = false;
  int next_tool_index_ = 0;
  int64_t input_tokens_ = 0;  // the three parts of the prompt, kept apart because message_delta
  int64_t cache_read_ = 0;    // may restate any of them
  int64_t cache_creation_ = 0;
  TokenUsage usage_;
  std::vector<Block> blocks_;  // by Anthropic content block index
};

// Converts an Anthropic error body ({"type":"error","error":{"type","message"}}) into OpenAI's
// error shape for relaying a client error: the message is kept, `code` is the Anthropic type and
// `type` is invalid_request_error, authentication_error, rate_limit_error or server_error (by
// classify_anthropic_error_type). A body that is not such an error gives a generic server_error.
std::string anthropic_error_to_openai(std::string_view anthropic_body);

// ---------------------------------------------------------------------------------------------
// Anthropic Messages API clients (POST /v1/messages) over the OpenAI-shaped request path
// ---------------------------------------------------------------------------------------------
// The opposite direction of the translation above, for clients that speak Anthropic's API: their
// request becomes an OpenAI chat request (which the gateway routes like any other), and the
// answer (whole or streamed) goes back in Anthropic's shape. The shared rules (stop reasons,
// token counts) are the same tables as above's.

// Translates an Anthropic Messages request into an OpenAI chat completion request (the model
// name kept: the gateway routes it):
//   system (a string, or text blocks)  → one system message (texts joined with a blank line)
//   user text / image blocks           → content parts (base64 sources become data: URLs);
//                                        a single text stays a plain string
//   user tool_result blocks            → tool messages (tool_call_id, text content), placed before
//                                        the turn's other content, as OpenAI requires
//   assistant text / tool_use blocks   → content / tool_calls (input serialised as arguments);
//                                        thinking blocks are dropped
//   max_tokens (required), temperature, top_p, stop_sequences → stop, stream (with usage asked
//   for), metadata.user_id → user; tools {name, description, input_schema} → function tools;
//   tool_choice auto/any/tool/none → auto/required/function/none, disable_parallel_tool_use →
//   parallel_tool_calls: false. top_k, thinking and unknown fields are dropped; document blocks
//   and server tools cannot be carried and are errors.
// Wrong shapes give InvalidArgument naming the field, e.g. "messages[1].content[0].source: ...".
Result<std::string> anthropic_to_openai_request(const boost::json::object& anthropic_request);

// Translates a non-stream OpenAI chat completion into an Anthropic Messages response with id
// `message_id`: message content → a text block, tool_calls → tool_use blocks (arguments parsed;
// "" is {}), finish_reason → stop_reason, usage → input/output tokens. A body that is not a chat
// completion (or whose tool arguments are not a JSON object) gives Unavailable. Cached prompt
// tokens (prompt_tokens_details.cached_tokens) become cache_read_input_tokens.
Result<std::string> openai_to_anthropic_response(const boost::json::object& openai_response,
                                                 std::string_view client_model,
                                                 std::string_view message_id);

// The usage of an Anthropic Messages response (its `usage` member): cache reads and writes
// count as prompt tokens, as in anthropic_to_openai_response; each count bounded to [0, 2^40].
TokenUsage anthropic_message_usage(const boost::json::object& message);

// Re-encodes an OpenAI chat completion stream as Anthropic's event sequence: message_start
// (at the first chunk) and a ping, then per content block content_block_start, content_block_delta
// (text_delta, or input_json_delta for a tool call's arguments) and content_block_stop, and at
// the end message_delta (stop_reason, usage) and message_stop. Text and each tool call are
// separate blocks, numbered from 0 in the order they start. Usage is taken from the usage chunk
// (stream_options.include_usage) when the upstream sent one. The output is framed SSE text
// (`event: <type>` and `data: <json>`).
class AnthropicStreamEncoder {
 public:
  AnthropicStreamEncoder(std::string_view message_id, std::string_view client_model);

  // One OpenAI chunk payload (the data of an SSE event). "[DONE]" finishes the message. Chunks
  // that are not JSON objects give InvalidArgument (nothing is appended).
  Status feed(std::string_view data, std::string& out);
  // Closes the open block and ends the message (message_delta, message_stop), once.
  void finish(std::string& out);
  bool finished() const { return finished_; }
  const TokenUsage& usage() const { return usage_; }

 private:
  void start(std::string& out);
  void close_block(std::string& out);
  void event(std::string& out, std::string_view type, const boost::json::object& payload);
  void delta_event(std::string& out, std::string_view type, std::string_view field,
                   std::string_view value);

  std::string id_;
  std::string model_;
  bool started_ = false;
  bool finished_ = false;
  int next_block_ = 0;
  int open_block_ = -1;     // the block index being streamed, -1 = none
  bool open_text_ = false;  // the open block is text (else a tool call)
  int open_tool_ = -1;      // the OpenAI tool call index of the open tool block
  std::string stop_reason_ = "end_turn";
  TokenUsage usage_;
  int64_t cached_tokens_ = 0;  // of usage_.prompt_tokens, served from the provider's cache
};

// Anthropic's error body {"type":"error","error":{"type":...,"message":...}} for an answer with
// HTTP `status`: 400 invalid_request_error, 401 authentication_error, 403 permission_error,
// 404 not_found_error, 413 request_too_large, 429 rate_limit_error, 529 overloaded_error, other
// 5xx api_error (the types Anthropic's SDKs map to their typed errors).
std::string anthropic_error_json(int status, std::string_view message);
// The same as a stream's `error` event (framed SSE text).
std::string anthropic_error_event(std::string_view type, std::string_view message);

// ---------------------------------------------------------------------------------------------
// OpenAI Responses API clients (POST /v1/responses) over the chat path
// ---------------------------------------------------------------------------------------------
// A Responses request becomes a chat completion request (routed like any other); the chat answer,
// whole or streamed, goes back as a Responses object or event stream. Providers that have the
// Responses API themselves get the client's body instead (the gateway does not translate then).

// The input of a Responses request as a list of items: a string input is one user message item;
// EasyInputMessage items ({role, content} without a type) get "type":"message". Wrong shapes give
// InvalidArgument naming the field.
Result<boost::json::array> responses_input_items(const boost::json::object& request);

// Translates a Responses request into a chat completion request. `items` is the conversation in
// Responses items (previous responses' items, then this request's input):
//   instructions                 → a system message first (not carried over from previous
//                                  responses, as OpenAI does)
//   message items                → messages; content parts input_text/output_text → text,
//                                  input_image (image_url) → image_url parts, input_file
//                                  (file_data) → file parts; system/developer texts joined
//   function_call items          → assistant tool_calls (consecutive calls in one message)
//   function_call_output items   → tool messages
//   reasoning items              → dropped (not portable across providers)
//   tools (type function)        → function tools; tool_choice auto/none/required/{function}
//   text.format json_schema / json_object → response_format; max_output_tokens → max_tokens;
//   temperature, top_p, parallel_tool_calls, user, reasoning.effort → reasoning_effort; stream
//   (with usage asked for).
// Items or tools the chat API cannot carry (file_id references, built-in tools such as
// web_search, item_reference), `background: true` and `conversation` give InvalidArgument.
Result<std::string> responses_to_chat_request(const boost::json::object& request,
                                              const boost::json::array& items);

// The Responses object for a chat completion (non-stream body): the message's text as an
// output_text part (a refusal as a refusal part), tool calls as function_call items; usage as
// input/output tokens (cached and reasoning details kept); finish_reason length → status
// "incomplete" (max_output_tokens), content_filter → incomplete (content_filter). The request's
// settings are echoed as OpenAI does (model as the client named it). `output` receives the output
// items (for previous_response_id). A body that is not a chat completion gives Unavailable.
Result<std::string> chat_to_responses_response(const boost::json::object& completion,
                                               const boost::json::object& request,
                                               std::string_view response_id, int64_t created_at,
                                               boost::json::array& output);

// The usage of a native Responses object (`usage.input_tokens` / `output_tokens`), if any.
std::optional<TokenUsage> responses_usage(const boost::json::object& response);

// Re-encodes a chat completion stream as the Responses API's events (framed SSE, `event:` named):
// response.created and response.in_progress at the first chunk; per output item
// response.output_item.added, for text response.content_part.added and
// response.output_text.delta, for tool calls response.function_call_arguments.delta; at the end
// the matching .done events (full texts and arguments), then response.completed (or
// response.incomplete for a length or content_filter finish) carrying the whole response with
// usage. Events are numbered by sequence_number from 0. Items are numbered by output_index in
// the order they start, so the SDKs' accumulators (responses.stream().finalResponse()) rebuild
// exactly the final response.
class ResponsesStreamEncoder {
 public:
  ResponsesStreamEncoder(const boost::json::object& request, std::string response_id,
                         int64_t created_at);
  ~ResponsesStreamEncoder();
  ResponsesStreamEncoder(const ResponsesStreamEncoder&) = delete;
  ResponsesStreamEncoder& operator=(const ResponsesStreamEncoder&) = delete;

  // One chat chunk payload (the data of an SSE event); "[DONE]" finishes. Chunks that are not
  // JSON objects give InvalidArgument (nothing appended).
  Status feed(std::string_view data, std::string& out);
  // Closes the open items and ends the response, once.
  void finish(std::string& out);
  // A response.failed event for a stream that broke after content (the SDKs raise it).
  void fail(std::string_view message, std::string& out);
  bool finished() const;
  bool has_content() const;
  const TokenUsage& usage() const;
  // The final output items (valid after finish), for previous_response_id.
  const boost::json::array& output() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// ---------------------------------------------------------------------------------------------
// Error classification
// ---------------------------------------------------------------------------------------------

// Classifies an HTTP response. `body` is consulted only where the status alone is ambiguous:
//   2xx → success; 429 → rate_limited, but OpenAI `insufficient_quota` (billing exhausted, no
//   amount of waiting helps) → auth_failed; 401/403 → auth_failed; 408 → timeout;
//   400/404/409/413/422 and other 4xx → client_error, except Anthropic's "credit balance is too
//   low" 400 (a billing failure of the key) → auth_failed; 5xx and 529 → server_error;
//   anything else (1xx, 3xx, garbage) → server_error, since an API upstream never sends it to a
//   well-formed request.
OutcomeClass classify_http(int status, std::string_view body);

// connect_failed, connect_timeout, tls_failed, dns_failed, reset → connection_error (the request
// did not reach the provider, or we cannot know it did: another key or provider may serve it);
// read_timeout → timeout; protocol_error → server_error; cancelled → cancelled.
OutcomeClass classify_transport(TransportError e);

// The class of an Anthropic error type as sent in error bodies and stream `error` events:
// rate_limit_error → rate_limited; authentication_error, permission_error, billing_error →
// auth_failed; invalid_request_error, not_found_error, request_too_large → client_error;
// timeout_error → timeout; api_error, overloaded_error and unknown types → server_error.
OutcomeClass classify_anthropic_error_type(std::string_view type);

// `{"error":{"message":...,"type":...,"code":...}}` with JSON escaping; an empty `code` is null.
// Invalid UTF-8 in the message (upstream text) is replaced with U+FFFD so the result is always
// valid JSON.
std::string openai_error_json(std::string_view message, std::string_view type,
                              std::string_view code = {});

}  // namespace switchboard::upstream
