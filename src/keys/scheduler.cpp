// ManualScheduler: timers run by hand against simulated time.
#include <vector>

#include "keys/keys.h"

namespace switchboard::keys {

Scheduler::TimerId ManualScheduler::schedule_at(MonoTime when, std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  TimerId id = next_id_++;
  timers_.emplace(when, std::make_pair(id, std::move(fn)));
  return id;
}

void ManualScheduler::cancel(TimerId id) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = timers_.begin(); it != timers_.end(); ++it) {
    if (it->second.first == id) {
      timers_.erase(it);
      return;
    }
  }
}

int ManualScheduler::run_due(MonoTime now) {
  int ran = 0;
  for (;;) {
    std::function<void()> fn;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = timers_.begin();
      if (it == timers_.end() || it->first > now) break;
      fn = std::move(it->second.second);
      timers_.erase(it);
    }
    // Outside the lock: the function may schedule or cancel timers.
    fn();
    ++ran;
  }
  return ran;
}

size_t ManualScheduler::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return timers_.size();
}

std::optional<MonoTime> ManualScheduler::next_due() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first;
}

}  // namespace switchboard::keys
