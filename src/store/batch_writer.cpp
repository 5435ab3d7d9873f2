// BatchWriter: the store's queue and writer thread (see batch_writer.h).
#include "store/batch_writer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "common/json.h"
#include "common/log.h"
#include "common/metrics.h"

namespace switchboard::store {
namespace detail {

namespace {

constexpr std::array<const char*, kEventKinds> kKindNames = {
    "outcome",     "usage",    "key_state", "breaker_transition", "bandit_posterior",
    "model_stats", "feedback", "learning",  "learning_compact",   "contextual_model",
    "response"};

}  // namespace

// Prometheus handles, resolved once per process (shared by every store instance).
struct StoreMetrics {
  prometheus::Gauge* queue_depth;
  prometheus::Histogram* commit_seconds;
  std::array<prometheus::Counter*, kEventKinds> dropped;
  prometheus::Counter* write_errors;
  prometheus::Counter* committed;
  prometheus::Counter* overflow;

  StoreMetrics() {
    queue_depth = &metrics::gauge_family("switchboard_store_queue_depth",
                                         "Events waiting for the store writer")
                       .Add({});
    commit_seconds = &metrics::histogram_family("switchboard_store_commit_seconds",
                                                "Duration of one group-commit transaction")
                          .Add({}, metrics::latency_buckets_seconds());
    auto& d = metrics::counter_family("switchboard_store_dropped_total",
                                      "Events not persisted (queue full, closed, write failed)");
    for (size_t i = 0; i < kEventKinds; ++i) dropped[i] = &d.Add({{"kind", kKindNames[i]}});
    write_errors = &metrics::counter_family("switchboard_store_write_errors_total",
                                            "Failed store transactions")
                        .Add({});
    committed = &metrics::counter_family("switchboard_store_committed_events_total",
                                         "Events committed by the store writer")
                     .Add({});
    overflow = &metrics::counter_family(
                    "switchboard_store_overflow_total",
                    "Essential events queued beyond the capacity instead of waiting for space")
                    .Add({});
  }
};

namespace {

StoreMetrics& store_metrics() {
  static StoreMetrics m;
  return m;
}

}  // namespace

BatchWriter::BatchWriter(const StateConfig& state, const Clock& clock, Millis prune_interval,
                         BatchSink& sink)
    : clock_(&clock),
      prune_interval_(prune_interval),
      sink_(sink),
      capacity_(static_cast<size_t>(std::max<int64_t>(state.queue_capacity, 1))),
      batch_max_(static_cast<size_t>(std::max<int64_t>(state.batch_max, 1))),
      batch_interval_(std::max<int64_t>(state.batch_ms, 1)),
      metrics_(store_metrics()) {}

void BatchWriter::start(uint64_t last_seq) {
  next_seq_ = last_seq;
  committed_seq_.store(next_seq_, std::memory_order_release);
  writer_ = std::thread([this] { run(); });
}

void BatchWriter::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  writer_cv_.notify_all();
  space_cv_.notify_all();
  if (writer_.joinable()) writer_.join();
}

uint64_t BatchWriter::enqueue(Event&& event) {
  std::unique_lock lock(mu_);
  bool wake = false;
  const uint64_t seq = enqueue_locked(lock, std::move(event), wake);
  lock.unlock();
  if (wake) writer_cv_.notify_one();
  return seq;
}

void BatchWriter::enqueue_batch(std::span<Event> events) {
  std::unique_lock lock(mu_);
  bool wake = false;
  for (Event& e : events) enqueue_locked(lock, std::move(e), wake);
  lock.unlock();
  if (wake) writer_cv_.notify_one();
}

Status BatchWriter::flush() {
  std::unique_lock lock(mu_);
  const uint64_t target = next_seq_;
  if (committed_seq_.load(std::memory_order_acquire) >= target) return Status();
  if (writer_exited_) return Status::unavailable("store closed");
  const uint64_t gen = failure_gen_;
  flush_requested_ = true;
  writer_cv_.notify_one();
  done_cv_.wait(lock, [&] {
    return committed_seq_.load(std::memory_order_acquire) >= target || failure_gen_ != gen ||
           writer_exited_;
  });
  if (committed_seq_.load(std::memory_order_acquire) >= target) return Status();
  if (failure_gen_ != gen) return last_failure_;
  return Status::unavailable("store closed before the flush completed");
}

Status BatchWriter::prune() {
  std::unique_lock lock(mu_);
  if (stopping_ || writer_exited_) return Status::unavailable("store closed");
  const uint64_t gen = prune_gen_;
  prune_requested_ = true;
  writer_cv_.notify_one();
  done_cv_.wait(lock, [&] { return prune_gen_ != gen || writer_exited_; });
  if (prune_gen_ == gen) return Status::unavailable("store closed before pruning");
  return prune_status_;
}

StoreCounters BatchWriter::counters() const {
  StoreCounters c;
  {
    std::lock_guard lock(mu_);
    c.enqueued = enqueued_;
  }
  c.committed = committed_.load(std::memory_order_relaxed);
  c.dropped = dropped_.load(std::memory_order_relaxed);
  c.write_errors = write_errors_.load(std::memory_order_relaxed);
  c.overflowed = overflowed_.load(std::memory_order_relaxed);
  return c;
}

// enqueue() with mu_ held (it may wait for space, releasing it meanwhile). Sets `wake` when
// the writer should be woken once the lock is released.
uint64_t BatchWriter::enqueue_locked(std::unique_lock<std::mutex>& lock, Event&& event,
                                     bool& wake) {
  const bool essential = is_essential(event);
  if (const auto* r = std::get_if<StoredResponseEvent>(&event)) {
    // An id no lookup could name (and PostgreSQL could not index or hold as text).
    if (r->id.empty() || r->id.size() > kMaxResponseIdBytes || utf8_repaired(r->id)) {
      log::error("store: a stored response with an invalid id ({} bytes) refused", r->id.size());
      count_drop(event.index());
      return 0;
    }
  }
  if (stopping_) {
    count_drop(event.index());
    return 0;
  }
  if (queued() >= capacity_) {
    if (normal_.size() > 0) {
      // Drop the oldest non-essential event; release its memory now.
      count_drop(normal_.drop_oldest());
    } else if (!essential) {
      // Only essential events are queued: this one is the oldest non-essential.
      count_drop(event.index());
      return 0;
    } else {
      // Only essential events are queued. A request waits for space at most kEssentialWait
      // (invariant 6: writers never block a request); then the event goes over the capacity into
      // the overflow the writer drains first, bounded by kOverflowFactor times the capacity.
      if (wake) {
        writer_cv_.notify_one();  // it frees the space we wait for
        wake = false;
      }
      space_cv_.wait_for(lock, kEssentialWait, [&] { return stopping_ || queued() < capacity_; });
      if (stopping_) {
        log::error("store: essential {} event refused: store closing", kKindNames[event.index()]);
        count_drop(event.index());
        return 0;
      }
      if (queued() >= capacity_) {
        if (essential_.size() >= capacity_ * kOverflowFactor) {
          log::error("store: essential {} event dropped: the writer is {} events behind",
                     kKindNames[event.index()], essential_.size());
          count_drop(event.index());
          return 0;
        }
        metrics_.overflow->Increment();
        overflowed_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  const uint64_t seq = ++next_seq_;
  (essential ? essential_ : normal_).push(seq, std::move(event));
  if (queued() == batch_max_) wake = true;
  ++enqueued_;
  return seq;
}

void BatchWriter::count_drop(size_t kind) {
  metrics_.dropped[kind]->Increment();
  dropped_.fetch_add(1, std::memory_order_relaxed);
}

// Publishes progress to flush()/prune() waiters. Taking the lock orders the update before any
// waiter's predicate check, so no wake-up is lost.
template <typename F>
void BatchWriter::publish(F&& f) {
  {
    std::lock_guard lock(mu_);
    f();
  }
  done_cv_.notify_all();
}

// Counts and logs a failed write. `events` > 0: a batch failed, which fails pending flushes;
// a failed prune (events == 0) does not concern them.
void BatchWriter::record_failure(const Status& st, size_t events) {
  write_errors_.fetch_add(1, std::memory_order_relaxed);
  metrics_.write_errors->Increment();
  // A full disk fails every batch: log the first failures and then every 100th.
  const uint64_t n = ++failures_logged_;
  if (n <= 5 || n % 100 == 0) {
    log::error("store: write of {} events failed ({} failures so far): {}", events, n,
               st.message());
  }
  if (events == 0) return;
  publish([&] {
    ++failure_gen_;
    last_failure_ = st;
  });
}

void BatchWriter::run() {
  Ring ess, norm;
  std::vector<Entry> retry;  // essential events whose commit failed, retried before new ones
  uint64_t retry_seq = 0;    // the last sequence number of the failed batch
  int retry_failures = 0;
  bool prune_more = true;  // prune once at start, then every prune_interval
  MonoTime next_prune = clock_->now();
  for (;;) {
    bool stop = false;
    bool prune_req = false;
    uint64_t last_seq = 0;
    {
      std::unique_lock lock(mu_);
      if (retry.empty()) {
        auto ready = [&] {
          return stopping_ || flush_requested_ || prune_requested_ || queued() >= batch_max_;
        };
        if (!ready()) writer_cv_.wait_for(lock, batch_interval_, ready);
        metrics_.queue_depth->Set(static_cast<double>(queued()));
        std::swap(ess, essential_);
        std::swap(norm, normal_);
        flush_requested_ = false;
        last_seq = next_seq_;
      } else {
        // Back off while the disk refuses writes; essential events stay queued meanwhile,
        // so producers of essential events feel the back-pressure.
        auto backoff =
            std::min<Millis>(Millis(1000), batch_interval_ * (1 << std::min(retry_failures, 6)));
        writer_cv_.wait_for(lock, stopping_ ? batch_interval_ : backoff,
                            [&] { return prune_requested_; });
        last_seq = retry_seq;
      }
      stop = stopping_;
      prune_req = prune_requested_;
    }
    space_cv_.notify_all();

    const size_t n = retry.size() + ess.size() + norm.size();
    if (n > 0) {
      const auto t0 = MonoClock::now();
      Status st = sink_.write_batch(retry, ess, norm);
      if (st.ok()) {
        metrics_.commit_seconds->Observe(
            std::chrono::duration<double>(MonoClock::now() - t0).count());
        metrics_.committed->Increment(static_cast<double>(n));
        committed_.fetch_add(n, std::memory_order_relaxed);
        retry.clear();
        retry_failures = 0;
        publish([&] { committed_seq_.store(last_seq, std::memory_order_release); });
      } else {
        // Non-essential events of the failed batch are given up (and counted); essential
        // ones are kept and retried.
        for (size_t i = 0; i < norm.size(); ++i) count_drop(norm.at(i).event.index());
        for (size_t i = 0; i < ess.size(); ++i) retry.push_back(std::move(ess.at(i)));
        retry_seq = last_seq;
        ++retry_failures;
        record_failure(st, n);
        if (stop && retry_failures > 5) {
          for (const Entry& e : retry) count_drop(e.event.index());
          log::error("store: closing with {} essential events that could not be written",
                     retry.size());
          retry.clear();
          publish([&] { committed_seq_.store(last_seq, std::memory_order_release); });
        }
      }
      ess.clear();
      norm.clear();
    } else if (last_seq > committed_seq_.load(std::memory_order_relaxed)) {
      // Everything up to last_seq was dropped before the writer saw it.
      publish([&] { committed_seq_.store(last_seq, std::memory_order_release); });
    }

    // Retention: one small batch per cycle while there is more, so new events keep flowing.
    // The next prune is due an interval after the time of this decision, read before the
    // prune reads the wall clock: a later reading could already be past what this prune saw,
    // and old rows would wait a whole interval more.
    const MonoTime decided = clock_->now();
    if (prune_req) {
      Status st;
      while (true) {
        int64_t deleted = sink_.prune_batch(&st);
        if (deleted <= 0) break;
      }
      if (!st.ok()) record_failure(st, 0);
      prune_more = false;
      next_prune = decided + prune_interval_;
      publish([&] {
        prune_requested_ = false;
        ++prune_gen_;
        prune_status_ = st;
      });
    } else if (!stop && (prune_more || decided >= next_prune)) {
      Status st;
      const int64_t deleted = sink_.prune_batch(&st);
      if (deleted < 0) record_failure(st, 0);
      prune_more = deleted > 0;
      if (!prune_more) next_prune = decided + prune_interval_;
    }

    if (stop && retry.empty()) {
      std::lock_guard lock(mu_);
      if (queued() == 0) break;
    }
  }

  sink_.finish();
  metrics_.queue_depth->Set(0);
  publish([&] { writer_exited_ = true; });
  space_cv_.notify_all();
}

}  // namespace detail

namespace detail {

std::string floats_hex(const std::vector<float>& v) {
  return json::hex_encode(
      std::string_view(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)));
}

size_t utf8_sequence(std::string_view s) {
  if (s.empty()) return 0;
  auto byte = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = byte(0);
  if (c < 0x80) return c != 0 ? 1 : 0;
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range (Unicode's Table 3-7)
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < lo || byte(1) > hi) return 0;
  for (size_t i = 2; i < n; ++i)
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  return n;
}

std::optional<std::string> utf8_repaired(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = utf8_sequence(s.substr(i));
    if (n == 0) break;
    i += n;
  }
  if (i == s.size()) return std::nullopt;
  std::string out(s.substr(0, i));
  while (i < s.size()) {
    const size_t n = utf8_sequence(s.substr(i));
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

bool floats_from_hex(std::string_view hex, size_t count, std::vector<float>& out) {
  auto bytes = json::hex_decode(hex);
  if (!bytes || bytes->size() != count * sizeof(float)) return false;
  out.resize(count);
  std::memcpy(out.data(), bytes->data(), bytes->size());
  for (float f : out)
    if (!std::isfinite(f)) return false;
  return true;
}

}  // namespace detail

const char* event_kind_name(const Event& e) {
  return detail::kKindNames[e.index()];
}

bool is_essential(const Event& e) {
  return std::holds_alternative<UsageEvent>(e) || std::holds_alternative<FeedbackEvent>(e) ||
         std::holds_alternative<KeyStateEvent>(e) ||
         std::holds_alternative<BanditPosteriorEvent>(e) ||
         std::holds_alternative<ModelStatsEvent>(e) ||
         std::holds_alternative<ContextualModelEvent>(e) ||
         std::holds_alternative<LearnCompactEvent>(e) ||
         std::holds_alternative<StoredResponseEvent>(e);
}

}  // namespace switchboard::store
