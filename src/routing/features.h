// Request features for the contextual router: what a request looks like, read from the request
// itself, so that routing learns task kinds without the client's hints.
//
// `TextScanner` is fed the message texts during the proxy's one pass over the body (the gateway's
// streaming validation): message by message, chunk by chunk, with bounded work per message (words
// are hashed from the first kWordBytes of user messages only; fences are counted over a user
// message's whole text by a byte search). `build_features` then turns what it saw, with the
// request's context (hints, client, user agent), into a `FeatureVector`: a sparse vector over a
// fixed space of kDim hashed slots, at most kMaxFeatures of them set.
//
// Features: a bias; the length of the last user message and of the whole conversation (log2
// buckets); the number of turns; code fences in the last user message and their languages; tool
// definitions and tool results present; hashed word unigrams and bigrams of the last user message
// (together weighted like one feature); the system prompt's fingerprint; the client key; the user
// agent's product; and the hints `x-switchboard-category` and `-complexity` as strong features.
//
// Thread-safety: plain values; one request, one thread.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/learned.h"

namespace switchboard::routing {

struct FeatureVector {
  static constexpr uint32_t kDim = kContextualDim;  // hashed slots (a power of two)
  static constexpr size_t kMaxFeatures = 80;
  uint16_t size = 0;
  std::array<uint16_t, kMaxFeatures> index{};
  std::array<float, kMaxFeatures> value{};

  // Adds `v` at the slot of `hash` (summed when two features share a slot). False when full.
  bool add(uint64_t hash, float v);
  bool empty() const { return size == 0; }

  // A compact form (a word per feature: slot and value in 1/1024 steps), for the feedback ledger
  // and the learning journal; `decode` checks what it reads and returns an empty vector on bad
  // input.
  std::string encode() const;
  static FeatureVector decode(std::string_view bytes);
};

// What the scan of one request's messages found.
struct RequestText {
  static constexpr size_t kMaxWords = 96;
  static constexpr size_t kMaxLanguages = 4;
  uint32_t last_user_bytes = 0;
  uint64_t total_bytes = 0;
  uint32_t turns = 0;
  uint32_t fences = 0;  // ``` markers in the last user message
  bool tools_defined = false;
  bool tool_results = false;
  uint64_t system_fingerprint = 0;  // 0 = no system prompt
  uint8_t n_words = 0;
  uint8_t n_languages = 0;
  std::array<uint64_t, kMaxWords> words{};  // hashes of the last user message's words, in order
  std::array<uint64_t, kMaxLanguages> languages{};  // hashes of its fences' language tags
};

// Streams message texts into a RequestText. Per message: begin_message(), any number of
// text(chunk) calls (JSON strings already unescaped, in pieces), set_role() whenever the role is
// known (before or after the content), end_message().
class TextScanner {
 public:
  static constexpr size_t kWordBytes = 2048;         // words hashed from a user message's start
  static constexpr size_t kFingerprintBytes = 4096;  // system prompt bytes fingerprinted

  enum class Role : uint8_t { kUnknown, kSystem, kUser, kAssistant, kTool };

  void begin_message();
  void set_role(std::string_view role);
  void text(std::string_view chunk);
  void end_message();
  void set_tools_defined() { out_.tools_defined = true; }
  // Keeps the last user message's words as text too (for explanations, not the request path).
  void keep_words() { keep_words_ = true; }

  const RequestText& result() const { return out_; }
  const std::vector<std::string>& words() const { return last_words_; }

 private:
  void flush_word();
  // Reads words (and fences) from `chunk`; returns how much it read, less than all of it once
  // every word slot is taken.
  size_t scan_words(std::string_view chunk);
  void count_fences(std::string_view text);

  RequestText out_;
  // The message being read.
  Role role_ = Role::kUnknown;
  uint64_t bytes_ = 0;
  uint32_t fences_ = 0;
  uint8_t backticks_ = 0;     // consecutive '`' at the end of the text so far
  bool after_fence_ = false;  // reading a fence's language tag
  uint64_t fp_ = 0;
  uint8_t n_words_ = 0, n_languages_ = 0;
  std::array<uint64_t, RequestText::kMaxWords> words_{};
  std::array<uint64_t, RequestText::kMaxLanguages> languages_{};
  uint64_t word_hash_ = 0;
  uint8_t word_len_ = 0;
  bool words_full_ = false;
  bool keep_words_ = false;
  std::string word_text_;
  std::vector<std::string> words_text_, last_words_;
};

// The request's context beside its text.
struct FeatureContext {
  std::string_view category;    // x-switchboard-category ("" = none)
  std::string_view complexity;  // x-switchboard-complexity ("" = none)
  uint64_t client = 0;          // a tag of the client key (0 = none)
  std::string_view user_agent;
};

// The features of a request. `names`, when given, receives a readable name per feature added, in
// order (for `route` and the admin view; not on the request path); `words` (the scanner's kept
// words) names the word features.
FeatureVector build_features(const RequestText& text, const FeatureContext& context,
                             std::vector<std::string>* names = nullptr,
                             const std::vector<std::string>* words = nullptr);

// The slot a named feature lands in ("len:7", "w:traceback"...), for explanations and tests.
uint16_t feature_slot(std::string_view name);

// A readable name for a slot: the features with few values (bias, len:N, ctx:N, turns:N,
// fences:N, tools:*, complexity:*) and `extra` names ("category:debugging"...) that land in it,
// or "#<slot>" for a hashed word, bigram, language, system prompt, client or user agent.
std::string describe_slot(uint16_t slot, const std::vector<std::string>& extra = {});

// 64-bit hash of a byte string (FNV-1a with a final mix); stable across builds.
uint64_t hash_bytes(std::string_view s, uint64_t seed = 0);

}  // namespace switchboard::routing
