// Circuit breaker hot paths. Run: switchboard_bench --benchmark_filter=Breaker
#include <benchmark/benchmark.h>

#include <memory>

#include "breaker/breaker.h"
#include "common/clock.h"

namespace switchboard::breaker {
namespace {

using namespace std::chrono_literals;

// Production-like numbers: the DESIGN.md defaults.
BreakerConfig bench_config() {
  return BreakerConfig{};
}

// Closed state, one admitted call with a fast success: the path every healthy request takes.
void BM_BreakerAllowRecord(benchmark::State& state) {
  static CircuitBreaker b("provider:bench", TargetKind::kProvider, bench_config(),
                          SystemClock::instance());
  for (auto _ : state) {
    Permit p = b.try_acquire();
    benchmark::DoNotOptimize(p);
    p.record(OutcomeClass::kSuccess, 5ms);
  }
}
BENCHMARK(BM_BreakerAllowRecord);
BENCHMARK(BM_BreakerAllowRecord)->Threads(2);

// Closed state with one call in ten failing (below the 50% threshold): failures rescan the
// window, so this is the cost on a provider that is degraded but not down.
void BM_BreakerAllowRecordTenPercentFailures(benchmark::State& state) {
  CircuitBreaker b("provider:bench-mixed", TargetKind::kProvider, bench_config(),
                   SystemClock::instance());
  int i = 0;
  for (auto _ : state) {
    Permit p = b.try_acquire();
    p.record(++i % 10 == 0 ? OutcomeClass::kServerError : OutcomeClass::kSuccess, 5ms);
  }
  if (b.state() != BreakerState::kClosed) state.SkipWithError("breaker opened");
}
BENCHMARK(BM_BreakerAllowRecordTenPercentFailures);

// Open state: a rejection (one clock read, no lock).
void BM_BreakerRejectOpen(benchmark::State& state) {
  BreakerConfig c = bench_config();
  c.open_ms = 3'600'000;
  c.max_open_ms = 3'600'000;
  CircuitBreaker b("provider:bench-open", TargetKind::kProvider, c, SystemClock::instance());
  for (int i = 0; i < c.window; ++i) b.try_acquire().record(OutcomeClass::kServerError);
  for (auto _ : state) {
    Permit p = b.try_acquire();
    benchmark::DoNotOptimize(p);
  }
  if (b.state() != BreakerState::kOpen) state.SkipWithError("breaker not open");
}
BENCHMARK(BM_BreakerRejectOpen);

// Registry lookup of an existing (provider, model) breaker (no allocation).
void BM_BreakerRegistryLookup(benchmark::State& state) {
  BreakerRegistry reg(SystemClock::instance(), bench_config());
  for (int i = 0; i < 50; ++i) reg.model("openai", "model-" + std::to_string(i));
  for (auto _ : state) {
    auto b = reg.model("openai", "model-17");
    benchmark::DoNotOptimize(b);
  }
}
BENCHMARK(BM_BreakerRegistryLookup);

}  // namespace
}  // namespace switchboard::breaker
