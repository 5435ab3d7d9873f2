// Helpers shared by the store tests (the common ones come from tests/support).
#pragma once

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

}  // namespace switchboard::store::storetest
