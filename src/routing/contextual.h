// ContextualModel: P(success | request features) of one model on one route, for the learned
// strategy when the request carries no category hint (routing.h).
//
// A Bayesian probit regression over the hashed feature space (features.h) with a diagonal
// Gaussian posterior on the weights, learned online by assumed-density filtering (each update
// is exact for one observation, then projected back onto a diagonal Gaussian):
//   z = wᵀx, P(success) = Φ(z), w ~ N(μ, diag σ²).
// Planning draws a Thompson sample of z ~ N(μᵀx, Σ xᵢ²σᵢ²) (exact for a diagonal posterior: one
// normal draw per model, whatever the number of features) and compares Φ(z) across models.
// An observation has a strength: transport outcomes teach with `transport_weight`, a caller's
// verdict with `feedback_weight` (above it) and replaces the transport evidence of its request.
// Decay: every update first lets each touched weight's variance grow by `drift` (a random walk,
// capped at the prior's), so evidence ages and a model that degrades on a kind of task loses it
// within a few hundred requests of that kind.
//
// Memory: 2 floats per slot (kDim slots) and model, allocated once. Thread-safety: none for a
// ContextualModel; ContextualBook locks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "routing/features.h"

namespace switchboard::routing {

class Rng;

// Tuned on the acceptance workload (tests/routing/contextual_test.cpp): a tighter prior and
// samples at 0.4 of the posterior's spread keep the cost-aware choice from chasing optimistic
// draws of cheap models on hard tasks; the drift still lets a degraded model lose a kind of task
// within ~100 requests of it.
struct ContextualParams {
  double prior_variance = 0.3;
  double noise = 1.0;  // the probit's β: a strength-1 observation's noise
  double drift = 0.001;
  double transport_weight = 0.3;
  double feedback_weight = 1.0;
  // Thompson samples are drawn with the posterior's spread scaled by this (< 1 explores less).
  double sample_scale = 0.4;
};

class ContextualModel {
 public:
  explicit ContextualModel(const ContextualParams& params = {});

  struct Score {
    double mean = 0;      // μᵀx
    double variance = 0;  // Σ xᵢ² σᵢ²
  };
  Score score(const FeatureVector& x) const;
  // The posterior predictive P(success) = Φ(μᵀx / sqrt(β² + Σ xᵢ²σᵢ²)).
  double mean_probability(const FeatureVector& x) const;
  // A Thompson sample of P(success).
  double sample_probability(const FeatureVector& x, Rng& rng) const;

  // One observation: success (true) or not, with `strength` (> 0; 1 = one plain observation).
  void update(const FeatureVector& x, bool success, double strength);
  // A transport outcome (reward in [0, 1]).
  void learn_outcome(const FeatureVector& x, double reward);
  // The caller's verdict `feedback` on a request whose transport reward `transport` was learned:
  // one update that swaps that evidence for the verdict's.
  void learn_feedback(const FeatureVector& x, double transport, double feedback);

  uint64_t updates() const { return updates_; }
  std::vector<float> means() const;
  std::vector<float> variances() const;
  // Restores a persisted state; false (and nothing changed) when the sizes do not match kDim or
  // a value is not finite (or a variance not positive).
  bool restore(const std::vector<float>& means, const std::vector<float>& variances,
               uint64_t updates);

  // The weights as the book stores them: (mean, variance) pairs at a stride. Public for
  // ContextualBook, which keeps a route's models slot-major (every model's weights of one
  // feature side by side: one pass over a request's features scores all its candidates).
  struct View {
    float* data;        // the mean of slot 0
    size_t stride;      // floats from one slot's mean to the next
    size_t var_offset;  // floats from a slot's mean to its variance
    float& mean(uint16_t slot) const { return data[size_t(slot) * stride]; }
    float& var(uint16_t slot) const { return data[size_t(slot) * stride + var_offset]; }
  };
  static Score score(View w, const FeatureVector& x);
  static void update(View w, const ContextualParams& p, const FeatureVector& x, bool success,
                     double strength);
  // The strength and direction of the lessons above.
  static std::pair<bool, double> outcome_lesson(const ContextualParams& p, double reward);
  static std::pair<bool, double> feedback_lesson(const ContextualParams& p, double transport,
                                                 double feedback);
  static bool valid(const std::vector<float>& means, const std::vector<float>& variances);

 private:
  View view() const { return View{const_cast<float*>(w_.data()), 2, 1}; }
  ContextualParams p_;
  std::vector<float> w_;  // (mean, variance) per slot
  uint64_t updates_ = 0;
};

// The contextual models of every learned route: one ContextualModel per (route, model of the
// route). Routes are fixed at construction (a configuration's), models allocated on first use.
// Thread-safety: every method may be called from any thread (one mutex per route).
class ContextualBook {
 public:
  struct RouteModels;
  // A route uses its models once they learned from this many observations together.
  static constexpr uint64_t kWarmupPerModel = 30;
  // Routes with more models than this plan with their category posteriors.
  static constexpr size_t kMaxScored = 64;

  ContextualBook(const std::vector<std::pair<std::string, std::vector<int>>>& routes,
                 const ContextualParams& params);
  ~ContextualBook();

  // For planning `route`: every model of the route (catalog indexes into `models`) gets a
  // Thompson sample of its success and its predictive mean, in one pass over the features.
  // Returns how many (0 when the route has no contextual models, more than kMaxScored models,
  // or is not warm yet: then the caller keeps the category posteriors).
  size_t score_all(std::string_view route, const FeatureVector& x, Rng& rng, int* models,
                   double* samples, double* means) const;
  // Learning: `id` is the journal's id of the record (0 = none); a model skips a record whose id
  // is not newer than the newest it included (a replay after a restart).
  void learn_outcome(std::string_view route, int model, const FeatureVector& x, double reward,
                     uint64_t id = 0);
  void learn_feedback(std::string_view route, int model, const FeatureVector& x, double transport,
                      double feedback, uint64_t id = 0);

  struct Snapshot {
    std::string route;
    int model = 0;           // catalog index (the book's view)
    std::string model_name;  // the same by name (the Router's and the store's view)
    std::vector<float> means, variances;
    uint64_t updates = 0;
    uint64_t last_id = 0;  // the newest journal record included
  };
  std::vector<Snapshot> export_state() const;
  // Models whose route or model is unknown here are ignored.
  void import_state(const std::vector<Snapshot>& state);

  // The features that move `model`'s score the most on `route` for `x`: (slot, xᵢ·μᵢ), largest
  // magnitude first, at most `k`.
  std::vector<std::pair<uint16_t, double>> contributions(std::string_view route, int model,
                                                         const FeatureVector& x, size_t k) const;
  // The slots with the largest |μ| of `model` on `route`.
  std::vector<std::pair<uint16_t, double>> strongest(std::string_view route, int model,
                                                     size_t k) const;
  uint64_t updates(std::string_view route, int model) const;
  // Whether `route` has contextual models (a learned route of the configuration).
  bool has_route(std::string_view route) const { return find(route) != nullptr; }

 private:
  RouteModels* find(std::string_view route) const;
  // (slot, xᵢ·μᵢ) for each feature of `x`, or (slot, μ) for every weight that moved (x null).
  std::vector<std::pair<uint16_t, double>> weights_of(std::string_view route, int model,
                                                      const FeatureVector* x) const;
  void learn(std::string_view route, int model, const FeatureVector& x,
             std::pair<bool, double> lesson, uint64_t id);
  ContextualParams params_;
  std::vector<std::pair<std::string, std::unique_ptr<RouteModels>>> routes_;
};

// Φ, the standard normal distribution function.
double normal_cdf(double z);

}  // namespace switchboard::routing
