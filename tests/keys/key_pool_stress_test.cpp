// Many threads hammer one pool with random outcomes while an observer, called under the key's
// mutex, re-checks every invariant from its own bookkeeping after every grant and every end.
#include <gtest/gtest.h>

#include <atomic>
#include <deque>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>

#include "test_util.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr int kIterations = 20'000;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
constexpr int kIterations = 20'000;
#else
constexpr int kIterations = 100'000;
#endif
#else
constexpr int kIterations = 100'000;
#endif

namespace switchboard::keys {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::make_provider;

constexpr int kThreads = 8;
constexpr int kKeys = 6;
const RateLimits kLimits{.rpm = 1000, .tpm = 60'000, .max_concurrent = 3};

class Checker : public PoolObserver {
 public:
  void on_grant(const GrantEvent& e) override {
    // The pool serialises the events of one key; ours span keys (lease ids, totals).
    std::lock_guard lock(mu_);
    ++grants;
    auto& k = keys_[e.key_index];
    const int64_t now = e.now.time_since_epoch().count();
    if (disabled_[e.key_index].load()) fail("grant on a disabled key");
    // Cooldowns: the pool's own view and everything it told us before.
    if (e.now < e.key_cooldown_until || e.now < e.model_cooldown_until) fail("grant while cooling");
    if (now < k.cooldown_until) fail("grant before a key cooldown we saw");
    if (e.model >= 0 && now < k.model_cooldown_until[e.model & 1]) {
      fail("grant before a model cooldown we saw");
    }
    // Concurrency.
    if (++k.in_flight > kLimits.max_concurrent) fail("max_concurrent exceeded");
    if (e.in_flight != k.in_flight) fail("in-flight count disagrees");
    // Windows: our exact 60 s sliding sums must stay within the limits (the pool's are coarser
    // and never smaller).
    expire(k, now);
    k.window.push_back({now, 1, e.estimated_tokens, e.lease_id});
    k.req += 1;
    k.tok += e.estimated_tokens;
    entries_[e.lease_id] = &k.window.back();
    if (k.req > kLimits.rpm || k.tok > kLimits.tpm) fail("window limit exceeded");
    if (e.minute.requests > kLimits.rpm || e.minute.tokens > kLimits.tpm) fail("pool window over");
    if (e.minute.requests < k.req || e.minute.tokens < k.tok) fail("pool under-counts window");
    if (!live_.emplace(e.lease_id, e.key_index).second) fail("lease id granted twice");
  }

  void on_end(const EndEvent& e) override {
    std::lock_guard lock(mu_);
    ++ends;
    auto it = live_.find(e.lease_id);
    if (it == live_.end() || it->second != e.key_index) {
      fail("lease ended twice or never granted");
      return;
    }
    live_.erase(it);
    auto& k = keys_[e.key_index];
    --k.in_flight;
    const int64_t now = e.now.time_since_epoch().count();
    expire(k, now);
    if (auto w = entries_.find(e.lease_id); w != entries_.end()) {
      k.req += e.requests_counted - w->second->req;
      k.tok += e.tokens_counted - w->second->tok;
      w->second->req = e.requests_counted;
      w->second->tok = e.tokens_counted;
    }
    k.cooldown_until = std::max(k.cooldown_until, e.key_cooldown_until.time_since_epoch().count());
    if (e.model >= 0) {
      auto& m = k.model_cooldown_until[e.model & 1];
      m = std::max(m, e.model_cooldown_until.time_since_epoch().count());
    }
    if (e.status == OutcomeClass::kRateLimited && e.key_cooldown_until <= e.now &&
        e.model_cooldown_until <= e.now) {
      fail("429 without a cooldown");
    }
  }

  void set_disabled(size_t key, bool v) { disabled_[key].store(v); }
  size_t live() {
    std::lock_guard lock(mu_);
    return live_.size();
  }

  std::atomic<int64_t> failures{0};
  std::string first_failure;  // written once, under mu_
  int64_t grants = 0;
  int64_t ends = 0;

 private:
  struct Entry {
    int64_t t;
    int64_t req;
    int64_t tok;
    uint64_t id;
  };
  struct KeyState {
    int64_t in_flight = 0;
    int64_t cooldown_until = std::numeric_limits<int64_t>::min();
    int64_t model_cooldown_until[2] = {std::numeric_limits<int64_t>::min(),
                                       std::numeric_limits<int64_t>::min()};
    std::deque<Entry> window;
    int64_t req = 0;
    int64_t tok = 0;
  };

  void expire(KeyState& k, int64_t now) {
    const int64_t minute = std::chrono::nanoseconds(seconds(60)).count();
    while (!k.window.empty() && k.window.front().t <= now - minute) {
      k.req -= k.window.front().req;
      k.tok -= k.window.front().tok;
      entries_.erase(k.window.front().id);
      k.window.pop_front();
    }
  }

  void fail(const char* what) {
    if (failures.fetch_add(1) == 0) first_failure = what;
  }

  std::mutex mu_;
  KeyState keys_[kKeys];
  std::atomic<bool> disabled_[kKeys] = {};
  std::unordered_map<uint64_t, size_t> live_;
  std::unordered_map<uint64_t, Entry*> entries_;
};

TEST(KeyPoolStress, InvariantsHoldUnderConcurrentRandomOutcomes) {
  ManualClock clock;
  Checker checker;
  ManualScheduler sched;
  auto* pool = new KeyPool(
      make_provider("stress", kKeys, kLimits,
                    {.initial_ms = 200, .multiplier = 2.0, .max_ms = 2000, .jitter = 0.2}),
      clock, {.scheduler = &sched, .rng_seed = 1, .observer = &checker});
  std::atomic<int64_t> granted{0};
  std::atomic<int64_t> completed_or_dropped{0};
  std::atomic<int64_t> admin_violations{0};

  auto worker = [&](int t) {
    std::mt19937_64 rng(1000 + t);
    std::vector<Lease> held;
    auto finish_one = [&] {
      size_t i = rng() % held.size();
      Lease l = std::move(held[i]);
      held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));
      const int roll = static_cast<int>(rng() % 100);
      Outcome o;
      o.tokens_used = static_cast<int64_t>(rng() % (l.estimated_tokens() + 1));
      if (roll < 70) {
        o.status = OutcomeClass::kSuccess;
        if (roll < 3)
          o.headers = {{"x-ratelimit-remaining-requests", "0"},
                       {"x-ratelimit-reset-requests", "300ms"}};
      } else if (roll < 80) {
        o.status = OutcomeClass::kRateLimited;
        if (roll < 74) o.headers = {{"retry-after-ms", std::to_string(1 + rng() % 500)}};
        if (roll == 79) o.headers = {{"retry-after", "garbage"}};
        o.key_wide = roll == 78;
      } else if (roll < 85) {
        o.status = OutcomeClass::kServerError;
      } else if (roll < 89) {
        o.status = OutcomeClass::kTimeout;
      } else if (roll < 92) {
        o.status = OutcomeClass::kConnectionError;
      } else if (roll < 95) {
        o.status = OutcomeClass::kClientError;
      } else {
        l = Lease();  // dropped: recorded as cancelled
        completed_or_dropped.fetch_add(1);
        return;
      }
      if (!l.complete(o)) std::abort();
      completed_or_dropped.fetch_add(1);
    };
    for (int i = 0; i < kIterations; ++i) {
      clock.advance(milliseconds(1));
      const char* model = (rng() % 3 == 0) ? "" : (rng() & 1 ? "model-a" : "model-b");
      auto r = pool->acquire(model, static_cast<int64_t>(rng() % 200), MonoTime::max(),
                             rng() % 10 == 0 ? "session-" + std::to_string(rng() % 5) : "");
      if (r.ok()) {
        granted.fetch_add(1);
        held.push_back(r.take_lease());
      }
      if (!held.empty() && (held.size() > 2 || rng() % 2 == 0)) finish_one();
      if (t == 0 && i % 5000 == 0) {
        // Admin traffic interleaved with requests.
        auto snap = pool->snapshot();
        for (const auto& s : snap) {
          if (s.in_flight > kLimits.max_concurrent) admin_violations.fetch_add(1);
        }
        (void)pool->export_usage();
        const size_t k = static_cast<size_t>(i / 5000) % kKeys;
        if ((i / 5000) % 2 == 0) {
          (void)pool->disable("stress#" + std::to_string(k + 1));
          checker.set_disabled(k, true);
        } else {
          for (size_t j = 0; j < kKeys; ++j) checker.set_disabled(j, false);
          for (size_t j = 0; j < kKeys; ++j) (void)pool->enable("stress#" + std::to_string(j + 1));
        }
      }
    }
    while (!held.empty()) finish_one();
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();

  EXPECT_EQ(checker.failures.load(), 0) << checker.first_failure;
  EXPECT_EQ(admin_violations.load(), 0);
  EXPECT_EQ(checker.grants, granted.load());
  EXPECT_EQ(checker.ends, granted.load());  // every lease ended exactly once
  EXPECT_EQ(completed_or_dropped.load(), granted.load());
  EXPECT_EQ(checker.live(), 0u);
  EXPECT_GT(granted.load(), kThreads * kIterations / 20);  // the test exercised real traffic
  for (const auto& s : pool->snapshot()) EXPECT_EQ(s.in_flight, 0);
  delete pool;
}

// Waiters from many threads, capacity freed from many threads: each callback runs exactly once.
TEST(KeyPoolStress, ConcurrentWaitersEachResolvedExactlyOnce) {
  ManualClock clock;
  ManualScheduler sched;
  KeyPool pool(make_provider("stresswait", 2, {.max_concurrent = 1}), clock, {.scheduler = &sched});
  constexpr int kPerThread = 2000;
  std::atomic<int> callbacks{0}, leases{0}, timeouts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < kPerThread; ++i) {
        pool.wait_async({"m", 0, clock.now() + milliseconds(rng() % 5), ""}, [&](AcquireResult r) {
          callbacks.fetch_add(1);
          if (r.ok()) {
            leases.fetch_add(1);
            r.lease().complete(Outcome{});  // frees the slot for the next
          } else {
            timeouts.fetch_add(1);
          }
        });
        if (t == 0 && i % 10 == 0) {
          clock.advance(milliseconds(1));
          sched.run_due(clock.now());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  while (pool.waiting() > 0) {
    clock.advance(milliseconds(1));
    sched.run_due(clock.now());
  }
  EXPECT_EQ(callbacks.load(), 4 * kPerThread);
  EXPECT_EQ(leases.load() + timeouts.load(), 4 * kPerThread);
  EXPECT_GT(leases.load(), 0);
}

// Waiters bound by concurrency are woken only by completions (no timer ever fires here, no
// deadline). Completions check for waiters without the queue's lock, so a wake-up lost to that
// race would leave a waiter queued with every key free at the end.
TEST(KeyPoolStress, NoWaiterIsLeftBehindWhenCapacityFrees) {
  ManualClock clock;
  ManualScheduler sched;  // never run
  KeyPool pool(make_provider("nolost", 2, {.max_concurrent = 1}), clock, {.scheduler = &sched});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 5000;
  std::mutex mu;
  std::deque<Lease> held;  // leases waiting to be completed by any thread
  std::atomic<int> waits{0}, served{0};
  auto keep = [&](Lease l) {
    std::lock_guard lock(mu);
    held.push_back(std::move(l));
  };
  auto complete_one = [&] {
    Lease l;
    {
      std::lock_guard lock(mu);
      if (held.empty()) return false;
      l = std::move(held.front());
      held.pop_front();
    }
    l.complete(Outcome{});  // may serve a waiter, whose callback calls keep()
    return true;
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < kPerThread; ++i) {
        if (rng() % 2 == 0) {
          waits.fetch_add(1);
          pool.wait_async({"m", 0, MonoTime::max(), ""}, [&](AcquireResult r) {
            if (!r.ok()) std::abort();  // no deadline, no cancel: only a lease can come
            served.fetch_add(1);
            keep(r.take_lease());
          });
        } else if (auto r = pool.acquire("m", 0); r.ok()) {
          keep(r.take_lease());
        }
        if (rng() % 3 != 0) complete_one();
      }
    });
  }
  for (auto& th : threads) th.join();
  while (complete_one()) {
  }
  EXPECT_EQ(pool.waiting(), 0u);
  EXPECT_EQ(served.load(), waits.load());

  // Then the race itself, with nobody else around to rescue a stranded waiter: both keys busy,
  // one thread queues a waiter while another frees a key.
  int stranded = 0;
  for (int round = 0; round < 2000; ++round) {
    Lease a = pool.acquire("m", 0).take_lease();
    Lease b = pool.acquire("m", 0).take_lease();
    ASSERT_TRUE(a.active() && b.active());
    Lease got;
    std::atomic<bool> called{false};
    std::thread waiter([&] {
      pool.wait_async({"m", 0, MonoTime::max(), ""}, [&](AcquireResult r) {
        if (r.ok()) got = r.take_lease();
        called.store(true);
      });
    });
    std::thread completer([&] { a.complete(Outcome{}); });
    waiter.join();
    completer.join();
    if (!called.load()) {
      ++stranded;  // queued while a key was free: a lost wake-up
      pool.acquire("m", 0).lease().complete(Outcome{});  // serves it, to go on
    }
    ASSERT_TRUE(called.load());
    got.complete(Outcome{});
    b.complete(Outcome{});
  }
  EXPECT_EQ(stranded, 0);
  EXPECT_EQ(pool.waiting(), 0u);
  for (const auto& s : pool.snapshot()) EXPECT_EQ(s.in_flight, 0);
}

}  // namespace
}  // namespace switchboard::keys
