// Routing: which model (and provider) a request tries, in which order, and learning from outcomes.
//
// A `Router` is built from a Config. `plan()` turns a request's model name (a route, a model, or
// `provider/upstream-name`) and its hints into a `FallbackPlan`: an immutable list of attempts,
// layer by layer, owned by that one request (DESIGN.md invariant 4: no other request can move it).
// `record()` feeds outcomes back into a Thompson-sampling bandit and per-model statistics.
//
// Candidate rules (every strategy):
//   - a model whose context window < estimated prompt tokens + max_tokens is never a candidate;
//   - a model lacking any of `required_strengths` is never a candidate;
//   - a model whose estimated cost exceeds `max_cost_usd` is never a candidate;
//   - a target whose breaker is open is moved to the end of the plan (tried only if all else
//   fails);
//   - a target whose provider's quota is critical (quota/quota.h) moves behind the other
//   candidates of its layer; one whose quota is exhausted goes to the end of the plan, and the
//   gateway skips it while the quota stays exhausted.
//
// Strategies order the models inside each layer:
//   ordered   as written;
//   weighted  random order, drawn without replacement in proportion to each model's `weight`;
//   cheapest  by estimated cost (prompt × input price + max_tokens × output price), cheapest first;
//   learned   by a Thompson-sampling score. For each candidate m in category c:
//               score(m) = w_success · θ(c,m) + w_tier · tier(m) + w_cost · cost(m)
//                          + w_latency · latency(m)
//             θ(c,m) ~ Beta(α(c,m), β(c,m)) is a sample of the success posterior; tier(m) is 1
//             when m's tier is the hinted complexity's first preferred tier, 0.5 for a later
//             preferred tier, 0 otherwise, and 0 for all when the request gives no complexity;
//             cost(m) = 1 − ln(cost/min cost) / ln(max cost/min cost) over the layer's candidates
//             (log scale: prices differ by orders of magnitude); latency(m) = 1 − EWMA latency /
//             max EWMA latency among them (0.5 when unknown). Candidates whose θ is within
//             `quality_tolerance` of the layer's best posterior mean are "good enough" and lead,
//             cheapest first (ties by score), so the route settles on the cheapest model whose
//             success is close to the best; the others follow by score. With probability `explore`
//             the layer is shuffled instead. With an explicit complexity hint, layers holding a
//             model of a preferred tier are moved ahead of the others (stably).
// Posterior decay: each outcome for (c,m) first pulls α and β toward the prior by
// γ = 2^(−1/half_life), then adds the reward r ∈ [0,1] to α and 1 − r to β. Old evidence so halves
// every `half_life` outcomes of that pair, which bounds how long a degraded model keeps its lead.
//
// Thread-safety: `plan` and `record` may be called concurrently from any thread. Posteriors and
// statistics sit behind one short mutex each (a few field updates); sampling happens outside it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/config.h"
#include "common/learned.h"
#include "common/status.h"
#include "quota/quota.h"
#include "routing/contextual.h"
#include "routing/features.h"

namespace switchboard::routing {

// xoshiro256** seeded through splitmix64: fast, small, good enough for sampling.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0x9e3779b97f4a7c15ULL);
  uint64_t next();
  double uniform();  // [0, 1)
  double normal();   // standard normal
  double gamma(double shape);
  double beta(double a, double b);
  // The calling thread's generator. Seeded from `set_thread_seed` or the process start time.
  static Rng& for_this_thread();
  static void set_thread_seed(uint64_t seed);

 private:
  uint64_t s_[4];
  bool have_spare_ = false;
  double spare_ = 0;
};

struct RequestInfo {
  std::string model;                     // route name, model name, or provider/upstream-name
  std::optional<Complexity> complexity;  // x-switchboard-complexity
  std::string category;                  // x-switchboard-category ("" = "default")
  int64_t prompt_tokens = 0;             // estimated
  int64_t max_tokens = 0;                // the request's max_tokens (0 = not given)
  std::optional<double> max_cost_usd;    // x-switchboard-max-cost-usd
  std::vector<std::string> required_strengths;
  // What the request looks like (features.h); empty = unknown. Without a category hint, a learned
  // route plans with its contextual models on these once they are warm (contextual.h).
  FeatureVector features;
};

struct ScoreParts {
  double sample = 0;  // Thompson sample θ
  double tier = 0;
  double cost = 0;
  double latency = 0;
  double total = 0;
  bool contextual = false;  // `sample` came from the contextual model, not a category posterior
};

// Why an attempt stands where it does (rendered for humans by FallbackPlan::to_json).
enum class Placement {
  kAsWritten,
  kCheapest,
  kWeightedDraw,
  kWithinTolerance,
  kOutsideTolerance,
  kExplored,
  kBreakerOpen,
  kQuotaCritical,
  kQuotaExhausted,
  kDirect
};

struct Attempt {
  // Views into the plan's configuration (kept alive by the plan) or the plan's own storage.
  std::string_view model;  // catalog name (or provider/upstream for direct requests)
  std::string_view provider;
  std::string_view upstream;  // name sent upstream
  int layer = 0;              // 0-based layer of the route
  // The position of its layer in this plan's order of layers (0 = the layer tried first; the
  // complexity hint can reorder layers). A target moved to the end for an open breaker keeps
  // its layer's rank, so the layer after a skipped one answers with rank 1 (DESIGN.md
  // x-switchboard-layer: "a layer skipped for an open breaker counts").
  int rank = 0;
  double estimated_cost_usd = 0;
  bool breaker_open = false;  // placed last because its breaker was open at planning time
  // The standing of its provider's quota at planning time (critical: behind its layer's others;
  // exhausted: placed last).
  quota::Level quota = quota::Level::kHealthy;
  Placement placement = Placement::kAsWritten;
  ScoreParts score;
  std::string reason() const;  // why it is at this position, for humans
};

// One request's plan. Immutable after planning; iterate it with an index held by the request.
class FallbackPlan {
 public:
  FallbackPlan() = default;
  FallbackPlan(std::shared_ptr<const Config> config, std::string route, std::string category,
               std::string_view strategy, std::vector<Attempt> attempts)
      : config_(std::move(config)),
        route_(std::move(route)),
        category_(std::move(category)),
        strategy_(strategy),
        attempts_(std::move(attempts)) {}
  // A plan for a model outside the catalog: owns the names its single attempt points to.
  static FallbackPlan direct(std::shared_ptr<const Config> config, std::string route,
                             std::string category, std::string provider, std::string upstream,
                             bool breaker_open);

  const std::vector<Attempt>& attempts() const { return attempts_; }
  size_t size() const { return attempts_.size(); }
  bool empty() const { return attempts_.empty(); }
  const Attempt& operator[](size_t i) const { return attempts_[i]; }
  const std::string& route() const { return route_; }
  const std::string& category() const { return category_; }
  std::string to_json() const;

 private:
  struct Owned {
    std::string model, provider, upstream;
  };
  std::shared_ptr<const Config> config_;  // keeps the attempts' names alive across reloads
  std::shared_ptr<const Owned> owned_;
  std::string route_;
  std::string category_;
  std::string_view strategy_;
  std::vector<Attempt> attempts_;
};

// True when the breaker of (provider, model) or of the provider is open now.
using BreakerProbe = std::function<bool(std::string_view provider, std::string_view model)>;
// The standing of the provider's quota now.
using QuotaProbe = std::function<quota::Level(std::string_view provider)>;

struct Outcome {
  uint64_t id = 0;  // store id of the outcome; 0 = not persisted (never deduplicated)
  std::string model;
  std::string category;
  double reward = 0;                // 1 success, 0 failure; in between for graded feedback
  bool counts_for_learning = true;  // false for client errors and cancellations
  bool success = false;
  int64_t latency_us = 0;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double cost_usd = 0;
  // The route the request named ("" for a model) and its features: the contextual model of
  // (route, model) learns from them.
  std::string route;
  FeatureVector features;
};

// The learned state's shape is common's (common/learned.h), shared with the store.
using switchboard::LearnRecord;
using switchboard::ModelStats;
using switchboard::Posterior;

struct RouterState {
  std::vector<Posterior> posteriors;
  std::vector<ModelStats> stats;
  // The newest journal id applied when the state was taken: every record up to it is in the
  // rows above (taken under the same lock as the journal), so a snapshot may forget them.
  uint64_t learned_through = 0;
  std::vector<ContextualBook::Snapshot> contextual;
};

class Router {
 public:
  // Distinct categories are bounded; beyond this, new ones share the posterior "other".
  static constexpr size_t kMaxCategories = 1024;
  // A category is a client's hint, bounded by the gateway (x-switchboard-category).
  static constexpr size_t kMaxCategoryBytes = 64;

  Router(std::shared_ptr<const Config> config, BreakerProbe breaker_open = nullptr,
         QuotaProbe quota = nullptr);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  // NotFound when the model/route is unknown; FailedPrecondition when every model was excluded
  // by the candidate rules (message says which rule excluded which model).
  Result<FallbackPlan> plan(const RequestInfo& request) const;
  Result<FallbackPlan> plan(const RequestInfo& request, Rng& rng) const;

  // Where the router writes down what it learns, called with the router's lock held so that the
  // ids it hands out follow the order the records are applied in: returns the record's id
  // (increasing; 0 = not kept). Set before the router takes traffic.
  using Journal = std::function<uint64_t(const LearnRecord&)>;
  void set_journal(Journal journal);

  // Learns from one outcome (journaled). With no journal, an outcome whose id is <= the pair's
  // last included id is ignored.
  void record(const Outcome& outcome);

  // The caller's verdict on a request already recorded with `transport_reward`: the verdict
  // replaces that evidence (α += f − t, β += t − f), so the request still counts once and the
  // caller's judgement, which knows whether the answer was right, outweighs transport success.
  // Journaled.
  // `route` and `features` (the request's, when it had them) teach the contextual model too.
  void record_feedback(std::string_view category, std::string_view model, double transport_reward,
                       double feedback_reward, std::string_view route = {},
                       const FeatureVector* features = nullptr);

  // Learns from another gateway's record (its outcome or verdict, shared through the cluster):
  // the posterior only, journaled as a peer kind. Ignored for a model outside this catalog or a
  // category longer than kMaxCategoryBytes.
  void learn_from_peer(LearnRecord record);

  // Applies a journaled record again after a restart (not journaled): only to the rows whose
  // newest included id is older than `id`, so replaying a record a snapshot holds changes nothing.
  void replay(const LearnRecord& record, uint64_t id);

  RouterState export_state() const;
  void import_state(const RouterState& state);
  // A restart: `snapshot` (stored rows), then the journal's later records (oldest first) replayed
  // onto it. Gives back exactly the state the journal had acknowledged.
  void restore(const RouterState& snapshot,
               const std::vector<std::pair<uint64_t, LearnRecord>>& journal);
  std::optional<Posterior> posterior(std::string_view category, std::string_view model) const;
  std::optional<ModelStats> stats(std::string_view model) const;
  // The learned routes' contextual models (for explanations and the admin view).
  const ContextualBook& contextual() const;

  const Config& config() const { return *config_; }

 private:
  struct Impl;
  std::shared_ptr<const Config> config_;
  std::unique_ptr<Impl> impl_;
};

// Which model served which request, for the caller's later verdict (POST /v1/feedback).
//
// Request ids are sequence numbers handed out by the gateway, so the ledger is a ring indexed by
// sequence: memory is fixed at `capacity` small entries however long the process runs, an entry
// is forgotten when its slot is reused or after `ttl`, and lookups are O(1). Models and categories
// are interned (categories bounded like the router's). A request takes one verdict: the second
// claim reports kDuplicate.
//
// Thread-safety: all methods may be called from any thread (the ring is sharded by sequence, one
// short mutex per shard).
class FeedbackLedger {
 public:
  FeedbackLedger(size_t capacity, Millis ttl, Clock& clock);
  ~FeedbackLedger();

  // Who may claim a request's verdict: the nonce of its unguessable id and its client's tag.
  // A claim with another nonce or owner is answered as for an unknown id.
  struct Ticket {  // `{}`: no nonce, no owner
    uint64_t nonce;
    uint64_t owner;
  };

  // `route` and `features`: the request's, for the contextual model's lesson from the verdict
  // (kept encoded, ~4 bytes a feature, while the entry lives).
  void remember(uint64_t seq, std::string_view model, std::string_view category, int layer,
                double transport_reward, bool learned, Ticket ticket = {},
                std::string_view route = {}, const FeatureVector* features = nullptr);

  struct Served {
    std::string model;
    std::string category;
    int layer = 0;
    double transport_reward = 0;
    bool learned = false;    // the transport outcome taught the bandit (so a verdict corrects it)
    std::string route;       // with features only
    FeatureVector features;  // empty when the request had none (or was served before a restart)
  };
  enum class Claim { kOk, kUnknown, kDuplicate };
  Claim claim(uint64_t seq, Served& served, Ticket ticket = {});

  // Requests served before a restart, read back from the store (ids of a previous instance,
  // which the ring's sequence numbers cannot name): claimable by their whole id and owner until
  // `ttl` after `served_at`. At most `capacity` are kept.
  void restore(std::string request_id, const Served& served, uint64_t owner, WallTime served_at,
               bool claimed = false);
  Claim claim_restored(std::string_view request_id, Served& served, uint64_t owner);

  size_t capacity() const { return capacity_; }

 private:
  struct Impl;
  size_t capacity_;
  std::unique_ptr<Impl> impl_;
};

// Rough token estimate of a text: ~4 bytes per token, at least 1 for non-empty text.
int64_t estimate_tokens(size_t text_bytes);
inline int64_t estimate_tokens(std::string_view text) {
  return estimate_tokens(text.size());
}

}  // namespace switchboard::routing
