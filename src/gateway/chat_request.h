// ChatRequest: what the gateway reads from a /v1/chat/completions body, and its validation.
//
// The body is forwarded as it came (only `model` is spliced), so validation does not build a
// document: one pass of Boost.JSON's streaming parser checks the fields switchboard reads and
// estimates the prompt's tokens (DESIGN.md, performance notes). A translation that needs the
// whole document (Anthropic) asks for it with `document()`, parsed then into the request's arena.
//
// Errors name the field, as OpenAI's own 400s do, and are checked in a fixed order whatever the
// order of the fields in the body. When a key repeats, its last value counts; except `model`,
// which the gateway rewrites: a repeated `model` is refused.
//
// Thread-safety: a plain value; one request, one thread.
#pragma once

#include <boost/json/monotonic_resource.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "routing/features.h"

namespace switchboard::gateway {

struct ChatRequest {
  std::string model;
  bool stream = false;
  bool client_wants_usage = false;      // stream_options.include_usage set by the client
  bool stream_options_present = false;  // the key is there (even as null)
  int64_t max_tokens = 0;               // max_tokens or max_completion_tokens; 0 when absent
  int64_t prompt_tokens = 0;            // estimate: text length / 4, images 765, 4 per message
  routing::RequestText text;            // what the routing features read (chat requests only)

  // The whole body as a document (an object: validation passed), parsed on first use.
  const boost::json::object& document(std::string_view body);

 private:
  // The document lives in an arena: many small nodes, all freed together, the first 4 KiB in one
  // block. Made on first use only (an Anthropic translation): a request that never asks does
  // not carry it in its coroutine frame.
  struct Arena {
    unsigned char buffer[4096];
    boost::json::monotonic_resource resource{buffer, sizeof(buffer)};
  };
  std::unique_ptr<Arena> arena_;
  boost::json::value doc_;
};

constexpr size_t kMaxModelNameBytes = 256;
// A model name a client may send: at most kMaxModelNameBytes, no control characters.
std::optional<std::string> check_model_name(std::string_view model);

// Checks `body` and fills `out`; returns the error message for a 400, or nothing.
std::optional<std::string> validate_chat_request(std::string_view body, ChatRequest& out);

// The same for a /v1/embeddings body: `model`, and `input` as a string, or a list (at most
// kMaxEmbeddingInputs) of strings, of token ids, or of token id lists; `prompt_tokens` estimates
// the input (text length / 4, one per token id). `stream` stays false.
constexpr size_t kMaxEmbeddingInputs = 2048;
std::optional<std::string> validate_embeddings_request(std::string_view body, ChatRequest& out);

}  // namespace switchboard::gateway
