// Helpers shared by the breaker tests.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <map>
#include <sstream>
#include <string>

#include "breaker/breaker.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/metrics.h"

namespace switchboard::breaker::testing {

using namespace std::chrono_literals;

// Small numbers so every rule is reachable in a few calls.
inline BreakerConfig test_config() {
  BreakerConfig c;
  c.window = 10;
  c.min_calls = 5;
  c.failure_rate = 0.5;
  c.slow_call_ms = 1000;
  c.slow_call_rate = 0.8;
  c.open_ms = 1000;
  c.open_multiplier = 2.0;
  c.max_open_ms = 5000;
  c.half_open_probes = 2;
  c.half_open_timeout_ms = 10000;
  c.count_rate_limits = false;
  return c;
}

// A target name unique to this run of the test (also under --gtest_repeat), so metric series
// never carry counts over from another test.
inline std::string unique_target(const std::string& suffix = "") {
  static std::atomic<int> runs{0};
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return std::string("provider:") + info->test_suite_name() + "." + info->name() + "." +
         std::to_string(runs.fetch_add(1)) + suffix;
}

// Value of the series `name{labels...}` in the metrics text, NaN when absent.
inline double metric_value(const std::string& name,
                           const std::map<std::string, std::string>& labels) {
  std::istringstream in(metrics::serialize());
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t brace = line.find('{');
    const size_t close = line.rfind('}');
    if (brace == std::string::npos || close == std::string::npos) continue;
    if (line.compare(0, brace, name) != 0 || brace != name.size()) continue;
    const std::string body = line.substr(brace + 1, close - brace - 1);
    std::map<std::string, std::string> have;
    size_t pos = 0;
    while (pos < body.size()) {
      const size_t eq = body.find('=', pos);
      const size_t q1 = body.find('"', eq);
      const size_t q2 = body.find('"', q1 + 1);
      if (eq == std::string::npos || q2 == std::string::npos) break;
      have[body.substr(pos, eq - pos)] = body.substr(q1 + 1, q2 - q1 - 1);
      pos = q2 + 1;
      if (pos < body.size() && body[pos] == ',') ++pos;
    }
    bool match = true;
    for (const auto& [k, v] : labels) {
      auto it = have.find(k);
      if (it == have.end() || it->second != v) match = false;
    }
    if (match) return std::stod(line.substr(close + 1));
  }
  return std::nan("");
}

}  // namespace switchboard::breaker::testing
