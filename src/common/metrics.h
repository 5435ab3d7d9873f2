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
#include <memory>
#include <mutex>
#include <string>
#include <vector>

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
namespace detail {
// What flush_all() flushes: registered for the object's whole life.
class Flushable {
 public:
  virtual void flush() = 0;

 protected:
  ~Flushable() = default;
  void register_flushable();
  void unregister_flushable();
};
}  // namespace detail

class ShardedCounter final : public detail::Flushable {
 public:
  explicit ShardedCounter(prometheus::Counter* target = nullptr);
  ~ShardedCounter();  // flushes what is left
  ShardedCounter(const ShardedCounter&) = delete;
  ShardedCounter& operator=(const ShardedCounter&) = delete;

  // Binds a default-constructed counter to its target (once, before any `add`).
  void bind(prometheus::Counter* target);
  // What one unit counts as in the prometheus counter (1e-9 to count nano-USD as USD); before
  // any `add`.
  void set_scale(double scale) { scale_ = scale; }
  void add(uint64_t n = 1) { slots_[slot_index()].value.fetch_add(n, std::memory_order_relaxed); }
  // Adds everything counted since the last flush to the prometheus counter.
  void flush() override;
  // The total counted so far, flushed or not.
  uint64_t value() const;

  static constexpr size_t kSlots = 16;
  static size_t slot_index();

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> value{0};
  };

  Slot slots_[kSlots];
  std::mutex flush_mu_;
  uint64_t flushed_ = 0;  // guarded by flush_mu_
  prometheus::Counter* target_ = nullptr;
  double scale_ = 1;
  bool registered_ = false;
};

// ShardedCounter's counterpart for a histogram: each thread fills buckets of its own, and a flush
// moves the new observations into the prometheus histogram (ObserveMultiple). Same rules.
class ShardedHistogram final : public detail::Flushable {
 public:
  ShardedHistogram(prometheus::Histogram* target,
                   const prometheus::Histogram::BucketBoundaries& boundaries);
  ~ShardedHistogram();
  ShardedHistogram(const ShardedHistogram&) = delete;
  ShardedHistogram& operator=(const ShardedHistogram&) = delete;

  void observe(double value);
  void flush() override;

 private:
  struct alignas(64) Slot {
    std::unique_ptr<std::atomic<uint64_t>[]> counts;  // boundaries + 1 (the +Inf bucket)
    std::atomic<double> sum{0};
  };

  const std::vector<double> boundaries_;
  Slot slots_[ShardedCounter::kSlots];
  std::mutex flush_mu_;
  std::vector<uint64_t> flushed_counts_;  // guarded by flush_mu_
  double flushed_sum_ = 0;                // guarded by flush_mu_
  prometheus::Histogram* target_;
};

// Flushes every live ShardedCounter and ShardedHistogram into the registry (before reading counter
// values directly).
void flush_all();

// Everything in the registry, in the Prometheus text exposition format (version 0.0.4), after
// flush_all().
std::string serialize();

}  // namespace switchboard::metrics
