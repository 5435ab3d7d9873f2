// Metrics: one process-wide Prometheus registry (prometheus-cpp core, no HTTP server).
//
// Names follow `switchboard_<module>_<what>_<unit>`. Resolve a family and its labelled child
// once (at construction of the owning object), never per request: `Add()` takes a lock and
// hashes labels, while `Counter::Increment()` on a resolved handle is a single atomic add.
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

namespace switchboard::metrics {

prometheus::Registry& registry();

// Registering the same name twice returns the same family.
prometheus::Family<prometheus::Counter>& counter_family(const std::string& name,
                                                        const std::string& help);
prometheus::Family<prometheus::Gauge>& gauge_family(const std::string& name,
                                                    const std::string& help);
prometheus::Family<prometheus::Histogram>& histogram_family(const std::string& name,
                                                            const std::string& help);

// Latency buckets in seconds, from 50 µs to 10 min, for request and upstream latencies.
const prometheus::Histogram::BucketBoundaries& latency_buckets_seconds();

// A counter for hot paths that many threads bump at once. `prometheus::Counter::Increment` is a
// compare-and-swap loop on one shared double: two cores incrementing it take turns owning its
// cache line. A ShardedCounter gives each thread a slot of its own (a plain relaxed add on a
// line nobody else writes) and moves the sum into its prometheus counter on `flush`, which every
// scrape (`serialize`, `flush_all`) does first. Like Envoy's per-thread stats, merged on read.
//
// Thread-safety: `add` from any thread; `flush` from any thread (serialised internally). The
// prometheus counter must outlive this object (families live in the process-wide registry).
class ShardedCounter {
 public:
  explicit ShardedCounter(prometheus::Counter* target = nullptr);
  ~ShardedCounter();  // flushes what is left
  ShardedCounter(const ShardedCounter&) = delete;
  ShardedCounter& operator=(const ShardedCounter&) = delete;

  // Binds a default-constructed counter to its target (once, before any `add`).
  void bind(prometheus::Counter* target);
  void add(uint64_t n = 1) { slots_[slot_index()].value.fetch_add(n, std::memory_order_relaxed); }
  // Adds everything counted since the last flush to the prometheus counter.
  void flush();
  // The total counted so far, flushed or not.
  uint64_t value() const;

  static constexpr size_t kSlots = 16;

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> value{0};
  };
  static size_t slot_index();

  Slot slots_[kSlots];
  std::mutex flush_mu_;
  uint64_t flushed_ = 0;  // guarded by flush_mu_
  prometheus::Counter* target_ = nullptr;
  bool registered_ = false;
};

// Flushes every live ShardedCounter into the registry (before reading counter values directly).
void flush_all();

// Everything in the registry, in the Prometheus text exposition format (version 0.0.4), after
// flush_all().
std::string serialize();

}  // namespace switchboard::metrics
