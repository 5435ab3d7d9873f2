// Helpers shared by the fuzz targets: invariant checks that fire in every build type, and a
// deterministic way to cut an input into slices.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>
#include <vector>

// A broken invariant is a finding like a crash: abort so that libFuzzer saves the input. Not
// assert(), which NDEBUG would silence.
#define FUZZ_CHECK(cond)                                                                \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)

namespace switchboard::fuzz {

inline std::string_view as_view(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Slice sizes derived from the input itself (FNV-1a, then xorshift), so that a saved crash
// replays with the same slicing while different inputs still get different cuts.
class Slicer {
 public:
  explicit Slicer(std::string_view seed, uint64_t salt = 0)
      : state_(14695981039346656037ull ^ salt) {
    for (unsigned char c : seed) state_ = (state_ ^ c) * 1099511628211ull;
    if (state_ == 0) state_ = 1;
  }
  uint64_t next() {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return state_;
  }
  // In [1, max].
  size_t size(size_t max) { return 1 + static_cast<size_t>(next() % max); }

  // `s` cut into consecutive slices of 1..max_slice bytes (none when `s` is empty).
  std::vector<std::string_view> slices(std::string_view s, size_t max_slice) {
    std::vector<std::string_view> out;
    while (!s.empty()) {
      const size_t n = std::min(s.size(), size(max_slice));
      out.push_back(s.substr(0, n));
      s.remove_prefix(n);
    }
    return out;
  }

 private:
  uint64_t state_;
};

}  // namespace switchboard::fuzz
