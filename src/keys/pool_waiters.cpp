// detail::Core, the wait queue: waiters served in FIFO order as capacity frees, their timers, and
// cancellation (pool_core.h has the class).
#include <atomic>

#include "keys/pool_core.h"

namespace switchboard::keys::detail {
namespace {

bool permanent(NoKeyReason r) {
  return r == NoKeyReason::kNoUsableKey || r == NoKeyReason::kTooLarge;
}

// Wait ids are unique across pools, so a cancel can follow a wait that was forwarded.
std::atomic<uint64_t> g_next_wait_id{1};

}  // namespace

WaitId Core::wait_async(AcquireRequest req, WaitCallback cb) {
  if (handed_over_.load(std::memory_order_acquire)) {
    return successor_->wait_async(std::move(req), std::move(cb));
  }
  // A hand-over between this check and the queueing below leaves the waiter in this pool's
  // queue, where its first attempt finds the pool handed over and fails it with kShutdown
  // (see pump()); the caller retries against the new pool.
  Ready ready;
  WaitId id = 0;
  {
    auto wl = lock(wait_mu_);
    const Now t = read_now();
    id = g_next_wait_id.fetch_add(1, std::memory_order_relaxed);
    Waiter& w = waiters_[id];
    w.req = std::move(req);
    w.cb = std::move(cb);
    // Published before this waiter's first attempt: a completion that frees a key after that
    // attempt looked at it sees the count and pumps (it serialises on the key's mutex).
    waiting_.store(waiters_.size());
    // Pairs with the fence in set_enabled(): either we see the key's hint lowered, or it sees
    // us waiting (a store-buffer race on weakly ordered CPUs otherwise).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    pump(t, ready);  // earlier waiters first; serves this one too if it can be
    auto it = waiters_.find(id);
    if (it != waiters_.end() && scheduler_ == nullptr) {
      ready.emplace_back(std::move(it->second.cb),
                         NoKey{NoKeyReason::kNoScheduler, mono(it->second.earliest)});
      waiters_.erase(it);
    } else if (it != waiters_.end()) {
      arm_timer(id, it->second, t.mono);
    }
    waiting_.store(waiters_.size());
  }
  run(ready);
  return id;
}

bool Core::cancel_wait(WaitId id) {
  WaitCallback cb;
  {
    auto wl = lock(wait_mu_);
    auto it = waiters_.find(id);
    if (it == waiters_.end()) {
      // Queued in the successor when wait_async was forwarded (ids are unique across pools).
      if (!handed_over_.load(std::memory_order_acquire)) return false;
      std::shared_ptr<Core> next = successor_;
      wl.unlock();
      return next->cancel_wait(id);
    }
    if (it->second.timer != 0) scheduler_->cancel(it->second.timer);
    cb = std::move(it->second.cb);
    waiters_.erase(it);
    waiting_.store(waiters_.size());
  }
  cb(NoKey{NoKeyReason::kCancelled, MonoTime::max()});
  return true;
}

size_t Core::waiting() {
  auto wl = lock(wait_mu_);
  return waiters_.size();
}

void Core::shutdown() {
  std::map<WaitId, Waiter> waiters;
  {
    auto wl = lock(wait_mu_);
    waiters.swap(waiters_);
    waiting_.store(0);
    for (auto& [id, w] : waiters) {
      if (w.timer != 0) scheduler_->cancel(w.timer);
    }
  }
  for (auto& [id, w] : waiters) w.cb(NoKey{NoKeyReason::kShutdown, MonoTime::max()});
}

void Core::on_timer(WaitId id) {
  Ready ready;
  {
    auto wl = lock(wait_mu_);
    auto it = waiters_.find(id);
    if (it == waiters_.end()) return;
    it->second.timer = 0;
    it->second.timer_at = kNever;
    const Now t = read_now();
    pump(t, ready);
    it = waiters_.find(id);
    if (it != waiters_.end()) arm_timer(id, it->second, t.mono);
  }
  run(ready);
}

void Core::pump_waiters() {
  Ready ready;
  {
    auto wl = lock(wait_mu_);
    if (!waiters_.empty()) pump(read_now(), ready);
  }
  run(ready);
}

void Core::pump(const Now& t, Ready& ready) {
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    Waiter& w = it->second;
    if (t.mono >= ns(w.req.deadline)) {
      finish(it, NoKey{NoKeyReason::kTimeout, mono(w.earliest)}, ready);
      continue;
    }
    bool forwarded = false;
    AcquireResult r =
        try_acquire(w.req.model, w.req.estimated_tokens, w.req.session_id, t, forwarded);
    if (forwarded) {
      // A waiter queued just after the hand-over (see wait_async): the caller retries against
      // the new pool.
      finish(it, NoKey{NoKeyReason::kShutdown, MonoTime::max()}, ready);
      continue;
    }
    if (r.ok() || permanent(r.no_key().reason)) {
      finish(it, std::move(r), ready);
      continue;
    }
    w.earliest = ns(r.no_key().earliest);
    if (w.timer != 0 && wake_time(w, t.mono) < w.timer_at) arm_timer(it->first, w, t.mono);
    ++it;
  }
  waiting_.store(waiters_.size());
}

void Core::finish(std::map<WaitId, Waiter>::iterator& it, AcquireResult result, Ready& ready) {
  if (it->second.timer != 0) scheduler_->cancel(it->second.timer);
  ready.emplace_back(std::move(it->second.cb), std::move(result));
  it = waiters_.erase(it);
}

int64_t Core::wake_time(const Waiter& w, int64_t now) {
  int64_t deadline = ns(w.req.deadline);
  // Concurrency-bound waiters are woken by completions; only the deadline needs a timer.
  if (w.earliest > now && w.earliest < deadline) return w.earliest;
  return deadline;
}

void Core::arm_timer(WaitId id, Waiter& w, int64_t now) {
  int64_t at = wake_time(w, now);
  if (w.timer != 0) scheduler_->cancel(w.timer);
  w.timer_at = at;
  std::weak_ptr<Core> weak = weak_from_this();
  w.timer = scheduler_->schedule_at(mono(at), [weak, id] {
    if (auto core = weak.lock()) core->on_timer(id);
  });
}

}  // namespace switchboard::keys::detail
