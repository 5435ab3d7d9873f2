// SharedLearning: the learned routing posteriors merged across the gateways of a cluster
// (internal to the gateway module). Every record this gateway's router learns from (an outcome
// that teaches, a caller's verdict) is batched and published on the cluster's learning channel
// every `interval`; the other gateways' batches are applied to this router as peer records
// (Router::learn_from_peer: the posterior only, journaled, never shared again). The posteriors of
// all gateways so follow the same evidence within about an interval plus a Redis round trip;
// what is published while a gateway cannot hear it is not replayed to it (bounded staleness).
//
// Thread-safety: offer() and receive() from any thread (each only appends under a short lock; the
// router calls offer() with its own lock held); this object's thread applies and publishes;
// start/stop from one controlling thread.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "common/learned.h"

namespace switchboard::gateway {

struct Runtime;

class SharedLearning {
 public:
  // Records waiting past this are dropped (Redis unreachable for long, a flood): counted.
  static constexpr size_t kMaxPending = 65536;
  // A batch from a peer holds at most this many records; the rest is ignored.
  static constexpr size_t kMaxBatchRecords = 65536;
  // Peer batches waiting to be applied; more are dropped (counted).
  static constexpr size_t kMaxInbox = 64;

  SharedLearning(Runtime& rt, Millis interval) : rt_(rt), interval_(interval) {}
  ~SharedLearning() { stop(); }
  SharedLearning(const SharedLearning&) = delete;
  SharedLearning& operator=(const SharedLearning&) = delete;

  void start();
  // Publishes what is pending, then stops the thread. Before the cluster stops.
  void stop();

  // A record this gateway's router applied (peer records are ignored: never shared again).
  void offer(const LearnRecord& record);
  // Another gateway's batch: queued, and applied to the current router on this object's thread.
  void receive(std::string_view batch);

  // The batch encoding: a line per record, tab-separated: kind (0 outcome, 1 verdict), reward,
  // transport reward, category, model. Categories and model names hold no tab or newline (the
  // gateway checks the hints it accepts; decode skips lines that do not parse).
  static std::string encode(const std::vector<LearnRecord>& records);
  static std::vector<LearnRecord> decode(std::string_view batch);

 private:
  void publish_pending();
  void apply(std::string_view batch);

  Runtime& rt_;
  const Millis interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<LearnRecord> pending_;
  std::vector<std::string> inbox_;  // peers' batches to apply
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace switchboard::gateway
