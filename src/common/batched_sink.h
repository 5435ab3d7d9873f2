// BatchedSink: log lines written to a file descriptor in batches, never one write per line.
//
// A line is formatted on the calling thread into that thread's shard buffer (shards by
// this_thread_slot(), each with its own mutex and formatter, so threads do not contend), and a
// flusher thread writes every shard's buffer with one writev every `interval`. The request path
// therefore makes no system call and wakes no thread to log (the access log of every request goes
// through here). Lines at warn or above are written at once, with the lines buffered before them
// on that shard, so an error is never held back; a shard past `max_shard_bytes` is written by the
// thread that filled it (memory stays bounded; lines are never dropped).
//
// Order: a thread's lines keep their order; lines of different threads are ordered within a batch
// by shard, not by time. A kill -9 loses at most one interval of info lines (outcomes are in the
// store, not only in the log).
//
// Thread-safety: log/flush/set_formatter from any thread. The destructor flushes and joins the
// flusher.
#pragma once

#include <spdlog/sinks/sink.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>

namespace switchboard::log {

class BatchedSink final : public spdlog::sinks::sink {
 public:
  static constexpr size_t kShards = 16;

  BatchedSink(int fd, std::chrono::milliseconds interval, size_t max_shard_bytes = 1 << 20);
  ~BatchedSink() override;
  BatchedSink(const BatchedSink&) = delete;
  BatchedSink& operator=(const BatchedSink&) = delete;

  void log(const spdlog::details::log_msg& msg) override;
  // A line formatted by the caller (with its newline), buffered like the others: the access log's
  // path, which formats its record once, straight into the line.
  void append(std::string_view line);
  void flush() override;
  void set_pattern(const std::string& pattern) override;
  void set_formatter(std::unique_ptr<spdlog::formatter> formatter) override;

  uint64_t writes() const;  // write system calls made so far (for tests and the benchmark)

 private:
  struct Shard {
    std::mutex mu;
    std::unique_ptr<spdlog::formatter> formatter;  // guarded by mu
    spdlog::memory_buf_t buf;                      // guarded by mu
  };
  const int fd_;
  const std::chrono::milliseconds interval_;
  const size_t max_shard_bytes_;
  std::array<Shard, kShards> shards_;
  std::mutex write_mu_;  // one writer at a time on the descriptor, so lines never interleave
  std::array<spdlog::memory_buf_t, kShards> out_;  // guarded by write_mu_
  std::atomic<uint64_t> writes_{0};

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;  // guarded by stop_mu_
  std::thread flusher_;
};

}  // namespace switchboard::log
