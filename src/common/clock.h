// Clock: the one source of time for every module.
//
// Logic modules (keys, breaker, routing, workflow) take a `Clock&` so that tests drive them with
// `ManualClock` in simulated time. `now()` is monotonic (deadlines, windows, cooldowns);
// `wall_now()` is calendar time (HTTP dates, daily resets at a UTC hour, stored timestamps).
//
// Thread-safety: every method of every implementation may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace switchboard {

using MonoClock = std::chrono::steady_clock;
using MonoTime = MonoClock::time_point;
using WallTime = std::chrono::system_clock::time_point;
using Millis = std::chrono::milliseconds;
using Micros = std::chrono::microseconds;
using Nanos = std::chrono::nanoseconds;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoTime now() const = 0;
  virtual WallTime wall_now() const = 0;
};

// The real clocks of the process.
class SystemClock final : public Clock {
 public:
  MonoTime now() const override { return MonoClock::now(); }
  WallTime wall_now() const override { return std::chrono::system_clock::now(); }
  // A process-wide instance; it has no state, so sharing it is free.
  static SystemClock& instance();
};

// Simulated time for tests. Starts at an arbitrary non-zero monotonic point and at the given wall
// time; only `advance` and `set_wall` move it. Both clocks advance together.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(WallTime wall_start = WallTime(std::chrono::seconds(1'700'000'000)))
      : mono_ns_(1'000'000'000'000),
        wall_ns_(std::chrono::duration_cast<Nanos>(wall_start.time_since_epoch()).count()) {}

  MonoTime now() const override {
    return MonoTime(Nanos(mono_ns_.load(std::memory_order_acquire)));
  }
  WallTime wall_now() const override {
    return WallTime(std::chrono::duration_cast<WallTime::duration>(
        Nanos(wall_ns_.load(std::memory_order_acquire))));
  }
  // Wall time first: a thread that sees the new monotonic time (a deadline passed) then also
  // sees the new wall time (what is due), never a monotonic time ahead of its wall time.
  void advance(Nanos d) {
    wall_ns_.fetch_add(d.count(), std::memory_order_acq_rel);
    mono_ns_.fetch_add(d.count(), std::memory_order_acq_rel);
  }
  // Moves wall time only (simulates a calendar jump; monotonic time is unaffected).
  void set_wall(WallTime t) {
    wall_ns_.store(std::chrono::duration_cast<Nanos>(t.time_since_epoch()).count(),
                   std::memory_order_release);
  }

 private:
  std::atomic<int64_t> mono_ns_;
  std::atomic<int64_t> wall_ns_;
};

}  // namespace switchboard
