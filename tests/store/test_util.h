// Helpers shared by the store tests (the common ones come from tests/support).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <string>

#include "store/store.h"
#include "test_support.h"

namespace switchboard::store::storetest {

using testsupport::kSanitized;
using testsupport::query_int;
using testsupport::query_text;

// Store tests' scratch directories are named after them.
class TempDir : public testsupport::TempDir {
 public:
  TempDir() : testsupport::TempDir("store") {}
};

inline OutcomeEvent make_outcome(const std::string& model, WallTime t, int64_t latency_us = 1000,
                                 const char* status = kStatusOk) {
  OutcomeEvent o;
  o.time = t;
  o.request_id = "req-1";
  o.route = "auto";
  o.model = model;
  o.provider = "openai";
  o.key_id = "openai#1";
  o.status_class = status;
  o.latency_us = latency_us;
  o.tokens_in = 100;
  o.tokens_out = 20;
  o.cost_usd = 0.001;
  return o;
}

// The crash tests' children print how many outcomes they saw acknowledged, a line each time: the
// last complete line read from `fd` until it closes, as a number (0 when none).
inline uint64_t read_last_ack(int fd) {
  std::string data;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
  size_t end = data.rfind('\n');
  if (end == std::string::npos) return 0;
  size_t begin = data.rfind('\n', end - 1);
  begin = begin == std::string::npos ? 0 : begin + 1;
  return std::stoull(data.substr(begin, end - begin));
}

}  // namespace switchboard::store::storetest
