// Concurrency tests: run them under TSan (SWITCHBOARD_SANITIZE=thread) as well as in release.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "breaker/breaker.h"
#include "breaker_test_util.h"
#include "common/log.h"

namespace switchboard::breaker {
namespace {

using namespace std::chrono_literals;
using testing::test_config;
using testing::unique_target;

// The lock-free window must neither lose nor duplicate results: 8 threads record exactly
// `window` results between them, half failures, and the window must hold all of them.
TEST(BreakerStressTest, ConcurrentResultsAllLandInTheWindow) {
  ManualClock clock;
  constexpr int kThreads = 8;
  for (int round = 0; round < 50; ++round) {
    BreakerConfig c = test_config();
    c.window = 64;
    c.min_calls = 64;
    c.failure_rate = 0.9;
    CircuitBreaker b(unique_target(), TargetKind::kProvider, c, clock);
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < kThreads) std::this_thread::yield();
        for (int i = 0; i < 8; ++i) {
          Permit p = b.try_acquire();
          ASSERT_TRUE(p);
          p.record(t % 2 == 0 ? OutcomeClass::kServerError : OutcomeClass::kSuccess, 1ms);
        }
      });
    }
    for (auto& th : threads) th.join();
    BreakerSnapshot s = b.snapshot();
    ASSERT_EQ(s.state, BreakerState::kClosed);
    ASSERT_EQ(s.calls_in_window, 64) << "round " << round;
    ASSERT_EQ(s.failures_in_window, 32) << "round " << round;
  }
}

// 8 threads hammer one breaker with random outcomes while time moves on under them. Whatever the
// interleaving, no half-open period may ever have more than half_open_probes calls in flight.
TEST(BreakerStressTest, RandomHammeringNeverExceedsProbeLimit) {
  ManualClock clock;
  BreakerConfig c = test_config();
  c.window = 20;
  c.min_calls = 5;
  c.failure_rate = 0.5;
  c.slow_call_ms = 100;
  c.open_ms = 5;
  c.max_open_ms = 40;
  c.half_open_probes = 2;
  c.half_open_timeout_ms = 30;
  CircuitBreaker b(unique_target(), TargetKind::kProvider, c, clock);
  // Thousands of transitions: keep their log lines out of the test output.
  const auto level = log::logger().level();
  log::logger().set_level(spdlog::level::err);

  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;
  // In-flight probes per half-open generation (generations of permits in flight at once span far
  // fewer than the array's size, so the modulo never mixes two live generations).
  static std::array<std::atomic<int>, 4096> in_flight{};
  for (auto& a : in_flight) a.store(0);
  std::atomic<int> max_in_flight{0};
  std::atomic<int64_t> admitted{0}, probes{0}, rejected{0};

  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      std::uniform_int_distribution<int> pct(0, 99);
      for (int i = 0; i < kIterations; ++i) {
        if (pct(rng) < 10) clock.advance(Millis(pct(rng) % 4));
        if (pct(rng) < 2) {
          BreakerSnapshot s = b.snapshot();
          EXPECT_LE(s.probes_admitted, c.half_open_probes);
          EXPECT_LE(s.calls_in_window, c.window);
        }
        Permit p = b.try_acquire();
        if (!p) {
          rejected.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        admitted.fetch_add(1, std::memory_order_relaxed);
        std::atomic<int>* slot = nullptr;
        if (p.is_probe()) {
          probes.fetch_add(1, std::memory_order_relaxed);
          slot = &in_flight[p.generation() % in_flight.size()];
          const int n = slot->fetch_add(1) + 1;
          int m = max_in_flight.load();
          while (n > m && !max_in_flight.compare_exchange_weak(m, n)) {
          }
          EXPECT_LE(n, c.half_open_probes) << "generation " << p.generation();
        }
        if (pct(rng) < 5) std::this_thread::yield();  // let others pile up on the probes
        // Leave the in-flight count before reporting: the report may free the slot at once.
        if (slot) slot->fetch_sub(1);
        const int r = pct(rng);
        if (r < 35) {
          p.record(OutcomeClass::kServerError);
        } else if (r < 40) {
          p.record(OutcomeClass::kSuccess, 200ms);  // slow
        } else if (r < 45) {
          p.record(OutcomeClass::kClientError);
        } else if (r < 50) {
          // dropped unrecorded: cancelled
        } else {
          p.record(OutcomeClass::kSuccess, 1ms);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  log::logger().set_level(level);

  EXPECT_LE(max_in_flight.load(), c.half_open_probes);
  // The run must actually have exercised every state.
  EXPECT_GT(probes.load(), 0);
  EXPECT_GT(rejected.load(), 0);
  EXPECT_GT(admitted.load() - probes.load(), 0);
  const double opened =
      testing::metric_value("switchboard_breaker_transitions_total",
                            {{"target", b.target()}, {"from", "half_open"}, {"to", "closed"}});
  EXPECT_GT(opened, 0);
  // Quiescent now: whatever state it is in must be self-consistent.
  BreakerSnapshot s = b.snapshot();
  EXPECT_LE(s.calls_in_window, c.window);
  EXPECT_LE(s.probes_admitted, c.half_open_probes);
}

}  // namespace
}  // namespace switchboard::breaker
