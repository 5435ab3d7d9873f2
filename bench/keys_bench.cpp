// Key pool hot path: one acquire + complete per iteration over 16 keys, no limit reached.
#include <benchmark/benchmark.h>

#include <memory>
#include <mutex>

#include "common/clock.h"
#include "keys/keys.h"

namespace {

using switchboard::KeyConfig;
using switchboard::ProviderConfig;
using switchboard::SystemClock;
using switchboard::keys::KeyPool;
using switchboard::keys::Outcome;

KeyPool& shared_pool() {
  static KeyPool* pool = [] {
    ProviderConfig p;
    p.name = "bench";
    // Limits well above what a benchmark run can reach, so every window is checked and updated.
    p.limits.rpm = 1'000'000'000;
    p.limits.tpm = 1'000'000'000'000;
    p.limits.max_concurrent = 1'000'000;
    for (int i = 1; i <= 16; ++i) {
      KeyConfig k;
      k.id = "bench#" + std::to_string(i);
      k.secret = "sk-bench-" + std::to_string(i);
      p.keys.push_back(k);
    }
    return new KeyPool(p, SystemClock::instance());
  }();
  return *pool;
}

void BM_KeyPoolAcquireComplete(benchmark::State& state) {
  KeyPool& pool = shared_pool();
  Outcome outcome;
  outcome.tokens_used = 120;
  for (auto _ : state) {
    auto r = pool.acquire("gpt-4o-mini", 100);
    if (!r.ok()) {
      state.SkipWithError("no key");
      break;
    }
    r.lease().complete(outcome);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeyPoolAcquireComplete);
BENCHMARK(BM_KeyPoolAcquireComplete)->Threads(2);
// Wall-clock rate of both threads together: items_per_second here is the pool's total throughput.
BENCHMARK(BM_KeyPoolAcquireComplete)->Threads(2)->UseRealTime();

}  // namespace
