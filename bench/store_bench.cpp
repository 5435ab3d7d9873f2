// Store benchmarks: the request-path cost of enqueue, and sustained committed outcome rows/s.
#include <benchmark/benchmark.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "store/store.h"

namespace switchboard::store {
namespace {

class BenchDir {
 public:
  BenchDir() {
    char tmpl[] = "/tmp/switchboard-store-bench-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~BenchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const char* name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

OutcomeEvent bench_outcome() {
  OutcomeEvent o;
  o.time = std::chrono::system_clock::now();
  o.request_id = "req-0123456789";
  o.route = "auto";
  o.model = "gpt-4o-mini";
  o.provider = "openai";
  o.key_id = "openai#2";
  o.status_class = kStatusOk;
  o.category = "coding";
  o.latency_us = 123456;
  o.tokens_in = 1200;
  o.tokens_out = 340;
  o.cost_usd = 0.00042;
  o.attempts = 1;
  return o;
}

// The request path: copy an outcome into the queue while the writer commits in the background.
// With the default capacity the writer cannot keep up with a tight loop, so this also exercises
// drop-oldest once the queue is full (as it would be under overload).
void BM_StoreEnqueue(benchmark::State& state) {
  BenchDir dir;
  SqliteStoreOptions options;
  options.state.path = dir.file("enqueue.db");
  options.state.retention_days = 0;
  auto store = open_sqlite_store(options);
  if (!store.ok()) {
    state.SkipWithError(store.status().to_string().c_str());
    return;
  }
  const OutcomeEvent o = bench_outcome();
  for (auto _ : state) {
    benchmark::DoNotOptimize((*store)->enqueue(o));
  }
  state.SetItemsProcessed(state.iterations());
  const auto c = (*store)->counters();
  state.counters["dropped_frac"] =
      c.enqueued + c.dropped ? static_cast<double>(c.dropped) / (c.enqueued) : 0;
  (*store)->close();
}
BENCHMARK(BM_StoreEnqueue);

// Enqueues state.range(0) outcomes per iteration and waits until they are committed;
// items_per_second = committed rows/s.
void sustained_write(benchmark::State& state, Store& store) {
  const int64_t per_iteration = state.range(0);
  OutcomeEvent o = bench_outcome();
  for (auto _ : state) {
    for (int64_t i = 0; i < per_iteration; ++i) store.enqueue(o);
    if (!store.flush().ok()) {
      state.SkipWithError("flush failed");
      break;
    }
  }
  const auto c = store.counters();
  if (c.dropped != 0) state.SkipWithError("events were dropped");
  state.SetItemsProcessed(static_cast<int64_t>(c.committed));
  store.close();
}

// Sustained write throughput: enqueue batches of outcomes and wait until they are committed
// (synchronous=NORMAL, default group-commit settings). items_per_second = committed rows/s.
void BM_StoreSustainedWrite(benchmark::State& state) {
  BenchDir dir;
  SqliteStoreOptions options;
  options.state.path = dir.file("sustained.db");
  options.state.retention_days = 0;
  options.state.synchronous = SyncMode::kNormal;
  auto store = open_sqlite_store(options);
  if (!store.ok()) {
    state.SkipWithError(store.status().to_string().c_str());
    return;
  }
  sustained_write(state, **store);
}
BENCHMARK(BM_StoreSustainedWrite)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same against PostgreSQL (the shared-state backend), when SWITCHBOARD_BENCH_PG_URL names a
// database (bench/store_backends.sh starts a private server and runs both side by side).
void BM_PostgresSustainedWrite(benchmark::State& state) {
  const char* url = std::getenv("SWITCHBOARD_BENCH_PG_URL");
  if (url == nullptr || *url == '\0') {
    state.SkipWithError("SWITCHBOARD_BENCH_PG_URL is not set (see bench/store_backends.sh)");
    return;
  }
  PostgresStoreOptions options;
  options.state.url = url;
  options.state.node = "bench-" + std::to_string(::getpid());
  options.state.retention_days = 0;
  auto store = open_postgres_store(options);
  if (!store.ok()) {
    state.SkipWithError(store.status().to_string().c_str());
    return;
  }
  sustained_write(state, **store);
}
BENCHMARK(BM_PostgresSustainedWrite)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace switchboard::store
