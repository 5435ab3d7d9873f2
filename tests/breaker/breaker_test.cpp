#include "breaker/breaker.h"

#include <gtest/gtest.h>

#include <barrier>
#include <thread>
#include <vector>

#include "breaker_test_util.h"

namespace switchboard::breaker {
namespace {

using namespace std::chrono_literals;
using testing::metric_value;
using testing::test_config;
using testing::unique_target;

// Makes one admitted call with the given result.
void call(CircuitBreaker& b, OutcomeClass o, Nanos latency = 10ms) {
  Permit p = b.try_acquire();
  ASSERT_TRUE(p.admitted()) << "breaker " << b.target() << " rejected a call";
  ASSERT_FALSE(p.is_probe());
  p.record(o, latency);
}

void calls(CircuitBreaker& b, int n, OutcomeClass o, Nanos latency = 10ms) {
  for (int i = 0; i < n; ++i) call(b, o, latency);
}

// Drives a fresh breaker (test_config) from closed to open with five failures.
void trip(CircuitBreaker& b) {
  ASSERT_EQ(b.state(), BreakerState::kClosed);
  calls(b, 5, OutcomeClass::kServerError);
  ASSERT_EQ(b.state(), BreakerState::kOpen);
}

class BreakerTest : public ::testing::Test {
 protected:
  ManualClock clock_;
};

TEST(ClassifyTest, Policy) {
  BreakerConfig c = test_config();
  for (TargetKind k : {TargetKind::kProvider, TargetKind::kModel, TargetKind::kKey}) {
    SCOPED_TRACE(std::string(to_string(k)));
    EXPECT_EQ(classify(OutcomeClass::kSuccess, k, c), Verdict::kSuccess);
    EXPECT_EQ(classify(OutcomeClass::kServerError, k, c), Verdict::kFailure);
    EXPECT_EQ(classify(OutcomeClass::kTimeout, k, c), Verdict::kFailure);
    EXPECT_EQ(classify(OutcomeClass::kConnectionError, k, c), Verdict::kFailure);
    EXPECT_EQ(classify(OutcomeClass::kClientError, k, c), Verdict::kIgnored);
    EXPECT_EQ(classify(OutcomeClass::kCancelled, k, c), Verdict::kIgnored);
    EXPECT_EQ(classify(OutcomeClass::kRateLimited, k, c), Verdict::kIgnored);
  }
  EXPECT_EQ(classify(OutcomeClass::kAuthFailed, TargetKind::kProvider, c), Verdict::kIgnored);
  EXPECT_EQ(classify(OutcomeClass::kAuthFailed, TargetKind::kModel, c), Verdict::kIgnored);
  EXPECT_EQ(classify(OutcomeClass::kAuthFailed, TargetKind::kKey, c), Verdict::kFailure);
  c.count_rate_limits = true;
  EXPECT_EQ(classify(OutcomeClass::kRateLimited, TargetKind::kProvider, c), Verdict::kFailure);
  EXPECT_EQ(classify(OutcomeClass::kRateLimited, TargetKind::kKey, c), Verdict::kFailure);
}

TEST(ClassifyTest, Names) {
  EXPECT_EQ(to_string(BreakerState::kHalfOpen), "half_open");
  EXPECT_EQ(to_string(OutcomeClass::kConnectionError), "connection_error");
  EXPECT_EQ(provider_target("openai"), "provider:openai");
  EXPECT_EQ(model_target("openai", "gpt-4o"), "model:openai/gpt-4o");
  EXPECT_EQ(key_target("openai#2"), "key:openai#2");
}

TEST_F(BreakerTest, IgnoredOutcomesNeverOpen) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  calls(b, 20, OutcomeClass::kClientError);
  calls(b, 20, OutcomeClass::kCancelled);
  calls(b, 20, OutcomeClass::kRateLimited);
  calls(b, 20, OutcomeClass::kAuthFailed);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.snapshot().calls_in_window, 0);
  // Unrecorded permits count as cancelled.
  for (int i = 0; i < 20; ++i) {
    Permit p = b.try_acquire();
    ASSERT_TRUE(p);
  }
  EXPECT_EQ(b.snapshot().calls_in_window, 0);
}

TEST_F(BreakerTest, RateLimitsCountWhenConfigured) {
  BreakerConfig c = test_config();
  c.count_rate_limits = true;
  CircuitBreaker b(unique_target(), TargetKind::kProvider, c, clock_);
  calls(b, 5, OutcomeClass::kRateLimited);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST_F(BreakerTest, AuthFailuresOpenAKeyBreaker) {
  CircuitBreaker key(unique_target("#key"), TargetKind::kKey, test_config(), clock_);
  CircuitBreaker model(unique_target("/model"), TargetKind::kModel, test_config(), clock_);
  calls(key, 5, OutcomeClass::kAuthFailed);
  calls(model, 5, OutcomeClass::kAuthFailed);
  EXPECT_EQ(key.state(), BreakerState::kOpen);
  EXPECT_EQ(model.state(), BreakerState::kClosed);
}

TEST_F(BreakerTest, MinCallsRule) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  calls(b, 4, OutcomeClass::kServerError);
  // 100% failures, but fewer than min_calls (5) calls: stays closed.
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  BreakerSnapshot s = b.snapshot();
  EXPECT_EQ(s.calls_in_window, 4);
  EXPECT_DOUBLE_EQ(s.failure_rate, 1.0);
  // A success is the fifth call: 4/5 = 80% >= 50%, so even a success opens it.
  call(b, OutcomeClass::kSuccess);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST_F(BreakerTest, FailureRateThresholdOverSlidingWindow) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  calls(b, 10, OutcomeClass::kSuccess);
  calls(b, 4, OutcomeClass::kTimeout);
  // Window of 10: six successes and four failures, 40%.
  BreakerSnapshot s = b.snapshot();
  EXPECT_EQ(s.state, BreakerState::kClosed);
  EXPECT_EQ(s.calls_in_window, 10);
  EXPECT_EQ(s.failures_in_window, 4);
  EXPECT_DOUBLE_EQ(s.failure_rate, 0.4);
  // The fifth failure pushes out a success: 50% opens it (a cumulative count would be 5/15).
  call(b, OutcomeClass::kConnectionError);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST_F(BreakerTest, OldFailuresSlideOut) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  calls(b, 6, OutcomeClass::kSuccess);
  calls(b, 4, OutcomeClass::kServerError);  // 40%
  calls(b, 10, OutcomeClass::kSuccess);     // the failures leave the window
  EXPECT_EQ(b.snapshot().failures_in_window, 0);
  calls(b, 4, OutcomeClass::kServerError);  // 40% again: only the window counts
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.snapshot().failures_in_window, 4);
}

TEST_F(BreakerTest, SlowCallsOpen) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  calls(b, 4, OutcomeClass::kSuccess, 1001ms);
  EXPECT_EQ(b.state(), BreakerState::kClosed);  // below min_calls
  EXPECT_EQ(b.snapshot().slow_in_window, 4);
  call(b, OutcomeClass::kSuccess, 10ms);  // 4/5 = 80% slow
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_DOUBLE_EQ(b.snapshot().slow_call_rate, 0.8);
}

TEST_F(BreakerTest, ExactlySlowCallMsIsNotSlow) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  calls(b, 10, OutcomeClass::kSuccess, 1000ms);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  EXPECT_EQ(b.snapshot().slow_in_window, 0);
  calls(b, 7, OutcomeClass::kSuccess, 1000ms + 1ns);  // 70% < 80%
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  call(b, OutcomeClass::kSuccess, 2000ms);  // 80%
  EXPECT_EQ(b.state(), BreakerState::kOpen);
}

TEST_F(BreakerTest, OpenRejectsUntilOpenTimeThenHalfOpenOnRead) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  trip(b);
  EXPECT_FALSE(b.try_acquire());
  BreakerSnapshot s = b.snapshot();
  EXPECT_EQ(s.until_half_open, 1000ms);
  EXPECT_EQ(s.open_duration, 1000ms);
  EXPECT_EQ(s.consecutive_openings, 1);
  clock_.advance(999ms);
  EXPECT_EQ(b.snapshot().until_half_open, 1ms);
  EXPECT_FALSE(b.try_acquire());
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  clock_.advance(1ms);
  // A plain read applies the transition; no permit request or timer needed.
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
}

TEST_F(BreakerTest, AllProbesSucceedClosesWithFreshWindow) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  trip(b);
  clock_.advance(1000ms);
  Permit p1 = b.try_acquire();
  Permit p2 = b.try_acquire();
  ASSERT_TRUE(p1);
  ASSERT_TRUE(p2);
  EXPECT_TRUE(p1.is_probe());
  EXPECT_TRUE(p2.is_probe());
  EXPECT_FALSE(b.try_acquire());  // only half_open_probes permits
  p1.record(OutcomeClass::kSuccess, 10ms);
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_FALSE(b.try_acquire());  // a completed probe does not free a slot
  p2.record(OutcomeClass::kSuccess, 10ms);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  BreakerSnapshot s = b.snapshot();
  EXPECT_EQ(s.calls_in_window, 0);
  EXPECT_EQ(s.consecutive_openings, 0);
  // The five failures that tripped it are gone: four more stay under min_calls.
  calls(b, 4, OutcomeClass::kServerError);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  call(b, OutcomeClass::kServerError);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_EQ(b.snapshot().open_duration, 1000ms);  // growth was reset by the close
}

TEST_F(BreakerTest, ProbeFailureReopensAtOnceWithGrowingOpenTimeUpToCap) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  trip(b);
  const Millis expected[] = {2000ms, 4000ms, 5000ms, 5000ms};
  clock_.advance(1000ms);
  for (Millis next : expected) {
    ASSERT_EQ(b.state(), BreakerState::kHalfOpen);
    Permit p1 = b.try_acquire();
    Permit p2 = b.try_acquire();
    ASSERT_TRUE(p1 && p2);
    p1.record(OutcomeClass::kServerError);
    // One failure is enough; the other probe is still out.
    ASSERT_EQ(b.state(), BreakerState::kOpen);
    EXPECT_EQ(b.snapshot().open_duration, next);
    p2.record(OutcomeClass::kSuccess);  // from the previous half-open: ignored
    ASSERT_EQ(b.state(), BreakerState::kOpen);
    clock_.advance(next - 1ms);
    ASSERT_EQ(b.state(), BreakerState::kOpen) << "open time shorter than " << next.count();
    clock_.advance(1ms);
  }
  EXPECT_EQ(b.snapshot().consecutive_openings, 5);
  Permit p1 = b.try_acquire();
  Permit p2 = b.try_acquire();
  p1.record(OutcomeClass::kSuccess);
  p2.record(OutcomeClass::kSuccess);
  ASSERT_EQ(b.state(), BreakerState::kClosed);
  trip(b);
  EXPECT_EQ(b.snapshot().open_duration, 1000ms);
}

TEST_F(BreakerTest, SlowProbesReopen) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  trip(b);
  clock_.advance(1000ms);
  Permit p1 = b.try_acquire();
  Permit p2 = b.try_acquire();
  p1.record(OutcomeClass::kSuccess, 5000ms);
  p2.record(OutcomeClass::kSuccess, 5000ms);  // 100% slow >= 80%
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  EXPECT_EQ(b.snapshot().consecutive_openings, 2);
  clock_.advance(2000ms);
  Permit p3 = b.try_acquire();
  Permit p4 = b.try_acquire();
  p3.record(OutcomeClass::kSuccess, 5000ms);
  p4.record(OutcomeClass::kSuccess, 10ms);  // 50% slow < 80%
  EXPECT_EQ(b.state(), BreakerState::kClosed);
}

TEST_F(BreakerTest, IgnoredProbeResultsHandTheSlotBack) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  trip(b);
  clock_.advance(1000ms);
  Permit p1 = b.try_acquire();
  Permit p2 = b.try_acquire();
  ASSERT_TRUE(p1 && p2);
  ASSERT_FALSE(b.try_acquire());
  p1.record(OutcomeClass::kClientError);  // says nothing about the target
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  Permit p3 = b.try_acquire();
  ASSERT_TRUE(p3);
  ASSERT_FALSE(b.try_acquire());
  { Permit dropped = std::move(p2); }  // dropped unrecorded: cancelled
  Permit p4 = b.try_acquire();
  ASSERT_TRUE(p4);
  ASSERT_FALSE(b.try_acquire());
  EXPECT_EQ(b.snapshot().probes_admitted, 2);
  p3.record(OutcomeClass::kSuccess);
  p4.record(OutcomeClass::kSuccess);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
}

TEST_F(BreakerTest, StuckHalfOpenReturnsToOpen) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  trip(b);
  clock_.advance(1000ms);
  Permit p1 = b.try_acquire();
  Permit p2 = b.try_acquire();
  ASSERT_TRUE(p1 && p2);
  clock_.advance(9999ms);  // the probes hang
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_FALSE(b.try_acquire());
  clock_.advance(1ms);  // half_open_timeout_ms
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  BreakerSnapshot s = b.snapshot();
  EXPECT_EQ(s.consecutive_openings, 2);
  EXPECT_EQ(s.open_duration, 2000ms);
  clock_.advance(2000ms);
  ASSERT_EQ(b.state(), BreakerState::kHalfOpen);
  // The hung probes finally answer: they belong to the earlier half-open and count for nothing.
  p1.record(OutcomeClass::kSuccess);
  p2.record(OutcomeClass::kSuccess);
  s = b.snapshot();
  EXPECT_EQ(s.state, BreakerState::kHalfOpen);
  EXPECT_EQ(s.probes_succeeded, 0);
  Permit p3 = b.try_acquire();
  Permit p4 = b.try_acquire();
  ASSERT_TRUE(p3 && p4);
  p3.record(OutcomeClass::kSuccess);
  p4.record(OutcomeClass::kSuccess);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
}

TEST_F(BreakerTest, StaleClosedPermitsAreIgnored) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  Permit slow_failure = b.try_acquire();  // a long call, taken while closed
  Permit slow_success = b.try_acquire();
  Permit late = b.try_acquire();
  const uint32_t closed_gen = slow_failure.generation();
  trip(b);
  slow_failure.record(OutcomeClass::kServerError, 100s);  // while open: nothing to change
  EXPECT_EQ(b.snapshot().failures_in_window, 5);
  clock_.advance(1000ms);
  Permit p1 = b.try_acquire();
  ASSERT_TRUE(p1);
  EXPECT_NE(p1.generation(), closed_gen);
  // A failure from before the opening must not reopen the half-open breaker.
  late.record(OutcomeClass::kTimeout);
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);
  Permit p2 = b.try_acquire();
  ASSERT_TRUE(p2);
  p1.record(OutcomeClass::kSuccess);
  p2.record(OutcomeClass::kSuccess);
  ASSERT_EQ(b.state(), BreakerState::kClosed);
  // Nor may an old result land in the fresh window.
  slow_success.record(OutcomeClass::kSuccess, 100s);
  EXPECT_EQ(b.snapshot().calls_in_window, 0);
}

TEST_F(BreakerTest, ResetClosesWithFreshWindow) {
  CircuitBreaker b(unique_target(), TargetKind::kProvider, test_config(), clock_);
  trip(b);
  b.reset();
  EXPECT_EQ(b.state(), BreakerState::kClosed);
  BreakerSnapshot s = b.snapshot();
  EXPECT_EQ(s.calls_in_window, 0);
  EXPECT_EQ(s.consecutive_openings, 0);
  calls(b, 4, OutcomeClass::kServerError);
  EXPECT_EQ(b.state(), BreakerState::kClosed);
}

// Another gateway's breaker for the same target opened: this one opens too, for its own open time,
// and recovers through half-open as usual; an open one is left alone.
TEST_F(BreakerTest, OpenFromPeerOpensOnceAndRecoversAsUsual) {
  std::vector<std::string> heard;
  auto observer = std::make_shared<const TransitionObserver>(
      [&heard](std::string_view, BreakerState from, BreakerState to) {
        heard.push_back(std::string(to_string(from)) + ">" + std::string(to_string(to)));
      });
  BreakerRegistry reg(clock_, test_config(), {}, observer);
  auto b = reg.provider("peer");
  EXPECT_TRUE(b->open_from_peer());
  EXPECT_EQ(b->state(), BreakerState::kOpen);
  EXPECT_FALSE(b->try_acquire());
  EXPECT_FALSE(b->open_from_peer()) << "already open: nothing changes";
  clock_.advance(999ms);
  EXPECT_EQ(b->state(), BreakerState::kOpen) << "open for its own open_ms";
  clock_.advance(1ms);
  Permit probe = b->try_acquire();
  ASSERT_TRUE(probe);
  EXPECT_TRUE(probe.is_probe());
  // A peer's opening while this one probes: open again, now for the grown open time.
  EXPECT_TRUE(b->open_from_peer());
  EXPECT_EQ(b->snapshot().consecutive_openings, 2);
  clock_.advance(1999ms);
  EXPECT_EQ(b->state(), BreakerState::kOpen);
  EXPECT_EQ(heard, (std::vector<std::string>{"closed>open", "open>half_open", "half_open>open"}));
}

// The registry's observer hears every transition of every breaker it made, in order, once.
TEST_F(BreakerTest, ObserverHearsEveryTransitionInOrder) {
  std::vector<std::string> heard;
  auto observer = std::make_shared<const TransitionObserver>(
      [&heard](std::string_view target, BreakerState from, BreakerState to) {
        heard.push_back(std::string(target) + " " + std::string(to_string(from)) + ">" +
                        std::string(to_string(to)));
      });
  BreakerRegistry reg(clock_, test_config(), {}, observer);
  auto b = reg.provider("observed");
  trip(*b);  // closed > open
  clock_.advance(1000ms);
  Permit p1 = b->try_acquire();  // open > half_open
  ASSERT_TRUE(p1);
  p1.record(OutcomeClass::kServerError, 10ms);  // half_open > open
  clock_.advance(5000ms);
  Permit p2 = b->try_acquire();
  Permit p3 = b->try_acquire();
  ASSERT_TRUE(p2 && p3);
  p2.record(OutcomeClass::kSuccess, 10ms);
  p3.record(OutcomeClass::kSuccess, 10ms);  // half_open > closed
  trip(*b);
  b->reset();  // open > closed by the operator
  EXPECT_EQ(heard, (std::vector<std::string>{
                       "provider:observed closed>open", "provider:observed open>half_open",
                       "provider:observed half_open>open", "provider:observed open>half_open",
                       "provider:observed half_open>closed", "provider:observed closed>open",
                       "provider:observed open>closed"}));
}

TEST_F(BreakerTest, ConfigIsClamped) {
  BreakerConfig c = test_config();
  c.window = 0;
  c.min_calls = 100;
  c.half_open_probes = 0;
  c.open_ms = 0;
  c.max_open_ms = 0;
  c.half_open_timeout_ms = 0;
  CircuitBreaker b(unique_target(), TargetKind::kProvider, c, clock_);
  EXPECT_EQ(b.config().window, 1);
  EXPECT_EQ(b.config().min_calls, 1);
  EXPECT_EQ(b.config().half_open_probes, 1);
  call(b, OutcomeClass::kServerError);
  EXPECT_EQ(b.state(), BreakerState::kOpen);
  clock_.advance(1ms);
  EXPECT_EQ(b.state(), BreakerState::kHalfOpen);  // and not a busy loop
  clock_.advance(1ms);
  EXPECT_EQ(b.state(), BreakerState::kOpen);  // timed out
}

TEST_F(BreakerTest, MetricsCountEveryTransition) {
  const std::string t = unique_target();
  CircuitBreaker b(t, TargetKind::kProvider, test_config(), clock_);
  const std::string family = "switchboard_breaker_transitions_total";
  auto transitions = [&](const char* from, const char* to) {
    return metric_value(family, {{"target", t}, {"from", from}, {"to", to}});
  };
  // The state set: 1 for the current state, 0 for the others; as a number (0 closed, 1 open,
  // 2 half-open) for the checks below.
  auto gauge = [&] {
    double closed = metric_value("switchboard_breaker_state", {{"target", t}, {"state", "closed"}});
    double open = metric_value("switchboard_breaker_state", {{"target", t}, {"state", "open"}});
    double half =
        metric_value("switchboard_breaker_state", {{"target", t}, {"state", "half_open"}});
    EXPECT_EQ(closed + open + half, 1) << "exactly one state is set";
    return open == 1 ? 1 : half == 1 ? 2 : 0;
  };
  EXPECT_EQ(gauge(), 0);
  trip(b);
  EXPECT_EQ(transitions("closed", "open"), 1);
  EXPECT_EQ(gauge(), 1);
  clock_.advance(1000ms);
  ASSERT_EQ(b.state(), BreakerState::kHalfOpen);
  EXPECT_EQ(transitions("open", "half_open"), 1);
  EXPECT_EQ(gauge(), 2);
  {
    Permit p = b.try_acquire();
    p.record(OutcomeClass::kServerError);
  }
  EXPECT_EQ(transitions("half_open", "open"), 1);
  EXPECT_EQ(gauge(), 1);
  clock_.advance(2000ms);
  Permit p1 = b.try_acquire();
  Permit p2 = b.try_acquire();
  p1.record(OutcomeClass::kSuccess);
  p2.record(OutcomeClass::kSuccess);
  EXPECT_EQ(transitions("open", "half_open"), 2);
  EXPECT_EQ(transitions("half_open", "closed"), 1);
  EXPECT_EQ(transitions("closed", "open"), 1);
  EXPECT_EQ(gauge(), 0);
}

// 8 callers race for the probe slots the moment the open time ends (they also race to apply the
// open -> half-open transition itself). Exactly half_open_probes of them may win, every round.
TEST_F(BreakerTest, HalfOpenAdmitsExactlyProbesUnderConcurrency) {
  constexpr int kThreads = 8;
  constexpr int kRounds = 200;
  BreakerConfig c = test_config();
  c.half_open_probes = 3;
  CircuitBreaker b(unique_target(), TargetKind::kProvider, c, clock_);
  trip(b);
  std::vector<Permit> permits(kThreads);
  std::barrier sync(kThreads + 1);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      for (int r = 0; r < kRounds; ++r) {
        sync.arrive_and_wait();  // round starts
        permits[i] = b.try_acquire();
        sync.arrive_and_wait();  // round done
        sync.arrive_and_wait();  // main has inspected and cleaned up
      }
    });
  }
  for (int r = 0; r < kRounds; ++r) {
    clock_.advance(Millis(c.max_open_ms));  // past any open time
    sync.arrive_and_wait();
    sync.arrive_and_wait();
    int admitted = 0;
    Permit* probe = nullptr;
    for (Permit& p : permits) {
      if (!p) continue;
      ++admitted;
      EXPECT_TRUE(p.is_probe());
      probe = &p;
    }
    EXPECT_EQ(admitted, c.half_open_probes) << "round " << r;
    ASSERT_NE(probe, nullptr);
    probe->record(OutcomeClass::kServerError);  // back to open; the other probes become stale
    for (Permit& p : permits) p = Permit();
    ASSERT_EQ(b.state(), BreakerState::kOpen);
    sync.arrive_and_wait();
  }
  for (auto& t : threads) t.join();
}

// ---------------------------------------------------------------------------------------------
// Registry

TEST(RegistryTest, CreatesOnDemandWithPerProviderConfig) {
  ManualClock clock;
  BreakerConfig defaults = test_config();
  BreakerConfig fast = test_config();
  fast.open_ms = 10;
  fast.window = 3;
  fast.min_calls = 3;
  BreakerRegistry reg(clock, defaults, {{"regfast", fast}});
  auto p = reg.provider("regfast");
  EXPECT_EQ(p, reg.provider("regfast"));
  EXPECT_EQ(p->target(), "provider:regfast");
  EXPECT_EQ(p->kind(), TargetKind::kProvider);
  EXPECT_EQ(p->config().open_ms, 10);
  auto m = reg.model("regfast", "m1");
  EXPECT_EQ(m, reg.model("regfast", "m1"));
  EXPECT_NE(m, reg.model("regfast", "m2"));
  EXPECT_EQ(m->target(), "model:regfast/m1");
  EXPECT_EQ(m->kind(), TargetKind::kModel);
  EXPECT_EQ(m->config().window, 3);
  auto k = reg.key("regfast", "regfast#1");
  EXPECT_EQ(k->target(), "key:regfast#1");
  EXPECT_EQ(k->kind(), TargetKind::kKey);
  EXPECT_EQ(k->config().open_ms, 10);
  auto other = reg.provider("regslow");
  EXPECT_EQ(other->config().open_ms, defaults.open_ms);
  EXPECT_EQ(reg.find("model:regfast/m1"), m);
  EXPECT_EQ(reg.find("provider:nope"), nullptr);
}

TEST(RegistryTest, FromConfig) {
  ManualClock clock;
  Config config;
  config.breaker.window = 7;
  ProviderConfig p;
  p.name = "cfgprov";
  p.breaker.window = 4;
  config.providers.push_back(p);
  BreakerRegistry reg(clock, config);
  EXPECT_EQ(reg.config_for("cfgprov").window, 4);
  EXPECT_EQ(reg.config_for("other").window, 7);
  EXPECT_EQ(reg.model("cfgprov", "x")->config().window, 4);
}

TEST(RegistryTest, SnapshotAdvancesAndReports) {
  ManualClock clock;
  BreakerRegistry reg(clock, test_config());
  auto b = reg.model("snapprov", "m");
  reg.provider("snapprov");
  for (int i = 0; i < 3; ++i) b->try_acquire().record(OutcomeClass::kSuccess);
  for (int i = 0; i < 3; ++i) b->try_acquire().record(OutcomeClass::kServerError);
  ASSERT_EQ(b->state(), BreakerState::kOpen);
  clock.advance(400ms);
  std::vector<BreakerSnapshot> snaps = reg.snapshot();
  ASSERT_EQ(snaps.size(), 2u);
  EXPECT_EQ(snaps[0].target, "model:snapprov/m");  // sorted by target
  EXPECT_EQ(snaps[1].target, "provider:snapprov");
  const BreakerSnapshot& s = snaps[0];
  EXPECT_EQ(s.kind, TargetKind::kModel);
  EXPECT_EQ(s.state, BreakerState::kOpen);
  EXPECT_EQ(s.calls_in_window, 6);
  EXPECT_DOUBLE_EQ(s.failure_rate, 0.5);
  EXPECT_DOUBLE_EQ(s.slow_call_rate, 0.0);
  EXPECT_EQ(s.until_half_open, 600ms);
  EXPECT_EQ(s.consecutive_openings, 1);
  EXPECT_EQ(snaps[1].state, BreakerState::kClosed);
  clock.advance(600ms);
  EXPECT_EQ(reg.snapshot()[0].state, BreakerState::kHalfOpen);  // lazily advanced
}

TEST(RegistryTest, ConcurrentCreationYieldsOneBreaker) {
  ManualClock clock;
  BreakerRegistry reg(clock, test_config());
  std::vector<std::shared_ptr<CircuitBreaker>> got(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { got[i] = reg.model("raceprov", "m"); });
  }
  for (auto& t : threads) t.join();
  for (auto& g : got) EXPECT_EQ(g, got[0]);
  EXPECT_EQ(reg.snapshot().size(), 1u);
}

}  // namespace
}  // namespace switchboard::breaker
