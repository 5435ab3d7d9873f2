// Internal to the store module: the queue and writer thread of a store, apart from any database,
// so that another backend (PostgreSQL) reuses the batching and only supplies its statements.
//
// Queue design: two rings (essential, non-essential) behind one mutex. `enqueue` holds the lock
// for one move into a slot; the writer swaps both rings out whole under the lock (O(1)) and
// writes them without it, so producers never wait for the disk. Rings keep their slots across
// swaps, so a warmed-up queue allocates nothing. Memory is bounded: the non-essential rings hold at
// most `queue_capacity` slots, the essential ones at most kOverflowFactor times that.
//
// Thread-safety: BatchWriter's public members may be called from any thread (as the Store
// methods they implement); the BatchSink it drives is called only from the writer thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "common/clock.h"
#include "common/status.h"
#include "store/store.h"

namespace switchboard::store::detail {

inline constexpr size_t kEventKinds = std::variant_size_v<Event>;
// How long an essential event waits for queue space before it goes over the capacity, and how far
// over (a multiple of the capacity) before it is dropped after all.
inline constexpr std::chrono::microseconds kEssentialWait{200};
inline constexpr size_t kOverflowFactor = 4;

struct Entry {
  uint64_t seq;
  Event event;
};

// A contextual model's weight vector in a text column: its floats' bytes (little-endian, as every
// platform the project builds for) in hex; read back only when it has exactly `count` finite
// floats.
std::string floats_hex(const std::vector<float>& v);
bool floats_from_hex(std::string_view hex, size_t count, std::vector<float>& out);

// The length of the valid UTF-8 sequence (RFC 3629: no overlong forms, surrogates or code points
// past U+10FFFF) at the start of `s`, or 0 when there is none there or it is a NUL.
size_t utf8_sequence(std::string_view s);
// `s` with every byte that starts no such sequence (and every NUL) replaced by U+FFFD, as
// PostgreSQL's text wants; nullopt when `s` is valid already (nothing is copied then).
std::optional<std::string> utf8_repaired(std::string_view s);

// A FIFO ring of entries. Slots stay constructed (and keep their capacity) when entries leave,
// so a warmed-up ring never allocates; it grows by doubling up to the queue capacity. Dropping
// the oldest entry is O(1).
class Ring {
 public:
  size_t size() const { return count_; }
  Entry& at(size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }
  const Entry& at(size_t i) const { return slots_[(head_ + i) & (slots_.size() - 1)]; }

  void push(uint64_t seq, Event&& event) {
    if (count_ == slots_.size()) grow();
    Entry& e = at(count_);
    e.seq = seq;
    e.event = std::move(event);
    ++count_;
  }
  // Removes the oldest entry and returns its kind; its memory is released right away.
  size_t drop_oldest() {
    Entry& e = slots_[head_];
    const size_t kind = e.event.index();
    e.event = Event{};
    head_ = (head_ + 1) & (slots_.size() - 1);
    --count_;
    return kind;
  }
  // Empties the ring, releasing what the entries held (long strings) but keeping the slots.
  void clear() {
    for (size_t i = 0; i < count_; ++i) at(i).event = Event{};
    head_ = 0;
    count_ = 0;
  }

 private:
  void grow() {
    std::vector<Entry> bigger(slots_.empty() ? 256 : slots_.size() * 2);
    for (size_t i = 0; i < count_; ++i) bigger[i] = std::move(at(i));
    slots_ = std::move(bigger);
    head_ = 0;
  }

  std::vector<Entry> slots_;  // size is zero or a power of two
  size_t head_ = 0;
  size_t count_ = 0;
};

// The database side of a store, driven by the writer thread.
class BatchSink {
 public:
  virtual ~BatchSink() = default;
  // One transaction for the whole batch: `retry` first, then `essential`, then `normal`, each in
  // order. Returns ok or the first error (rolled back).
  virtual Status write_batch(const std::vector<Entry>& retry, const Ring& essential,
                             const Ring& normal) = 0;
  // Deletes one batch of expired rows; returns the number deleted (or -1 with `*error` set).
  virtual int64_t prune_batch(Status* error) = 0;
  // The writer thread is exiting: release statements, fold logs.
  virtual void finish() = 0;
};

struct StoreMetrics;

// The queue, the writer thread with group commit (every batch_ms or at batch_max events),
// dropped-event counting, retries of essential events, and pruning between batches.
class BatchWriter {
 public:
  BatchWriter(const StateConfig& state, const Clock& clock, Millis prune_interval, BatchSink& sink);
  ~BatchWriter() { stop(); }

  // Starts the writer thread; sequence numbers continue after `last_seq`.
  void start(uint64_t last_seq);
  // Stops the writer after it wrote (or gave up on) what is queued; idempotent. Not concurrently
  // with itself (Store::close serialises).
  void stop();

  // Takes the event by reference so that the Store method forwarding to it moves it once, as
  // before the split (the request path pays for each move of an event's strings).
  uint64_t enqueue(Event&& event);
  void enqueue_batch(std::span<Event> events);
  Status flush();
  uint64_t committed_seq() const { return committed_seq_.load(std::memory_order_acquire); }
  Status prune();
  StoreCounters counters() const;

 private:
  size_t queued() const { return essential_.size() + normal_.size(); }
  uint64_t enqueue_locked(std::unique_lock<std::mutex>& lock, Event&& event, bool& wake);
  void count_drop(size_t kind);
  template <typename F>
  void publish(F&& f);
  void record_failure(const Status& st, size_t events);
  void run();

  const Clock* clock_;
  const Millis prune_interval_;
  BatchSink& sink_;
  const size_t capacity_;
  const size_t batch_max_;
  const Millis batch_interval_;
  StoreMetrics& metrics_;

  mutable std::mutex mu_;
  std::condition_variable writer_cv_;  // wakes the writer
  std::condition_variable space_cv_;   // essential producers waiting (briefly) for queue space
  std::condition_variable done_cv_;    // flush()/prune() waiters
  Ring essential_;                     // guarded by mu_
  Ring normal_;                        // guarded by mu_
  uint64_t next_seq_ = 0;              // last assigned; guarded by mu_
  bool stopping_ = false;
  bool flush_requested_ = false;
  bool prune_requested_ = false;
  bool writer_exited_ = false;
  uint64_t failure_gen_ = 0;
  Status last_failure_;
  uint64_t prune_gen_ = 0;
  Status prune_status_;
  std::atomic<uint64_t> committed_seq_{0};

  uint64_t failures_logged_ = 0;  // writer thread only
  uint64_t enqueued_ = 0;         // guarded by mu_
  std::atomic<uint64_t> committed_{0}, dropped_{0}, write_errors_{0}, overflowed_{0};

  std::thread writer_;
};

// A Store whose writes go through a BatchWriter (every backend): the Store methods they forward
// alike, and close(), which stops the writer after it wrote what is queued and then lets the
// backend release its connection. A backend's destructor must call close() itself (its
// connection is gone by the time this base is destroyed).
class BatchedStore : public Store, protected BatchSink {
 public:
  BatchedStore(const StateConfig& state, const Clock& clock, Millis prune_interval)
      : writer_(state, clock, prune_interval, *this) {}

  uint64_t enqueue(Event event) override { return writer_.enqueue(std::move(event)); }
  void enqueue_batch(std::span<Event> events) override { writer_.enqueue_batch(events); }
  Status flush() override { return writer_.flush(); }
  uint64_t committed_seq() const override { return writer_.committed_seq(); }
  Status prune() override { return writer_.prune(); }
  StoreCounters counters() const override { return writer_.counters(); }
  void close() override {
    std::lock_guard close_lock(close_mu_);
    if (closed_) return;
    closed_ = true;
    writer_.stop();
    release_connection();
  }

 protected:
  // After the writer stopped (it finished its statements in BatchSink::finish).
  virtual void release_connection() = 0;
  BatchWriter writer_;

 private:
  std::mutex close_mu_;
  bool closed_ = false;
};

// std::visit over an event with one lambda per kind.
template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace switchboard::store::detail
