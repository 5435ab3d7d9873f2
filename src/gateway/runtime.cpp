// The gateway runtime's shared pieces (runtime.h): the key pools' timer thread, breakers resolved
// per snapshot, per-thread snapshots, request ids, and calendar helpers for budgets.
#include "gateway/runtime.h"

#include <sys/random.h>

#include <boost/asio/post.hpp>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>

namespace switchboard::gateway {

// ---- AsioScheduler ----------------------------------------------------------------------------

AsioScheduler::AsioScheduler() : work_(asio::make_work_guard(ctx_)) {
  thread_ = std::thread([this] { ctx_.run(); });
}

AsioScheduler::~AsioScheduler() {
  work_.reset();
  ctx_.stop();
  thread_.join();
}

keys::Scheduler::TimerId AsioScheduler::schedule_at(MonoTime when, std::function<void()> fn) {
  TimerId id = next_id_.fetch_add(1);
  // Called under a key pool's mutex: only post, never run `fn` here.
  asio::post(ctx_, [this, id, when, fn = std::move(fn)]() mutable {
    auto timer = std::make_unique<asio::steady_timer>(ctx_, when);
    timer->async_wait([this, id, fn = std::move(fn)](const boost::system::error_code& ec) {
      timers_.erase(id);
      if (!ec) fn();
    });
    timers_[id] = std::move(timer);
  });
  return id;
}

void AsioScheduler::cancel(TimerId id) {
  asio::post(ctx_, [this, id] {
    if (auto it = timers_.find(id); it != timers_.end()) it->second->cancel();
  });
}

BreakerTable::BreakerTable(std::shared_ptr<breaker::BreakerRegistry> registry, const Config& config)
    : registry_(std::move(registry)) {
  for (const auto& m : config.models) {
    Entry& e = providers_[m.provider];
    if (e.provider == nullptr) e.provider = registry_->provider(m.provider).get();
    e.models[m.name] = registry_->model(m.provider, m.name).get();
  }
}

breaker::CircuitBreaker& BreakerTable::provider(std::string_view provider) const {
  if (auto it = providers_.find(provider); it != providers_.end()) return *it->second.provider;
  return *registry_->provider(provider);
}

breaker::CircuitBreaker& BreakerTable::model(std::string_view provider,
                                             std::string_view model) const {
  if (auto it = providers_.find(provider); it != providers_.end()) {
    if (auto m = it->second.models.find(model); m != it->second.models.end()) return *m->second;
  }
  // A name outside the catalog comes from a client (provider/anything): every such name of a
  // provider shares one breaker, so client input never creates breakers (or their metrics).
  return *registry_->model(provider, "*");
}

bool BreakerTable::open(std::string_view provider, std::string_view model) const {
  return this->provider(provider).state() == breaker::BreakerState::kOpen ||
         this->model(provider, model).state() == breaker::BreakerState::kOpen;
}

uint64_t Runtime::next_uid() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

std::shared_ptr<const Snapshot> Runtime::thread_snapshot() const {
  struct Local {
    uint64_t runtime = 0;  // Runtime::uid (an address could be reused by the next runtime)
    uint64_t generation = 0;
    std::shared_ptr<const Snapshot> snap;
  };
  thread_local Local local;
  const uint64_t gen = generation.load(std::memory_order_acquire);
  if (local.runtime != uid || local.generation != gen || !local.snap) {
    // A control block of this thread's own (aliasing the snapshot) that keeps the shared one.
    auto holder = std::make_shared<std::shared_ptr<const Snapshot>>(snapshot());
    local.snap = std::shared_ptr<const Snapshot>(holder, holder->get());
    local.runtime = uid;
    local.generation = gen;
  }
  return local.snap;
}

std::string Runtime::request_id(uint64_t seq, uint64_t nonce) const {
  // "sb-" + the instance tag in 8 hex digits + "-" + the sequence in at least 10 + "-" + the
  // nonce in 16 (lowercase, as parse_request_id reads them). The nonce makes ids unguessable:
  // the sequence alone would let anyone send verdicts on other clients' requests. Formatted by
  // hand: this runs for every request.
  auto put_hex = [](char* out, uint64_t v, int width) {
    char digits[16];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, v, 16);
    const int n = static_cast<int>(end - digits);
    for (int i = n; i < width; ++i) *out++ = '0';
    std::memcpy(out, digits, static_cast<size_t>(n));
    return out + n;
  };
  char buf[64] = {'s', 'b', '-'};
  char* p = put_hex(buf + 3, instance_tag & 0xffffffff, 8);
  *p++ = '-';
  p = put_hex(p, seq, 10);
  *p++ = '-';
  p = put_hex(p, nonce, 16);
  return std::string(buf, p);
}

Runtime::ParsedId Runtime::parse_request_id(std::string_view id) const {
  // Strictly the form request_id writes: anything else is unknown.
  auto hex_field = [&id](size_t& pos, size_t min_len, size_t max_len, uint64_t& out) {
    size_t end = pos;
    while (end < id.size() && end - pos < max_len + 1 &&
           ((id[end] >= '0' && id[end] <= '9') || (id[end] >= 'a' && id[end] <= 'f')))
      ++end;
    if (end - pos < min_len || end - pos > max_len) return false;
    auto [ptr, ec] = std::from_chars(id.data() + pos, id.data() + end, out, 16);
    if (ec != std::errc() || ptr != id.data() + end) return false;
    pos = end;
    return true;
  };
  ParsedId none;
  if (id.size() > 64 || id.substr(0, 3) != "sb-") return none;
  size_t pos = 3;
  uint64_t tag = 0, seq = 0, nonce = 0;
  if (!hex_field(pos, 8, 8, tag) || pos >= id.size() || id[pos++] != '-') return none;
  if (!hex_field(pos, 10, 16, seq) || pos >= id.size() || id[pos++] != '-') return none;
  if (!hex_field(pos, 16, 16, nonce) || pos != id.size()) return none;
  if (tag != (instance_tag & 0xffffffff)) return none;  // another instance's (or a restarted one's)
  return ParsedId{seq, nonce};
}

uint64_t secure_random_u64() {
  // getrandom() per 64 ids, kept per thread: unpredictable (the kernel's CSPRNG, not a PRNG
  // whose outputs reveal its state) at the cost of one system call per 64 requests.
  struct Pool {
    uint64_t values[64];
    size_t next = 64;
  };
  thread_local Pool pool;
  if (pool.next == 64) {
    size_t got = 0;
    auto* bytes = reinterpret_cast<unsigned char*>(pool.values);
    while (got < sizeof pool.values) {
      ssize_t n = getrandom(bytes + got, sizeof pool.values - got, 0);
      if (n > 0) {
        got += size_t(n);
      } else if (errno != EINTR) {
        // No kernel randomness (cannot happen on Linux >= 3.17): fail closed, not predictably.
        std::abort();
      }
    }
    pool.next = 0;
  }
  return pool.values[pool.next++];
}

uint64_t owner_tag(std::string_view gateway_key_name) {
  if (gateway_key_name.empty()) return 0;
  // FNV-1a of the key's name: stable across reloads that keep the key (indexes may move) and
  // across restarts (stored with each outcome).
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : gateway_key_name) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h | 1;
}

uint64_t owner_tag(const Snapshot& snap, int gateway_key) {
  if (gateway_key < 0) return 0;
  return owner_tag(snap.config->auth.gateway_policies[size_t(gateway_key)].name);
}

int utc_month(WallTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  return (tm.tm_year + 1900) * 12 + tm.tm_mon;
}

WallTime utc_month_start(WallTime t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace switchboard::gateway
