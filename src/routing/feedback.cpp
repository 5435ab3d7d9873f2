#include <array>
#include <atomic>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "routing/routing.h"

namespace switchboard::routing {

namespace {
constexpr size_t kShards = 16;
constexpr size_t kMaxInterned = 1024;
}  // namespace

struct FeedbackLedger::Impl {
  struct Entry {
    uint64_t seq = 0;  // 0 = empty
    int64_t at_ms = 0;
    Ticket ticket{};
    double transport_reward = 0;
    uint16_t model = 0;
    uint16_t category = 0;
    int16_t layer = 0;
    bool learned = false;
    bool claimed = false;
    uint16_t route = 0;    // interned; 0 with no features
    std::string features;  // FeatureVector::encode(), "" when the request had none
  };
  struct alignas(64) Shard {
    std::mutex mu;
  };

  Clock& clock;
  Millis ttl;
  std::vector<Entry> ring;
  std::array<Shard, kShards> shards;

  // As small as a ring entry: a restart may restore the whole window (feedback_max_requests),
  // and a `Served` held a whole FeatureVector (~0.5 KB) that restored requests never have.
  struct Restored {
    uint64_t owner = 0;
    int64_t expires_ms = 0;  // on the monotonic clock, as at_ms
    double transport_reward = 0;
    uint16_t model = 0;     // interned
    uint16_t category = 0;  // interned
    int16_t layer = 0;
    bool learned = false;
    bool claimed = false;
  };
  std::mutex restored_mu;
  std::unordered_map<std::string, Restored> restored;

  std::mutex intern_mu;
  std::vector<std::string> names;  // models and categories share one table
  std::unordered_map<std::string, uint16_t> ids;

  // Tells a thread's intern cache which ledger it belongs to (addresses can be reused).
  const uint64_t identity = next_identity();

  Impl(size_t capacity, Millis t, Clock& c) : clock(c), ttl(t), ring(capacity) {}

  static uint64_t next_identity() {
    static std::atomic<uint64_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

  int64_t now_ms() const {
    return std::chrono::duration_cast<Millis>(clock.now().time_since_epoch()).count();
  }

  // Every request interns its model and category: a small per-thread cache of names already
  // interned (ids never change once given) keeps the shared table's lock off the request path.
  uint16_t intern(std::string_view name) {
    struct Cache {
      uint64_t owner = 0;
      std::vector<std::pair<std::string, uint16_t>> entries;
    };
    static constexpr size_t kCached = 32;
    thread_local Cache cache;
    if (cache.owner == identity) {
      for (const auto& [n, id] : cache.entries)
        if (n == name) return id;
    } else {
      cache.owner = identity;
      cache.entries.clear();
    }
    const uint16_t id = intern_shared(name);
    if (cache.entries.size() < kCached) cache.entries.emplace_back(std::string(name), id);
    return id;
  }

  uint16_t intern_shared(std::string_view name) {
    std::lock_guard lock(intern_mu);
    if (auto it = ids.find(std::string(name)); it != ids.end()) return it->second;
    if (names.size() >= kMaxInterned) {
      // Beyond the bound, new names share one slot (as the router's "other" category does).
      auto it = ids.find("other");
      if (it != ids.end()) return it->second;
      name = "other";
    }
    uint16_t id = static_cast<uint16_t>(names.size());
    names.emplace_back(name);
    ids.emplace(std::string(name), id);
    return id;
  }

  std::string name_of(uint16_t id) {
    std::lock_guard lock(intern_mu);
    return id < names.size() ? names[id] : std::string();
  }
};

FeedbackLedger::FeedbackLedger(size_t capacity, Millis ttl, Clock& clock)
    : capacity_(std::max<size_t>(capacity, 1)),
      impl_(std::make_unique<Impl>(capacity_, ttl, clock)) {}

FeedbackLedger::~FeedbackLedger() = default;

void FeedbackLedger::remember(uint64_t seq, std::string_view model, std::string_view category,
                              int layer, double transport_reward, bool learned, Ticket ticket,
                              std::string_view route, const FeatureVector* features) {
  if (seq == 0) return;
  uint16_t m = impl_->intern(model);
  uint16_t c = impl_->intern(category.empty() ? "default" : category);
  Impl::Entry e{
      seq,  impl_->now_ms(), ticket, transport_reward, m, c, static_cast<int16_t>(layer), learned,
      false};
  if (features && !features->empty()) {
    e.route = impl_->intern(route);
    e.features = features->encode();
  }
  std::lock_guard lock(impl_->shards[(seq % capacity_) % kShards].mu);
  impl_->ring[seq % capacity_] = std::move(e);
}

FeedbackLedger::Claim FeedbackLedger::claim(uint64_t seq, Served& served, Ticket ticket) {
  if (seq == 0) return Claim::kUnknown;
  Impl::Entry e;
  {
    std::lock_guard lock(impl_->shards[(seq % capacity_) % kShards].mu);
    Impl::Entry& slot = impl_->ring[seq % capacity_];
    // A wrong nonce or another client's request looks exactly like an unknown id: no answer
    // tells a guesser that an id exists.
    if (slot.seq != seq || impl_->now_ms() - slot.at_ms > impl_->ttl.count() ||
        slot.ticket.nonce != ticket.nonce || slot.ticket.owner != ticket.owner)
      return Claim::kUnknown;
    if (slot.claimed) return Claim::kDuplicate;
    slot.claimed = true;
    e = std::move(slot);
    slot.features.clear();
  }
  served.model = impl_->name_of(e.model);
  served.category = impl_->name_of(e.category);
  served.layer = e.layer;
  served.transport_reward = e.transport_reward;
  served.learned = e.learned;
  if (!e.features.empty()) {
    served.route = impl_->name_of(e.route);
    served.features = FeatureVector::decode(e.features);
  }
  return Claim::kOk;
}

void FeedbackLedger::restore(std::string request_id, const Served& served, uint64_t owner,
                             WallTime served_at, bool claimed) {
  const auto age = std::chrono::duration_cast<Millis>(impl_->clock.wall_now() - served_at);
  if (age >= impl_->ttl) return;
  Impl::Restored r;
  r.owner = owner;
  r.expires_ms = impl_->now_ms() + (impl_->ttl - age).count();
  r.transport_reward = served.transport_reward;
  r.model = impl_->intern_shared(served.model);
  r.category = impl_->intern_shared(served.category);
  r.layer = static_cast<int16_t>(served.layer);
  r.learned = served.learned;
  r.claimed = claimed;
  std::lock_guard lock(impl_->restored_mu);
  if (impl_->restored.size() >= capacity_ && !impl_->restored.count(request_id)) return;
  impl_->restored.insert_or_assign(std::move(request_id), std::move(r));
}

FeedbackLedger::Claim FeedbackLedger::claim_restored(std::string_view request_id, Served& served,
                                                     uint64_t owner) {
  std::lock_guard lock(impl_->restored_mu);
  auto it = impl_->restored.find(std::string(request_id));
  // As for the ring: another client's request, or an expired one, looks unknown.
  if (it == impl_->restored.end() || it->second.owner != owner ||
      impl_->now_ms() > it->second.expires_ms)
    return Claim::kUnknown;
  if (it->second.claimed) return Claim::kDuplicate;
  it->second.claimed = true;
  const Impl::Restored& r = it->second;
  served = Served{};
  served.model = impl_->name_of(r.model);
  served.category = impl_->name_of(r.category);
  served.layer = r.layer;
  served.transport_reward = r.transport_reward;
  served.learned = r.learned;
  return Claim::kOk;
}

}  // namespace switchboard::routing
