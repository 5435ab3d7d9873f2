// Learned routing state, in the one shape the router, the store and the admin API share.
//
// The router learns from records (an outcome of a model, or a caller's verdict on one); each
// record it applies gets an id from its journal (the store's sequence number, increasing across
// restarts) and each posterior and statistics row remembers the newest id it includes. That is
// what makes a restart exact: a snapshot of the rows plus the journal's later records, each
// applied only to rows older than it, gives back the state the journal acknowledged, never a
// record twice. Plain values; thread-safe as values are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace switchboard {

// Slots of the contextual router's hashed feature space (routing/features.h): the length of each
// persisted weight vector.
inline constexpr size_t kContextualDim = 2048;

// Thompson-sampling posterior Beta(alpha, beta) of one (category, model).
struct Posterior {
  std::string category;
  std::string model;
  double alpha = 1;
  double beta = 1;
  uint64_t outcomes = 0;
  uint64_t last_outcome_id = 0;    // the newest learning record (outcome or verdict) included
  uint64_t feedback = 0;           // caller verdicts received (POST /v1/feedback)
  double feedback_reward_sum = 0;  // their rewards, summed
  double mean() const { return alpha / (alpha + beta); }
};

// Running statistics of one model.
struct ModelStats {
  std::string model;
  uint64_t requests = 0;
  uint64_t successes = 0;
  double latency_ewma_us = 0;
  double latency_p95_us = 0;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double spend_usd = 0;
  uint64_t last_outcome_id = 0;  // the newest learning record included
  // A running median estimate like the p95's; not persisted (a restart starts it from the EWMA).
  double latency_p50_us = 0;
  double success_rate() const { return requests ? double(successes) / double(requests) : 0.0; }
};

// One thing the router learned from, as its journal records it.
struct LearnRecord {
  // The peer kinds are another gateway's records, shared through the cluster: they teach the
  // posteriors like their own kind but not this gateway's statistics (latency, spend and request
  // counts stay each gateway's own), and are never shared again.
  enum class Kind : uint8_t { kOutcome = 0, kFeedback = 1, kPeerOutcome = 2, kPeerFeedback = 3 };
  Kind kind = Kind::kOutcome;
  std::string category;  // "" = default
  std::string model;
  double reward = 0;            // outcome: its reward; verdict: the caller's reward
  double transport_reward = 0;  // verdict: the outcome's reward the verdict replaces
  bool counts_for_learning = true;
  bool success = false;
  int64_t latency_us = 0;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double cost_usd = 0;
  // The contextual router's part (routing/contextual.h): the route the request named and its
  // features (FeatureVector::encode); empty when the request had none.
  std::string route;
  std::string features;
};

}  // namespace switchboard
