#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <unordered_map>

#include "routing/routing.h"

namespace switchboard::routing {
namespace {

// Output tokens assumed for cost estimates when the request gives no max_tokens.
constexpr int64_t kDefaultOutputTokens = 512;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct Post {
  double alpha;
  double beta;
  uint64_t outcomes = 0;
  uint64_t last_id = 0;
  uint64_t feedback = 0;
  double feedback_sum = 0;
};

struct Stat {
  uint64_t requests = 0;
  uint64_t successes = 0;
  double ewma_us = 0;
  double p95_us = 0;
  int64_t tokens_in = 0;
  int64_t tokens_out = 0;
  double spend = 0;
  uint64_t last_id = 0;
  double p50_us = 0;
};

double estimate_cost(const ModelConfig& m, const RequestInfo& r) {
  int64_t out = r.max_tokens > 0 ? r.max_tokens : kDefaultOutputTokens;
  return (double(r.prompt_tokens) * m.cost.input_per_mtok + double(out) * m.cost.output_per_mtok) /
         1e6;
}

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}

}  // namespace

int64_t estimate_tokens(size_t text_bytes) {
  if (text_bytes == 0) return 0;
  return std::max<int64_t>(1, static_cast<int64_t>((text_bytes + 3) / 4));
}

struct RouteIdx {
  RouteStrategy strategy;
  std::vector<std::vector<int>> layers;
};

struct Router::Impl {
  const Config& cfg;
  BreakerProbe breaker_open;
  QuotaProbe quota;
  StringMap<int> model_index;
  StringMap<RouteIdx> routes;
  double gamma;  // per-outcome decay factor

  mutable std::mutex post_mu;
  StringMap<std::vector<Post>> posteriors;  // category → per model index
  Journal journal;                          // guarded by post_mu; called with it held
  uint64_t learned_through = 0;             // the newest journal id applied; guarded by post_mu

  // The learned routes' contextual models; learning goes through apply_locked (post_mu held).
  std::unique_ptr<ContextualBook> contextual;

  mutable std::mutex stat_mu;
  std::vector<Stat> stats;      // per model index
  StringMap<Stat> extra_stats;  // direct provider/upstream requests outside the catalog

  Impl(const Config& c, BreakerProbe probe, QuotaProbe quota_probe)
      : cfg(c), breaker_open(std::move(probe)), quota(std::move(quota_probe)) {
    for (size_t i = 0; i < cfg.models.size(); ++i) model_index.emplace(cfg.models[i].name, int(i));
    for (const auto& r : cfg.routes) {
      RouteIdx ri{r.strategy, {}};
      for (const auto& layer : r.layers) {
        std::vector<int> idx;
        for (const auto& m : layer) idx.push_back(model_index.at(m));
        ri.layers.push_back(std::move(idx));
      }
      routes.emplace(r.name, std::move(ri));
    }
    gamma = std::pow(2.0, -1.0 / cfg.learning.half_life);
    stats.resize(cfg.models.size());
    std::vector<std::pair<std::string, std::vector<int>>> learned;
    for (const auto& [name, ri] : routes) {
      if (ri.strategy != RouteStrategy::kLearned) continue;
      std::vector<int> models;
      for (const auto& layer : ri.layers)
        for (int i : layer)
          if (std::find(models.begin(), models.end(), i) == models.end()) models.push_back(i);
      learned.emplace_back(name, std::move(models));
    }
    contextual = std::make_unique<ContextualBook>(learned, ContextualParams{});
  }

  std::vector<Post>& category_locked(std::string_view category) {
    auto it = posteriors.find(category);
    if (it != posteriors.end()) return it->second;
    std::string key(category);
    if (posteriors.size() >= kMaxCategories) key = "other";
    auto [ins, _] = posteriors.try_emplace(key, cfg.models.size(),
                                           Post{cfg.learning.prior_alpha, cfg.learning.prior_beta});
    return ins->second;
  }

  // Applies one record with post_mu held (takes stat_mu inside it: the same order everywhere).
  // A record with an id changes only the rows whose newest included id is older.
  void apply_locked(const LearnRecord& rec, int idx, uint64_t id) {
    const auto& L = cfg.learning;
    if (id > learned_through) learned_through = id;
    if (!rec.route.empty() && !rec.features.empty() &&
        (rec.kind == LearnRecord::Kind::kOutcome || rec.kind == LearnRecord::Kind::kFeedback)) {
      const FeatureVector x = FeatureVector::decode(rec.features);
      if (rec.kind == LearnRecord::Kind::kFeedback)
        contextual->learn_feedback(rec.route, idx, x, rec.transport_reward, rec.reward, id);
      else if (rec.counts_for_learning)
        contextual->learn_outcome(rec.route, idx, x, rec.reward, id);
    }
    Post& p = category_locked(rec.category.empty() ? "default" : rec.category)[size_t(idx)];
    const bool fresh = id == 0 || id > p.last_id;
    if (rec.kind == LearnRecord::Kind::kFeedback || rec.kind == LearnRecord::Kind::kPeerFeedback) {
      if (!fresh) return;
      const double t = std::clamp(rec.transport_reward, 0.0, 1.0);
      const double f = std::clamp(rec.reward, 0.0, 1.0);
      // Evidence can only be swapped, never pushed below a sliver of the prior: α, β stay > 0.
      constexpr double kFloor = 1e-3;
      p.alpha = std::max(kFloor, p.alpha + (f - t));
      p.beta = std::max(kFloor, p.beta + (t - f));
      p.feedback++;
      p.feedback_sum += f;
      if (id) p.last_id = id;
      return;
    }
    if (rec.counts_for_learning && fresh) {
      const double r = std::clamp(rec.reward, 0.0, 1.0);
      p.alpha = L.prior_alpha + (p.alpha - L.prior_alpha) * gamma + r;
      p.beta = L.prior_beta + (p.beta - L.prior_beta) * gamma + (1.0 - r);
      p.outcomes++;
      if (id) p.last_id = id;
    }
    if (rec.kind == LearnRecord::Kind::kPeerOutcome) return;  // the posterior only
    std::lock_guard lock(stat_mu);
    Stat& s = stats[size_t(idx)];
    if (id != 0 && id <= s.last_id) return;
    if (id) s.last_id = id;
    s.requests++;
    s.successes += rec.success ? 1 : 0;
    s.tokens_in += rec.tokens_in;
    s.tokens_out += rec.tokens_out;
    s.spend += rec.cost_usd;
    if (rec.latency_us > 0) {
      const double x = double(rec.latency_us);
      if (s.ewma_us == 0) {
        s.ewma_us = x;
        s.p95_us = x;
        s.p50_us = x;
      } else {
        s.ewma_us += 0.1 * (x - s.ewma_us);
        // Stochastic quantile estimate: rises by 0.95·step above, falls by 0.05·step below.
        const double step = 0.1 * s.ewma_us;
        s.p95_us += x > s.p95_us ? 0.95 * step : -0.05 * step;
        if (s.p95_us < 0) s.p95_us = 0;
        s.p50_us += x > s.p50_us ? 0.5 * step : -0.5 * step;
        if (s.p50_us < 0) s.p50_us = 0;
      }
    }
  }

  const std::vector<Post>* find_category_locked(std::string_view category) const {
    auto it = posteriors.find(category);
    if (it == posteriors.end()) {
      if (posteriors.size() >= kMaxCategories) it = posteriors.find(std::string_view("other"));
      if (it == posteriors.end()) return nullptr;
    }
    return &it->second;
  }
};

Router::Router(std::shared_ptr<const Config> config, BreakerProbe breaker_open, QuotaProbe quota)
    : config_(std::move(config)),
      impl_(std::make_unique<Impl>(*config_, std::move(breaker_open), std::move(quota))) {}

Router::~Router() = default;

Result<FallbackPlan> Router::plan(const RequestInfo& request) const {
  return plan(request, Rng::for_this_thread());
}

namespace {
struct Cand {
  int idx;
  double cost;
  ScoreParts score;
  bool good_enough = true;
  bool explored = false;
};

// Working storage of plan(), kept per thread: a plan then allocates only what it hands out.
struct PlanScratch {
  std::vector<std::vector<int>> single{std::vector<int>(1)};
  std::vector<std::pair<double, double>> post;
  std::vector<double> latency;
  std::vector<char> seen;
  std::vector<std::vector<Cand>> layers;  // the first `n_layers` are in use
  std::vector<size_t> layer_order;
  std::vector<Attempt> open_tail;
  std::vector<Attempt> critical;  // a layer's targets whose provider's quota is critical
  // Each provider's quota standing, asked once per plan (a provider has many candidates).
  std::vector<std::pair<std::string_view, quota::Level>> quota_levels;
  // The contextual scores of the route's models (ContextualBook::score_all), and where each
  // catalog model sits in them.
  int ctx_ids[ContextualBook::kMaxScored];
  double ctx_sample[ContextualBook::kMaxScored], ctx_mean[ContextualBook::kMaxScored];
  std::vector<int> ctx_pos;
};
}  // namespace

Result<FallbackPlan> Router::plan(const RequestInfo& req, Rng& rng) const {
  const Config& cfg = *config_;
  thread_local PlanScratch scratch;
  const std::string category = req.category.empty() ? "default" : req.category;

  // 1. What the client named: a route, a model, or provider/upstream-name.
  auto& single = scratch.single;  // one layer of one model
  const std::vector<std::vector<int>>* layers_ptr = &single;
  RouteStrategy strategy = RouteStrategy::kOrdered;
  std::string route_name = req.model;
  if (auto rit = impl_->routes.find(req.model); rit != impl_->routes.end()) {
    strategy = rit->second.strategy;
    layers_ptr = &rit->second.layers;
  } else if (auto it = impl_->model_index.find(req.model); it != impl_->model_index.end()) {
    single[0][0] = it->second;
  } else if (auto slash = req.model.find('/'); slash != std::string::npos && slash > 0) {
    std::string provider = req.model.substr(0, slash);
    std::string upstream = req.model.substr(slash + 1);
    if (!cfg.find_provider(provider) || upstream.empty()) {
      return Status::not_found("unknown model '" + req.model + "'");
    }
    int found = -1;
    for (size_t i = 0; i < cfg.models.size(); ++i) {
      if (cfg.models[i].provider == provider && cfg.models[i].upstream == upstream) {
        found = int(i);
        break;
      }
    }
    if (found < 0) {
      // Not in the catalog: sent as named, with nothing known of its price or window.
      bool open = impl_->breaker_open && impl_->breaker_open(provider, req.model);
      return FallbackPlan::direct(config_, route_name, category, provider, upstream, open);
    }
    single[0][0] = found;
  } else {
    return Status::not_found("unknown model '" + req.model + "'");
  }

  const auto& layers = *layers_ptr;

  // 2. Candidate rules.
  std::string excluded;
  auto eligible = [&](const ModelConfig& m, double cost) {
    std::string why;
    if (req.prompt_tokens + req.max_tokens > m.context_window) {
      why = "context window " + std::to_string(m.context_window) + " < " +
            std::to_string(req.prompt_tokens + req.max_tokens) + " tokens";
    } else if (req.max_cost_usd && cost > *req.max_cost_usd) {
      why = "estimated cost $" + fmt_double(cost) + " > ceiling $" + fmt_double(*req.max_cost_usd);
    } else {
      for (const auto& s : req.required_strengths) {
        if (std::find(m.strengths.begin(), m.strengths.end(), s) == m.strengths.end()) {
          why = "lacks strength '" + s + "'";
          break;
        }
      }
    }
    if (!why.empty()) excluded += (excluded.empty() ? "" : "; ") + m.name + ": " + why;
    return why.empty();
  };

  const Complexity complexity = req.complexity.value_or(cfg.routing.default_complexity);
  const std::vector<Tier>& preferred = cfg.routing.complexity_tiers.at(complexity);
  auto tier_rank = [&](Tier t) -> size_t {
    auto it = std::find(preferred.begin(), preferred.end(), t);
    return it == preferred.end() ? preferred.size() : size_t(it - preferred.begin());
  };

  // Posteriors and latencies are copied under their locks once; sampling happens outside them.
  auto& post = scratch.post;
  auto& latency = scratch.latency;
  post.assign(cfg.models.size(), {cfg.learning.prior_alpha, cfg.learning.prior_beta});
  latency.assign(cfg.models.size(), 0.0);
  if (strategy == RouteStrategy::kLearned) {
    {
      std::lock_guard lock(impl_->post_mu);
      if (const auto* cat = impl_->find_category_locked(category)) {
        for (const auto& layer : layers)
          for (int i : layer) post[i] = {(*cat)[i].alpha, (*cat)[i].beta};
      }
    }
    std::lock_guard lock(impl_->stat_mu);
    for (const auto& layer : layers)
      for (int i : layer) latency[i] = impl_->stats[i].ewma_us;
  }

  // Without a category hint, a learned route's contextual models judge the request by its
  // features once they are warm; otherwise (and before) the category's posteriors do.
  bool ctx_pending =
      strategy == RouteStrategy::kLearned && req.category.empty() && !req.features.empty();
  bool ctx_ready = false;
  if (ctx_pending) scratch.ctx_pos.assign(cfg.models.size(), -1);
  auto& ordered_layers = scratch.layers;
  size_t n_layers = 0;
  auto& seen = scratch.seen;
  seen.assign(cfg.models.size(), 0);
  for (const auto& layer : layers) {
    if (ordered_layers.size() <= n_layers) ordered_layers.emplace_back();
    std::vector<Cand>& cands = ordered_layers[n_layers++];
    cands.clear();
    for (int i : layer) {
      if (seen[i]) continue;  // a model listed in two layers is tried once, at its first layer
      seen[i] = true;
      double cost = estimate_cost(cfg.models[i], req);
      if (eligible(cfg.models[i], cost)) cands.push_back(Cand{i, cost, {}});
    }
    if (cands.empty()) continue;
    switch (strategy) {
      case RouteStrategy::kOrdered:
        break;
      case RouteStrategy::kCheapest:
        std::stable_sort(cands.begin(), cands.end(),
                         [](const Cand& a, const Cand& b) { return a.cost < b.cost; });
        break;
      case RouteStrategy::kWeighted: {
        // Weighted draw without replacement: sort by u^(1/w) descending (Efraimidis–Spirakis).
        for (auto& c : cands) {
          double u = std::max(rng.uniform(), 1e-300);
          c.score.total = std::pow(u, 1.0 / cfg.models[c.idx].weight);
        }
        std::sort(cands.begin(), cands.end(),
                  [](const Cand& a, const Cand& b) { return a.score.total > b.score.total; });
        break;
      }
      case RouteStrategy::kLearned: {
        double max_cost = 0, min_cost = std::numeric_limits<double>::infinity(), max_lat = 0;
        for (const auto& c : cands) {
          max_cost = std::max(max_cost, c.cost);
          if (c.cost > 0) min_cost = std::min(min_cost, c.cost);
          max_lat = std::max(max_lat, latency[c.idx]);
        }
        // Prices span orders of magnitude, so cost is scored on a log scale between the
        // layer's cheapest (1) and dearest (0) candidates.
        const double log_span =
            (std::isfinite(min_cost) && max_cost > min_cost) ? std::log(max_cost / min_cost) : 0;
        const auto& w = cfg.learning;
        if (ctx_pending) {  // the first learned layer scores every model of the route
          ctx_pending = false;
          const size_t n = impl_->contextual->score_all(
              route_name, req.features, rng, scratch.ctx_ids, scratch.ctx_sample, scratch.ctx_mean);
          for (size_t i = 0; i < n; ++i) scratch.ctx_pos[size_t(scratch.ctx_ids[i])] = int(i);
          ctx_ready = n > 0;
        }
        const bool contextual = ctx_ready;
        double best = 0;
        for (size_t ci = 0; ci < cands.size(); ++ci) {
          Cand& c = cands[ci];
          const ModelConfig& m = cfg.models[c.idx];
          c.score.contextual = contextual;
          c.score.sample =
              contextual ? scratch.ctx_sample[ci] : rng.beta(post[c.idx].first, post[c.idx].second);
          size_t rank = tier_rank(m.tier);
          // Tier preference is the caller's hint; without one every tier scores alike.
          c.score.tier = !req.complexity ? 0.0
                         : rank == 0     ? 1.0
                                         : (rank < preferred.size() ? 0.5 : 0.0);
          c.score.cost =
              log_span > 0 ? 1.0 - std::log(std::max(c.cost, min_cost) / min_cost) / log_span : 1.0;
          c.score.latency =
              (max_lat > 0 && latency[c.idx] > 0) ? 1.0 - latency[c.idx] / max_lat : 0.5;
          c.score.total = w.weight_success * c.score.sample + w.weight_tier * c.score.tier +
                          w.weight_cost * c.score.cost + w.weight_latency * c.score.latency;
          best = std::max(best, contextual
                                    ? scratch.ctx_mean[ci]
                                    : post[c.idx].first / (post[c.idx].first + post[c.idx].second));
        }
        if (rng.uniform() < w.explore) {
          for (size_t i = cands.size(); i > 1; --i) std::swap(cands[i - 1], cands[rng.next() % i]);
          for (auto& c : cands) c.explored = true;
        } else {
          // Good enough = a sampled success within the tolerance of the best posterior mean (the
          // leader's mean, not its sample, so one optimistic draw of the leader does not push
          // a cheaper model out). Among those the cheapest leads (ties by score); the rest
          // follow by score.
          for (auto& c : cands) c.good_enough = c.score.sample >= best - w.quality_tolerance;
          std::sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
            if (a.good_enough != b.good_enough) return a.good_enough;
            if (a.good_enough && a.cost != b.cost) return a.cost < b.cost;
            return a.score.total > b.score.total;
          });
        }
        break;
      }
    }
  }

  // 3. An explicit complexity hint moves layers holding a preferred-tier model ahead.
  auto& layer_order = scratch.layer_order;
  layer_order.resize(n_layers);
  for (size_t i = 0; i < layer_order.size(); ++i) layer_order[i] = i;
  if (strategy == RouteStrategy::kLearned && req.complexity) {
    auto best_rank = [&](size_t l) {
      size_t r = preferred.size();
      for (const auto& c : ordered_layers[l]) r = std::min(r, tier_rank(cfg.models[c.idx].tier));
      return r;
    };
    std::stable_sort(layer_order.begin(), layer_order.end(),
                     [&](size_t a, size_t b) { return best_rank(a) < best_rank(b); });
  }

  // 4. Attempts, with open-breaker targets moved to the end.
  auto& open_tail = scratch.open_tail;
  open_tail.clear();
  auto& critical = scratch.critical;
  auto& quota_levels = scratch.quota_levels;
  quota_levels.clear();
  auto quota_of = [&](std::string_view provider) {
    for (const auto& [name, level] : quota_levels)
      if (name == provider) return level;
    const quota::Level level = impl_->quota(provider);
    quota_levels.emplace_back(provider, level);
    return level;
  };
  std::vector<Attempt> attempts;
  attempts.reserve(cfg.models.size());
  for (size_t pos = 0; pos < layer_order.size(); ++pos) {
    const size_t l = layer_order[pos];
    critical.clear();
    for (const auto& c : ordered_layers[l]) {
      const ModelConfig& m = cfg.models[c.idx];
      Attempt a;
      a.model = m.name;
      a.provider = m.provider;
      a.upstream = m.upstream;
      a.layer = int(l);
      a.rank = int(pos);
      a.estimated_cost_usd = c.cost;
      a.score = c.score;
      switch (strategy) {
        case RouteStrategy::kOrdered:
          a.placement = Placement::kAsWritten;
          break;
        case RouteStrategy::kCheapest:
          a.placement = Placement::kCheapest;
          break;
        case RouteStrategy::kWeighted:
          a.placement = Placement::kWeightedDraw;
          break;
        case RouteStrategy::kLearned:
          a.placement = c.explored      ? Placement::kExplored
                        : c.good_enough ? Placement::kWithinTolerance
                                        : Placement::kOutsideTolerance;
          break;
      }
      if (impl_->quota) a.quota = quota_of(m.provider);
      if (impl_->breaker_open && impl_->breaker_open(m.provider, m.name)) {
        a.breaker_open = true;
        a.placement = Placement::kBreakerOpen;
        open_tail.push_back(a);
      } else if (a.quota == quota::Level::kExhausted) {
        a.placement = Placement::kQuotaExhausted;
        open_tail.push_back(a);
      } else if (a.quota == quota::Level::kCritical) {
        a.placement = Placement::kQuotaCritical;
        critical.push_back(a);
      } else {
        attempts.push_back(a);
      }
    }
    // A critical quota's targets go behind the others of their layer, in the strategy's order.
    attempts.insert(attempts.end(), critical.begin(), critical.end());
  }
  attempts.insert(attempts.end(), open_tail.begin(), open_tail.end());
  if (attempts.empty()) {
    return Status::failed_precondition("no model of '" + req.model +
                                       "' can serve this request: " + excluded);
  }
  return FallbackPlan(config_, std::move(route_name), category, to_string(strategy),
                      std::move(attempts));
}

void Router::set_journal(Journal journal) {
  std::lock_guard lock(impl_->post_mu);
  impl_->journal = std::move(journal);
}

void Router::record(const Outcome& o) {
  auto it = impl_->model_index.find(o.model);
  if (it == impl_->model_index.end()) {
    std::lock_guard lock(impl_->stat_mu);
    // Names outside the catalog come from clients (provider/anything): bounded like categories,
    // and not journaled (they teach no posterior).
    auto found = impl_->extra_stats.find(o.model);
    if (found == impl_->extra_stats.end())
      found = impl_->extra_stats
                  .try_emplace(impl_->extra_stats.size() >= kMaxCategories ? std::string("other")
                                                                           : o.model)
                  .first;
    auto& s = found->second;
    s.requests++;
    s.successes += o.success ? 1 : 0;
    s.spend += o.cost_usd;
    return;
  }
  LearnRecord rec;
  rec.kind = LearnRecord::Kind::kOutcome;
  rec.category = o.category;
  rec.model = o.model;
  rec.reward = o.reward;
  rec.counts_for_learning = o.counts_for_learning;
  rec.success = o.success;
  rec.latency_us = o.latency_us;
  rec.tokens_in = o.tokens_in;
  rec.tokens_out = o.tokens_out;
  rec.cost_usd = o.cost_usd;
  // Only a learned route's contextual models read them: other requests journal none.
  if (!o.features.empty() && impl_->contextual->has_route(o.route)) {
    rec.route = o.route;
    rec.features = o.features.encode();
  }
  std::lock_guard lock(impl_->post_mu);
  const uint64_t id = impl_->journal ? impl_->journal(rec) : o.id;
  impl_->apply_locked(rec, it->second, id);
}

void Router::record_feedback(std::string_view category, std::string_view model,
                             double transport_reward, double feedback_reward,
                             std::string_view route, const FeatureVector* features) {
  auto it = impl_->model_index.find(model);
  if (it == impl_->model_index.end()) return;
  LearnRecord rec;
  rec.kind = LearnRecord::Kind::kFeedback;
  rec.category = std::string(category);
  rec.model = std::string(model);
  rec.reward = feedback_reward;
  rec.transport_reward = transport_reward;
  if (features && !features->empty() && impl_->contextual->has_route(route)) {
    rec.route = std::string(route);
    rec.features = features->encode();
  }
  std::lock_guard lock(impl_->post_mu);
  const uint64_t id = impl_->journal ? impl_->journal(rec) : 0;
  impl_->apply_locked(rec, it->second, id);
}

void Router::learn_from_peer(LearnRecord rec) {
  if (rec.kind == LearnRecord::Kind::kOutcome) rec.kind = LearnRecord::Kind::kPeerOutcome;
  if (rec.kind == LearnRecord::Kind::kFeedback) rec.kind = LearnRecord::Kind::kPeerFeedback;
  if (rec.kind == LearnRecord::Kind::kPeerOutcome && !rec.counts_for_learning) return;
  auto it = impl_->model_index.find(rec.model);
  if (it == impl_->model_index.end()) return;  // not in this gateway's catalog
  if (rec.category.size() > kMaxCategoryBytes) return;
  std::lock_guard lock(impl_->post_mu);
  const uint64_t id = impl_->journal ? impl_->journal(rec) : 0;
  impl_->apply_locked(rec, it->second, id);
}

void Router::replay(const LearnRecord& rec, uint64_t id) {
  auto it = impl_->model_index.find(rec.model);
  if (it == impl_->model_index.end()) return;  // model since removed from the config
  std::lock_guard lock(impl_->post_mu);
  impl_->apply_locked(rec, it->second, id);
}

RouterState Router::export_state() const {
  RouterState st;
  const Config& cfg = *config_;
  // Both locks at once (post_mu first, as apply_locked takes them), so that the rows and
  // `learned_through` describe the same set of records.
  std::lock_guard post_lock(impl_->post_mu);
  st.learned_through = impl_->learned_through;
  st.contextual = impl_->contextual->export_state();
  for (auto& c : st.contextual) c.model_name = cfg.models[size_t(c.model)].name;
  for (const auto& [cat, vec] : impl_->posteriors) {
    for (size_t i = 0; i < vec.size(); ++i) {
      if (vec[i].outcomes == 0 && vec[i].last_id == 0 && vec[i].feedback == 0) continue;
      st.posteriors.push_back(Posterior{cat, cfg.models[i].name, vec[i].alpha, vec[i].beta,
                                        vec[i].outcomes, vec[i].last_id, vec[i].feedback,
                                        vec[i].feedback_sum});
    }
  }
  std::lock_guard lock(impl_->stat_mu);
  for (size_t i = 0; i < impl_->stats.size(); ++i) {
    const Stat& s = impl_->stats[i];
    if (s.requests == 0) continue;
    st.stats.push_back(ModelStats{cfg.models[i].name, s.requests, s.successes, s.ewma_us, s.p95_us,
                                  s.tokens_in, s.tokens_out, s.spend, s.last_id, s.p50_us});
  }
  return st;
}

void Router::import_state(const RouterState& st) {
  {
    std::lock_guard lock(impl_->post_mu);
    // Models by name: the catalog's order may have changed since the state was taken.
    std::vector<ContextualBook::Snapshot> contextual;
    for (const auto& c : st.contextual) {
      auto it = impl_->model_index.find(c.model_name);
      if (it == impl_->model_index.end()) continue;
      contextual.push_back(c);
      contextual.back().model = it->second;
    }
    impl_->contextual->import_state(contextual);
    impl_->learned_through = std::max(impl_->learned_through, st.learned_through);
    for (const auto& p : st.posteriors) {
      auto it = impl_->model_index.find(p.model);
      if (it == impl_->model_index.end()) continue;  // model since removed from the config
      if (!(p.alpha > 0) || !(p.beta > 0)) continue;
      Post& dst = impl_->category_locked(p.category)[it->second];
      dst = Post{p.alpha, p.beta, p.outcomes, p.last_outcome_id, p.feedback, p.feedback_reward_sum};
    }
  }
  std::lock_guard lock(impl_->stat_mu);
  for (const auto& s : st.stats) {
    auto it = impl_->model_index.find(s.model);
    if (it == impl_->model_index.end()) continue;
    impl_->stats[it->second] = Stat{s.requests,
                                    s.successes,
                                    s.latency_ewma_us,
                                    s.latency_p95_us,
                                    s.tokens_in,
                                    s.tokens_out,
                                    s.spend_usd,
                                    s.last_outcome_id,
                                    s.latency_p50_us > 0 ? s.latency_p50_us : s.latency_ewma_us};
  }
}

void Router::restore(const RouterState& snapshot,
                     const std::vector<std::pair<uint64_t, LearnRecord>>& journal) {
  import_state(snapshot);
  for (const auto& [id, record] : journal) replay(record, id);
}

std::optional<Posterior> Router::posterior(std::string_view category,
                                           std::string_view model) const {
  auto it = impl_->model_index.find(model);
  if (it == impl_->model_index.end()) return std::nullopt;
  std::lock_guard lock(impl_->post_mu);
  const auto* cat = impl_->find_category_locked(category.empty() ? "default" : category);
  Posterior p{std::string(category),
              std::string(model),
              impl_->cfg.learning.prior_alpha,
              impl_->cfg.learning.prior_beta,
              0,
              0};
  if (cat) {
    const Post& src = (*cat)[it->second];
    p.alpha = src.alpha;
    p.beta = src.beta;
    p.outcomes = src.outcomes;
    p.last_outcome_id = src.last_id;
    p.feedback = src.feedback;
    p.feedback_reward_sum = src.feedback_sum;
  }
  return p;
}

const ContextualBook& Router::contextual() const {
  return *impl_->contextual;
}

std::optional<ModelStats> Router::stats(std::string_view model) const {
  auto it = impl_->model_index.find(model);
  if (it == impl_->model_index.end()) return std::nullopt;
  std::lock_guard lock(impl_->stat_mu);
  const Stat& s = impl_->stats[it->second];
  return ModelStats{std::string(model), s.requests,   s.successes, s.ewma_us, s.p95_us,
                    s.tokens_in,        s.tokens_out, s.spend,     s.last_id, s.p50_us};
}

}  // namespace switchboard::routing
