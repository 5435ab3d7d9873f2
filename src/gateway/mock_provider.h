// MockProvider: a fake OpenAI-compatible upstream for demos, tests and benchmarks.
//
// Answers POST /v1/chat/completions (stream and non-stream) after a configurable latency, with
// per-API-key rpm and concurrency limits answered by real 429s and rate-limit headers
// (retry-after-ms, Retry-After, x-ratelimit-*-requests), scripted failures (status codes, hangs,
// streams cut half-way), random failure rates, and simulated answer quality per model and
// category. The scenario can be replaced at run time (`set_scenario`, or POST /mock/scenario with
// a YAML body); GET /mock/stats returns counters as JSON.
//
// Thread-safety: all public methods may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/status.h"

namespace switchboard::gateway {

struct MockStats {
  uint64_t requests = 0;
  std::map<int, uint64_t> by_status;
  uint64_t streams_dropped = 0;
  int64_t max_in_flight_per_key = 0;  // the highest concurrency any one key reached
};

class MockProvider {
 public:
  explicit MockProvider(MockScenario scenario);
  ~MockProvider();
  Status start(const std::string& listen, int threads = 1);
  void stop();
  uint16_t port() const;
  void set_scenario(MockScenario scenario);
  MockStats stats() const;
  void reset_stats();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// `switchboard mock-provider`: runs until SIGINT/SIGTERM. Returns the process exit code.
int run_mock_provider(const std::string& listen, const std::string& scenario_file);

}  // namespace switchboard::gateway
