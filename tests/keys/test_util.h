// Helpers shared by the key pool tests.
#pragma once

#include <string>

#include "common/metrics.h"
#include "keys/keys.h"

namespace switchboard::keys::testing {

inline ProviderConfig make_provider(const std::string& name, int keys, RateLimits limits = {},
                                    CooldownConfig cooldown = {}) {
  ProviderConfig p;
  p.name = name;
  p.limits = limits;
  p.cooldown = cooldown;
  for (int i = 1; i <= keys; ++i) {
    KeyConfig k;
    k.id = name + "#" + std::to_string(i);
    k.secret = "sk-test-secret-" + name + "-" + std::to_string(i);
    p.keys.push_back(k);
  }
  return p;
}

inline double counter_value(const std::string& family, const std::string& provider,
                            const std::string& outcome = "") {
  metrics::flush_all();  // hot-path counters are merged at scrape time
  auto& f = metrics::counter_family(family, "test");
  if (outcome.empty()) return f.Add({{"provider", provider}}).Value();
  return f.Add({{"provider", provider}, {"outcome", outcome}}).Value();
}

}  // namespace switchboard::keys::testing
