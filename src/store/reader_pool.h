// Internal to the store module: a few read connections kept open between calls, each with its
// statements prepared, for the point reads that callers make at run time (Store::find_response).
// Opening a connection per read would cost far more than the read (a file open and schema parse
// for SQLite, a TCP and authentication round trip for PostgreSQL).
//
// Thread-safety: `with` may be called from any thread, concurrently; each call has a reader to
// itself while it runs (a reader is never shared). `close` waits for the calls in progress.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "common/status.h"

namespace switchboard::store::detail {

template <class Reader>
class ReaderPool {
 public:
  // At most `max_idle` readers are kept between calls; more concurrent calls open extra ones,
  // closed when they are done.
  explicit ReaderPool(size_t max_idle) : max_idle_(max_idle) {}
  ~ReaderPool() { close(); }
  ReaderPool(const ReaderPool&) = delete;
  ReaderPool& operator=(const ReaderPool&) = delete;

  // Runs `use(Reader&)` (returning a Result<T>) on an idle reader, or on a new one from
  // `make()` (returning Result<std::unique_ptr<Reader>>). A reader whose call failed is closed;
  // when it had been idle in the pool (its connection may have broken meanwhile: a restarted
  // server), the call is tried once more on a new one. Unavailable once closed.
  template <class Make, class Use>
  auto with(Make&& make, Use&& use) -> decltype(use(std::declval<Reader&>())) {
    std::unique_ptr<Reader> reader;
    {
      std::lock_guard lock(mu_);
      if (closed_) return Status::unavailable("store closed");
      ++busy_;
      if (!idle_.empty()) {
        reader = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    const bool reused = reader != nullptr;
    auto result = run(reader, make, use);
    if (!result.ok() && reused) {
      reader.reset();
      result = run(reader, make, use);
    }
    if (!result.ok()) reader.reset();
    std::unique_ptr<Reader> surplus;
    {
      std::lock_guard lock(mu_);
      if (reader && !closed_ && idle_.size() < max_idle_) {
        idle_.push_back(std::move(reader));
      } else {
        surplus = std::move(reader);  // closed outside the lock
      }
      --busy_;
    }
    surplus.reset();
    done_cv_.notify_all();
    return result;
  }

  // Refuses further calls, waits for those in progress and closes every reader. Idempotent.
  void close() {
    std::vector<std::unique_ptr<Reader>> idle;
    {
      std::unique_lock lock(mu_);
      closed_ = true;
      done_cv_.wait(lock, [&] { return busy_ == 0; });
      idle.swap(idle_);
    }
  }

 private:
  template <class Make, class Use>
  static auto run(std::unique_ptr<Reader>& reader, Make& make, Use& use)
      -> decltype(use(std::declval<Reader&>())) {
    if (!reader) {
      auto made = make();
      if (!made.ok()) return made.status();
      reader = std::move(*made);
    }
    return use(*reader);
  }

  const size_t max_idle_;
  std::mutex mu_;
  std::condition_variable done_cv_;
  std::vector<std::unique_ptr<Reader>> idle_;  // guarded by mu_
  size_t busy_ = 0;                            // calls in progress; guarded by mu_
  bool closed_ = false;                        // guarded by mu_
};

}  // namespace switchboard::store::detail
