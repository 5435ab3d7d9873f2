// Request features (features.h).
#include "routing/features.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

namespace switchboard::routing {

namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

// A feature's hash: its value's bytes under its namespace's seed ("len", "w"...).
uint64_t seed_of(std::string_view ns) {
  uint64_t h = kFnvOffset;
  for (unsigned char c : ns) h = (h ^ c) * kFnvPrime;
  return h;
}

const uint64_t kWordSeed = seed_of("w");
const uint64_t kBigramSeed = seed_of("b");
const uint64_t kLangSeed = seed_of("lang");

uint64_t bigram(uint64_t a, uint64_t b) {
  return mix(a ^ ((b << 17) | (b >> 47)) ^ kBigramSeed);
}

bool word_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c >= 0x80;  // UTF-8 bytes: words of any script
}

unsigned char lower(unsigned char c) {
  return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

int log2_bucket(uint64_t n) {
  int b = 0;
  while (n > 1 && b < 24) {
    n >>= 1;
    ++b;
  }
  return b;
}

}  // namespace

uint64_t hash_bytes(std::string_view s, uint64_t seed) {
  uint64_t h = seed ? seed : kFnvOffset;
  for (unsigned char c : s) h = (h ^ c) * kFnvPrime;
  return mix(h);
}

bool FeatureVector::add(uint64_t hash, float v) {
  const auto slot = static_cast<uint16_t>(hash & (kDim - 1));
  for (uint16_t i = 0; i < size; ++i) {
    if (index[i] == slot) {
      value[i] += v;
      return true;
    }
  }
  if (size == kMaxFeatures) return false;
  index[size] = slot;
  value[size] = v;
  ++size;
  return true;
}

std::string FeatureVector::encode() const {
  std::string out(size_t(size) * 4, '\0');
  for (uint16_t i = 0; i < size; ++i) {
    const uint32_t q = uint32_t(std::clamp(value[i], 0.0f, 63.0f) * 1024.0f + 0.5f);
    const uint32_t word = (uint32_t(index[i]) << 16) | std::min<uint32_t>(q, 0xffff);
    std::memcpy(out.data() + 4 * i, &word, 4);
  }
  return out;
}

FeatureVector FeatureVector::decode(std::string_view bytes) {
  FeatureVector v;
  if (bytes.size() % 4 != 0 || bytes.size() / 4 > kMaxFeatures) return v;
  for (size_t i = 0; i < bytes.size() / 4; ++i) {
    uint32_t word;
    std::memcpy(&word, bytes.data() + 4 * i, 4);
    const uint32_t slot = word >> 16;
    if (slot >= kDim) return FeatureVector{};
    v.index[v.size] = uint16_t(slot);
    v.value[v.size] = float(word & 0xffff) / 1024.0f;
    ++v.size;
  }
  return v;
}

// ---- TextScanner

void TextScanner::begin_message() {
  role_ = Role::kUnknown;
  bytes_ = 0;
  fences_ = 0;
  backticks_ = 0;
  after_fence_ = false;
  fp_ = kFnvOffset;
  n_words_ = 0;
  n_languages_ = 0;
  word_hash_ = kWordSeed;
  word_len_ = 0;
  words_full_ = false;
  if (keep_words_) {
    words_text_.clear();
    word_text_.clear();
  }
}

void TextScanner::set_role(std::string_view role) {
  if (role == "user")
    role_ = Role::kUser;
  else if (role == "system" || role == "developer")
    role_ = Role::kSystem;
  else if (role == "assistant")
    role_ = Role::kAssistant;
  else if (role == "tool" || role == "function")
    role_ = Role::kTool;
}

void TextScanner::flush_word() {
  if (word_len_ > 0) {
    if (after_fence_) {
      // The word right after ``` names the fence's language.
      if (n_languages_ < RequestText::kMaxLanguages)
        languages_[n_languages_++] = mix(word_hash_ ^ kLangSeed);
    } else if (n_words_ < RequestText::kMaxWords) {
      words_[n_words_++] = mix(word_hash_);
      if (keep_words_) words_text_.push_back(word_text_);
    }
  }
  after_fence_ = false;
  word_hash_ = kWordSeed;
  word_len_ = 0;
  if (keep_words_) word_text_.clear();
}

size_t TextScanner::scan_words(std::string_view chunk) {
  size_t i = 0;
  for (; i < chunk.size(); ++i) {
    const auto c = static_cast<unsigned char>(chunk[i]);
    if (c == '`') {
      flush_word();
      if (++backticks_ == 3) {
        ++fences_;
        backticks_ = 0;
        after_fence_ = true;
      }
      continue;
    }
    backticks_ = 0;
    if (word_char(c)) {
      if (word_len_ < 32) {
        word_hash_ = (word_hash_ ^ lower(c)) * kFnvPrime;
        if (keep_words_) word_text_ += char(lower(c));
      }
      if (word_len_ < 255) ++word_len_;
    } else {
      const bool newline = c == '\n';
      const bool was_fence = after_fence_;
      flush_word();
      // A fence's tag ends its line; a space right after ``` means no tag.
      if (was_fence && !newline && word_len_ == 0) after_fence_ = false;
      // Every word slot is taken: the rest of the text is only searched for fences.
      if (n_words_ == RequestText::kMaxWords && !after_fence_) return i + 1;
    }
  }
  return i;
}

void TextScanner::count_fences(std::string_view text) {
  if (text.empty()) return;
  for (size_t at = text.find('`'); at != std::string_view::npos; at = text.find('`', at + 1)) {
    // A run of backticks may continue from the text before (backticks_ > 0 then).
    const bool continues = at > 0 ? text[at - 1] == '`' : backticks_ > 0;
    backticks_ = continues ? backticks_ + 1 : 1;
    if (backticks_ == 3) {
      ++fences_;
      backticks_ = 0;
    }
  }
  if (text.back() != '`') backticks_ = 0;
}

void TextScanner::text(std::string_view chunk) {
  if (role_ == Role::kSystem || role_ == Role::kUnknown) {
    const size_t room = bytes_ < kFingerprintBytes ? kFingerprintBytes - bytes_ : 0;
    for (unsigned char c : chunk.substr(0, std::min(room, chunk.size())))
      fp_ = (fp_ ^ c) * kFnvPrime;
  }
  if (role_ == Role::kUser || role_ == Role::kUnknown) {
    // Words from the first kWordBytes until every word slot is taken; fences over the whole
    // text, by a byte search.
    const size_t word_room = bytes_ < kWordBytes && !words_full_ ? kWordBytes - bytes_ : 0;
    const std::string_view head = chunk.substr(0, std::min(word_room, chunk.size()));
    const size_t scanned = scan_words(head);
    if (scanned < head.size()) words_full_ = true;
    count_fences(chunk.substr(scanned));
  }
  bytes_ += chunk.size();
}

void TextScanner::end_message() {
  flush_word();
  out_.turns++;
  out_.total_bytes += bytes_;
  switch (role_) {
    case Role::kUser:
    case Role::kUnknown:
      if (role_ == Role::kUser || bytes_ > 0) {
        out_.last_user_bytes = uint32_t(std::min<uint64_t>(bytes_, UINT32_MAX));
        out_.fences = fences_;
        out_.n_words = n_words_;
        out_.words = words_;
        out_.n_languages = n_languages_;
        out_.languages = languages_;
        if (keep_words_) last_words_ = words_text_;
      }
      break;
    case Role::kSystem:
      if (bytes_ > 0) out_.system_fingerprint = mix(fp_) | 1;
      break;
    case Role::kTool:
      out_.tool_results = true;
      break;
    case Role::kAssistant:
      break;
  }
}

// ---- build_features

FeatureVector build_features(const RequestText& t, const FeatureContext& ctx,
                             std::vector<std::string>* names,
                             const std::vector<std::string>* words) {
  FeatureVector v;
  // Where each slot sits in the vector (0 = absent): a repeated word adds to its entry without
  // a search.
  std::array<uint8_t, FeatureVector::kDim> at{};
  static_assert(FeatureVector::kMaxFeatures < 255);
  auto put = [&](uint64_t hash, float x) {
    const size_t slot = hash & (FeatureVector::kDim - 1);
    if (at[slot]) {
      v.value[at[slot] - 1] += x;
      return true;
    }
    if (v.size == FeatureVector::kMaxFeatures) return false;
    v.index[v.size] = uint16_t(slot);
    v.value[v.size] = x;
    at[slot] = uint8_t(++v.size);
    return true;
  };
  auto add = [&](std::string_view ns, std::string_view value, float x) {
    put(hash_bytes(value, seed_of(ns)), x);
    if (names) names->push_back(std::string(ns) + ":" + std::string(value));
  };
  add("bias", "", 1.0f);
  add("len", std::to_string(log2_bucket(t.last_user_bytes)), 1.0f);
  add("ctx", std::to_string(log2_bucket(t.total_bytes)), 1.0f);
  add("turns", std::to_string(std::min(log2_bucket(t.turns), 6)), 1.0f);
  add("fences", std::to_string(std::min<uint32_t>(t.fences / 2 + (t.fences % 2), 3)), 1.0f);
  if (t.tools_defined) add("tools", "defined", 1.0f);
  if (t.tool_results) add("tools", "results", 1.0f);
  if (t.system_fingerprint) add("system", std::to_string(t.system_fingerprint % 100000), 1.0f);
  if (ctx.client) add("client", std::to_string(ctx.client % 100000), 1.0f);
  if (!ctx.user_agent.empty()) {
    // The product ("claude-cli", "OpenAI/JS"), not its version: versions change weekly.
    std::string_view ua = ctx.user_agent.substr(0, ctx.user_agent.find_first_of(" /("));
    add("ua", ua.substr(0, 32), 1.0f);
  }
  // Hints are strong features: the caller knows the task.
  if (!ctx.category.empty()) add("category", ctx.category.substr(0, 64), 2.0f);
  if (!ctx.complexity.empty()) add("complexity", ctx.complexity.substr(0, 16), 2.0f);
  for (uint8_t i = 0; i < t.n_languages; ++i) {
    put(t.languages[i], 1.0f);
    if (names)
      names->push_back("lang:#" + std::to_string(t.languages[i] & (FeatureVector::kDim - 1)));
  }
  // Words and bigrams together weigh like one feature (a long message is not more certain).
  const size_t n = t.n_words;
  if (n > 0) {
    const size_t terms = n + (n - 1);
    const float x = float(1.0 / std::sqrt(double(terms)));
    for (size_t i = 0; i < n; ++i) {
      if (!put(t.words[i], x)) break;
      if (names)
        names->push_back("w:" +
                         (words && i < words->size() ? (*words)[i] : "#" + std::to_string(i)));
      if (i + 1 < n) {
        if (!put(bigram(t.words[i], t.words[i + 1]), x)) break;
        if (names)
          names->push_back("b:" + (words && i + 1 < words->size()
                                       ? (*words)[i] + " " + (*words)[i + 1]
                                       : "#" + std::to_string(i)));
      }
    }
  }
  return v;
}

uint16_t feature_slot(std::string_view name) {
  const auto colon = name.find(':');
  const std::string_view ns = name.substr(0, colon);
  const std::string_view value = colon == std::string_view::npos ? "" : name.substr(colon + 1);
  uint64_t h;
  if (ns == "w") {
    uint64_t w = kWordSeed;
    for (unsigned char c : value.substr(0, 32)) w = (w ^ lower(c)) * kFnvPrime;
    h = mix(w);
  } else if (ns == "b") {
    const auto space = value.find(' ');
    auto word = [](std::string_view s) {
      uint64_t w = kWordSeed;
      for (unsigned char c : s.substr(0, 32)) w = (w ^ lower(c)) * kFnvPrime;
      return mix(w);
    };
    h = bigram(word(value.substr(0, space)),
               word(space == std::string_view::npos ? "" : value.substr(space + 1)));
  } else {
    h = hash_bytes(value, seed_of(ns));
  }
  return uint16_t(h & (FeatureVector::kDim - 1));
}

std::string describe_slot(uint16_t slot, const std::vector<std::string>& extra) {
  static const std::vector<std::pair<uint16_t, std::string>> kKnown = [] {
    std::vector<std::pair<uint16_t, std::string>> t;
    auto add = [&](std::string name) { t.emplace_back(feature_slot(name), std::move(name)); };
    add("bias:");
    for (int i = 0; i <= 24; ++i) add("len:" + std::to_string(i));
    for (int i = 0; i <= 24; ++i) add("ctx:" + std::to_string(i));
    for (int i = 0; i <= 6; ++i) add("turns:" + std::to_string(i));
    for (int i = 0; i <= 3; ++i) add("fences:" + std::to_string(i));
    add("tools:defined");
    add("tools:results");
    for (const char* c : {"simple", "moderate", "high", "critical"})
      add(std::string("complexity:") + c);
    return t;
  }();
  std::string out;
  for (const auto& [s, name] : kKnown)
    if (s == slot) out += (out.empty() ? "" : "|") + name;
  for (const auto& name : extra)
    if (feature_slot(name) == slot) out += (out.empty() ? "" : "|") + name;
  return out.empty() ? "#" + std::to_string(slot) : out;
}

}  // namespace switchboard::routing
