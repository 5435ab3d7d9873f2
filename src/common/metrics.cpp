#include "common/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <mutex>
#include <sstream>
#include <unordered_set>

#include "common/thread_slot.h"

namespace switchboard::metrics {

prometheus::Registry& registry() {
  static prometheus::Registry reg;
  return reg;
}

prometheus::Family<prometheus::Counter>& counter_family(const std::string& name,
                                                        const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry());
}

prometheus::Family<prometheus::Gauge>& gauge_family(const std::string& name,
                                                    const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry());
}

prometheus::Family<prometheus::Histogram>& histogram_family(const std::string& name,
                                                            const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry());
}

const prometheus::Histogram::BucketBoundaries& latency_buckets_seconds() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,    0.5,    1,       2.5,    5,     10,     30,    60,   120,   300,  600};
  return b;
}

namespace {

// Live sharded metrics, so a scrape can flush them. Registration happens once per metric (at
// construction of its owner), never per request.
struct ShardedRegistry {
  std::mutex mu;
  std::unordered_set<detail::Flushable*> live;
};
ShardedRegistry& sharded_registry() {
  static auto* r = new ShardedRegistry;  // never destroyed: metrics may die during exit
  return *r;
}

}  // namespace

namespace detail {
void Flushable::register_flushable() {
  auto& r = sharded_registry();
  std::lock_guard lock(r.mu);
  r.live.insert(this);
}
void Flushable::unregister_flushable() {
  auto& r = sharded_registry();
  std::lock_guard lock(r.mu);
  r.live.erase(this);
}
}  // namespace detail

ShardedCounter::ShardedCounter(prometheus::Counter* target) {
  if (target != nullptr) bind(target);
}

void ShardedCounter::bind(prometheus::Counter* target) {
  target_ = target;
  if (registered_) return;
  register_flushable();
  registered_ = true;
}

ShardedCounter::~ShardedCounter() {
  if (!registered_) return;
  unregister_flushable();
  flush();
}

size_t ShardedCounter::slot_index() {
  return this_thread_slot() % kSlots;
}

uint64_t ShardedCounter::value() const {
  uint64_t sum = 0;
  for (const auto& s : slots_) sum += s.value.load(std::memory_order_relaxed);
  return sum;
}

void ShardedCounter::flush() {
  std::lock_guard lock(flush_mu_);
  const uint64_t total = value();
  if (total > flushed_ && target_ != nullptr) {
    target_->Increment(static_cast<double>(total - flushed_) * scale_);
  }
  flushed_ = total;
}

ShardedHistogram::ShardedHistogram(prometheus::Histogram* target,
                                   const prometheus::Histogram::BucketBoundaries& boundaries)
    : boundaries_(boundaries), flushed_counts_(boundaries.size() + 1, 0), target_(target) {
  for (auto& slot : slots_) {
    slot.counts = std::make_unique<std::atomic<uint64_t>[]>(boundaries_.size() + 1);
  }
  register_flushable();
}

ShardedHistogram::~ShardedHistogram() {
  unregister_flushable();
  flush();
}

void ShardedHistogram::observe(double value) {
  // Prometheus buckets are upper bounds (le): the first boundary >= value.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(boundaries_.begin(), boundaries_.end(), value) - boundaries_.begin());
  Slot& slot = slots_[ShardedCounter::slot_index()];
  slot.counts[bucket].fetch_add(1, std::memory_order_relaxed);
  slot.sum.fetch_add(value, std::memory_order_relaxed);
}

void ShardedHistogram::flush() {
  std::lock_guard lock(flush_mu_);
  std::vector<double> increments(boundaries_.size() + 1, 0.0);
  bool any = false;
  double sum = 0;
  for (size_t b = 0; b <= boundaries_.size(); ++b) {
    uint64_t total = 0;
    for (const auto& slot : slots_) total += slot.counts[b].load(std::memory_order_relaxed);
    if (total > flushed_counts_[b]) {
      increments[b] = static_cast<double>(total - flushed_counts_[b]);
      flushed_counts_[b] = total;
      any = true;
    }
  }
  for (const auto& slot : slots_) sum += slot.sum.load(std::memory_order_relaxed);
  // The sum may run ahead of or behind the counts (an observation adds to both, one after the
  // other): whatever moved is passed on, so nothing is lost between scrapes.
  if ((any || sum != flushed_sum_) && target_ != nullptr) {
    target_->ObserveMultiple(increments, sum - flushed_sum_);
  }
  flushed_sum_ = sum;
}

void flush_all() {
  auto& r = sharded_registry();
  std::lock_guard lock(r.mu);
  for (detail::Flushable* c : r.live) c->flush();
}

std::string serialize() {
  flush_all();
  std::ostringstream out;
  prometheus::TextSerializer serializer;
  serializer.Serialize(out, registry().Collect());
  return out.str();
}

}  // namespace switchboard::metrics
