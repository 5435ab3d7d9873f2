#include "common/batched_sink.h"

#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>

#include "common/thread_slot.h"

namespace switchboard::log {

BatchedSink::BatchedSink(int fd, std::chrono::milliseconds interval, size_t max_shard_bytes)
    : fd_(fd), interval_(interval), max_shard_bytes_(max_shard_bytes) {
  for (auto& s : shards_) s.formatter = std::make_unique<spdlog::pattern_formatter>();
  flusher_ = std::thread([this] {
    std::unique_lock lock(stop_mu_);
    while (!stop_cv_.wait_for(lock, interval_, [this] { return stopping_; })) {
      lock.unlock();
      flush();
      lock.lock();
    }
  });
}

BatchedSink::~BatchedSink() {
  {
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  flusher_.join();
  flush();
}

void BatchedSink::log(const spdlog::details::log_msg& msg) {
  Shard& s = shards_[this_thread_slot() % kShards];
  bool now;
  {
    std::lock_guard lock(s.mu);
    s.formatter->format(msg, s.buf);
    now = msg.level >= spdlog::level::warn || s.buf.size() >= max_shard_bytes_;
  }
  // Every shard, not only this one: simpler, and a warn is rare. The lines buffered before it on
  // its shard go out first, in the same writev.
  if (now) flush();
}

void BatchedSink::append(std::string_view line) {
  Shard& s = shards_[this_thread_slot() % kShards];
  bool now;
  {
    std::lock_guard lock(s.mu);
    s.buf.append(line.data(), line.data() + line.size());
    now = s.buf.size() >= max_shard_bytes_;
  }
  if (now) flush();
}

void BatchedSink::flush() {
  std::lock_guard w(write_mu_);
  std::array<iovec, kShards> iov;
  size_t count = 0;
  for (size_t i = 0; i < kShards; ++i) {
    {
      // Swapped, not copied: the shard gets back the (empty) buffer of the last batch, so
      // capacities are reused and no line is formatted twice.
      std::lock_guard lock(shards_[i].mu);
      if (shards_[i].buf.size() == 0) continue;
      std::swap(shards_[i].buf, out_[i]);
    }
    iov[count++] = iovec{out_[i].data(), out_[i].size()};
  }
  // One writev for the whole batch; a partial write continues where it stopped.
  size_t first = 0;
  while (first < count) {
    ssize_t n = ::writev(fd_, iov.data() + first, static_cast<int>(count - first));
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // nowhere to report a failing log descriptor; the batch is lost
    }
    writes_.fetch_add(1, std::memory_order_relaxed);
    size_t left = static_cast<size_t>(n);
    while (first < count && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < count) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  for (auto& b : out_) b.clear();
}

void BatchedSink::set_pattern(const std::string& pattern) {
  set_formatter(std::make_unique<spdlog::pattern_formatter>(pattern));
}

void BatchedSink::set_formatter(std::unique_ptr<spdlog::formatter> formatter) {
  for (auto& s : shards_) {
    std::lock_guard lock(s.mu);
    s.formatter = formatter->clone();
  }
}

uint64_t BatchedSink::writes() const {
  return writes_.load(std::memory_order_relaxed);
}

}  // namespace switchboard::log
