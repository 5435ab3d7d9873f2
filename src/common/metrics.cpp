#include "common/metrics.h"

#include <prometheus/text_serializer.h>

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

// Live sharded counters, so a scrape can flush them. Registration happens once per counter (at
// construction of its owner), never per request.
struct ShardedRegistry {
  std::mutex mu;
  std::unordered_set<ShardedCounter*> live;
};
ShardedRegistry& sharded_registry() {
  static auto* r = new ShardedRegistry;  // never destroyed: counters may die during exit
  return *r;
}

}  // namespace

ShardedCounter::ShardedCounter(prometheus::Counter* target) {
  if (target != nullptr) bind(target);
}

void ShardedCounter::bind(prometheus::Counter* target) {
  target_ = target;
  if (registered_) return;
  auto& r = sharded_registry();
  std::lock_guard lock(r.mu);
  r.live.insert(this);
  registered_ = true;
}

ShardedCounter::~ShardedCounter() {
  if (!registered_) return;
  {
    auto& r = sharded_registry();
    std::lock_guard lock(r.mu);
    r.live.erase(this);
  }
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
    target_->Increment(static_cast<double>(total - flushed_));
  }
  flushed_ = total;
}

void flush_all() {
  auto& r = sharded_registry();
  std::lock_guard lock(r.mu);
  for (ShardedCounter* c : r.live) c->flush();
}

std::string serialize() {
  flush_all();
  std::ostringstream out;
  prometheus::TextSerializer serializer;
  serializer.Serialize(out, registry().Collect());
  return out.str();
}

}  // namespace switchboard::metrics
