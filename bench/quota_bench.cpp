// Provider quotas on the request path: the standing asked for each candidate, and each upstream
// call counted (from every server thread at once).
#include <benchmark/benchmark.h>

#include "quota/quota.h"

namespace switchboard::quota {
namespace {

std::vector<ProviderConfig> providers() {
  std::vector<ProviderConfig> out(4);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].name = "p" + std::to_string(i);
    out[i].quota.tokens = 1'000'000'000'000;
  }
  return out;
}

void BM_QuotaLevel(benchmark::State& state) {
  static QuotaBook book;
  const WallTime now = std::chrono::system_clock::now();
  if (state.thread_index() == 0) book.configure(providers(), now);
  for (auto _ : state) benchmark::DoNotOptimize(book.level("p2", now));
}
BENCHMARK(BM_QuotaLevel)->Threads(1)->Threads(2);

void BM_QuotaAdd(benchmark::State& state) {
  static QuotaBook book;
  const WallTime now = std::chrono::system_clock::now();
  if (state.thread_index() == 0) book.configure(providers(), now);
  const Usage call{1, 800, 1200};
  for (auto _ : state) benchmark::DoNotOptimize(book.add("p1", call, now));
}
BENCHMARK(BM_QuotaAdd)->Threads(1)->Threads(2);

}  // namespace
}  // namespace switchboard::quota
