// SharedLearning (shared_learning.h): learning records to and from the cluster's other gateways.
#include "gateway/shared_learning.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "common/metrics.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

namespace {
// switchboard_cluster_learning_records_total{direction}: sent, received, dropped.
prometheus::Counter& records_counter(const char* direction) {
  return metrics::counter_family("switchboard_cluster_learning_records_total",
                                 "Learned-routing records shared with the other gateways")
      .Add({{"direction", direction}});
}

bool parse_reward(std::string_view s, double& out) {
  // std::from_chars for double is in GCC 12's libstdc++.
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size() && std::isfinite(out) && out >= 0 &&
         out <= 1;
}
}  // namespace

void SharedLearning::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    auto next_publish = MonoClock::now() + interval_;
    while (!stopping_) {
      cv_.wait_until(lock, next_publish, [this] { return stopping_ || !inbox_.empty(); });
      std::vector<std::string> batches;
      batches.swap(inbox_);
      lock.unlock();
      for (const auto& b : batches) apply(b);
      if (MonoClock::now() >= next_publish) {
        publish_pending();
        next_publish = MonoClock::now() + interval_;
      }
      lock.lock();
    }
  });
}

void SharedLearning::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  publish_pending();
}

void SharedLearning::offer(const LearnRecord& record) {
  static prometheus::Counter& dropped = records_counter("dropped");
  if (record.kind == LearnRecord::Kind::kOutcome && !record.counts_for_learning) return;
  if (record.kind != LearnRecord::Kind::kOutcome && record.kind != LearnRecord::Kind::kFeedback)
    return;
  std::lock_guard lock(mu_);
  if (pending_.size() >= kMaxPending) {
    dropped.Increment();
    return;
  }
  pending_.push_back(record);
}

void SharedLearning::publish_pending() {
  static prometheus::Counter& sent = records_counter("sent");
  std::vector<LearnRecord> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
  }
  if (batch.empty() || !rt_.cluster) return;
  sent.Increment(double(batch.size()));
  rt_.cluster->publish_learning(encode(batch));
}

void SharedLearning::receive(std::string_view batch) {
  static prometheus::Counter& dropped = records_counter("dropped");
  {
    // Applied on this object's thread, not the subscriber's (a request thread): a large batch
    // never stalls requests. Bounded: past kMaxInbox waiting batches, new ones are dropped.
    std::lock_guard lock(mu_);
    if (!stopping_ && inbox_.size() < kMaxInbox) {
      inbox_.emplace_back(batch);
      cv_.notify_one();
      return;
    }
  }
  dropped.Increment();
}

void SharedLearning::apply(std::string_view batch) {
  static prometheus::Counter& received = records_counter("received");
  auto records = decode(batch);
  if (records.empty()) return;
  auto snap = rt_.snapshot();
  for (auto& r : records) snap->router->learn_from_peer(std::move(r));
  received.Increment(double(records.size()));
}

std::string SharedLearning::encode(const std::vector<LearnRecord>& records) {
  std::string out;
  out.reserve(records.size() * 48);
  char num[64];
  for (const auto& r : records) {
    out += r.kind == LearnRecord::Kind::kFeedback ? "1\t" : "0\t";
    std::snprintf(num, sizeof(num), "%.9g\t%.9g\t", r.reward, r.transport_reward);
    out += num;
    out += r.category;
    out += '\t';
    out += r.model;
    out += '\n';
  }
  return out;
}

std::vector<LearnRecord> SharedLearning::decode(std::string_view batch) {
  std::vector<LearnRecord> out;
  while (!batch.empty() && out.size() < kMaxBatchRecords) {
    const size_t eol = batch.find('\n');
    std::string_view line = batch.substr(0, eol);
    batch.remove_prefix(eol == std::string_view::npos ? batch.size() : eol + 1);
    std::string_view f[5];
    size_t n = 0;
    while (n < 5) {
      const size_t tab = line.find('\t');
      if (n == 4 || tab == std::string_view::npos) {
        f[n++] = line;
        break;
      }
      f[n++] = line.substr(0, tab);
      line.remove_prefix(tab + 1);
    }
    if (n != 5 || (f[0] != "0" && f[0] != "1") || f[4].empty() ||
        f[4].find('\t') != std::string_view::npos)
      continue;
    LearnRecord r;
    r.kind = f[0] == "1" ? LearnRecord::Kind::kFeedback : LearnRecord::Kind::kOutcome;
    if (!parse_reward(f[1], r.reward) || !parse_reward(f[2], r.transport_reward)) continue;
    r.counts_for_learning = true;
    r.category.assign(f[3]);
    r.model.assign(f[4]);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace switchboard::gateway
