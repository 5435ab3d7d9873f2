// The contextual success model (contextual.h).
#include "routing/contextual.h"

#include <algorithm>
#include <cmath>
#include <mutex>

#include "routing/routing.h"

namespace switchboard::routing {

namespace {
constexpr double kInvSqrt2Pi = 0.3989422804014327;
// The smallest variance a weight keeps: a feature seen a thousand times still moves.
constexpr float kMinVariance = 1e-3f;
}  // namespace

double normal_cdf(double z) {
  return 0.5 * std::erfc(-z * M_SQRT1_2);
}

ContextualModel::ContextualModel(const ContextualParams& params)
    : p_(params),
      mean_(FeatureVector::kDim, 0.0f),
      var_(FeatureVector::kDim, float(params.prior_variance)) {}

ContextualModel::Score ContextualModel::score(const FeatureVector& x) const {
  Score s;
  for (uint16_t i = 0; i < x.size; ++i) {
    const double xi = x.value[i];
    s.mean += xi * mean_[x.index[i]];
    s.variance += xi * xi * var_[x.index[i]];
  }
  return s;
}

double ContextualModel::mean_probability(const FeatureVector& x) const {
  const Score s = score(x);
  return normal_cdf(s.mean / std::sqrt(p_.noise * p_.noise + s.variance));
}

double ContextualModel::sample_probability(const FeatureVector& x, Rng& rng) const {
  const Score s = score(x);
  return normal_cdf(s.mean + p_.sample_scale * std::sqrt(s.variance) * rng.normal());
}

void ContextualModel::update(const FeatureVector& x, bool success, double strength) {
  if (!(strength > 1e-3) || x.empty()) return;
  const float cap = float(p_.prior_variance);
  for (uint16_t i = 0; i < x.size; ++i) {
    float& v = var_[x.index[i]];
    v = std::min(cap, v + float(p_.drift));
  }
  const Score s = score(x);
  // A stronger observation is a less noisy one.
  const double noise2 = p_.noise * p_.noise / strength;
  const double total = noise2 + s.variance;
  const double sd = std::sqrt(total);
  const double y = success ? 1.0 : -1.0;
  const double t = y * s.mean / sd;
  // v(t) = φ(t)/Φ(t), w(t) = v(t)(v(t) + t); Φ(t) floored so a surprise far in the tail stays
  // finite.
  const double cdf = std::max(normal_cdf(t), 1e-12);
  const double vt = kInvSqrt2Pi * std::exp(-0.5 * t * t) / cdf;
  const double wt = std::clamp(vt * (vt + t), 0.0, 1.0);
  for (uint16_t i = 0; i < x.size; ++i) {
    const double xi = x.value[i];
    float& m = mean_[x.index[i]];
    float& v = var_[x.index[i]];
    m += float(y * xi * v / sd * vt);
    v = std::max(kMinVariance, float(v * (1.0 - xi * xi * v / total * wt)));
  }
  ++updates_;
}

void ContextualModel::learn_outcome(const FeatureVector& x, double reward) {
  const double r = std::clamp(reward, 0.0, 1.0);
  // A graded reward teaches in proportion to its distance from a coin flip.
  update(x, r >= 0.5, p_.transport_weight * std::abs(2 * r - 1));
}

void ContextualModel::learn_feedback(const FeatureVector& x, double transport, double feedback) {
  const double t = std::clamp(transport, 0.0, 1.0), f = std::clamp(feedback, 0.0, 1.0);
  // The verdict's evidence minus the transport outcome's, on the ±1 scale of each.
  const double net = p_.feedback_weight * (2 * f - 1) - p_.transport_weight * (2 * t - 1);
  update(x, net > 0, std::abs(net));
}

bool ContextualModel::restore(std::vector<float> means, std::vector<float> variances,
                              uint64_t updates) {
  if (means.size() != FeatureVector::kDim || variances.size() != FeatureVector::kDim) return false;
  for (size_t i = 0; i < means.size(); ++i) {
    if (!std::isfinite(means[i]) || !(variances[i] > 0) || !std::isfinite(variances[i]))
      return false;
  }
  mean_ = std::move(means);
  var_ = std::move(variances);
  updates_ = updates;
  return true;
}

// ---- ContextualBook

struct ContextualBook::RouteModels {
  mutable std::mutex mu;
  std::vector<int> model_ids;                            // the route's models (catalog indexes)
  std::vector<std::unique_ptr<ContextualModel>> models;  // parallel; allocated on first use
  std::vector<uint64_t> last_id;                         // parallel
  uint64_t updates = 0;

  int slot_of(int model) const {
    for (size_t i = 0; i < model_ids.size(); ++i)
      if (model_ids[i] == model) return int(i);
    return -1;
  }
};

ContextualBook::ContextualBook(const std::vector<std::pair<std::string, std::vector<int>>>& routes,
                               const ContextualParams& params)
    : params_(params) {
  for (const auto& [name, models] : routes) {
    auto r = std::make_unique<RouteModels>();
    r->model_ids = models;
    r->models.resize(models.size());
    r->last_id.resize(models.size());
    routes_.emplace_back(name, std::move(r));
  }
}

ContextualBook::~ContextualBook() = default;

ContextualBook::RouteModels* ContextualBook::find(std::string_view route) const {
  for (const auto& [name, r] : routes_)
    if (name == route) return r.get();
  return nullptr;
}

bool ContextualBook::score(std::string_view route, const FeatureVector& x, const int* models,
                           size_t n, Rng& rng, double* samples, double* means) const {
  RouteModels* r = find(route);
  if (!r || x.empty()) return false;
  std::lock_guard lock(r->mu);
  if (r->updates < kWarmupPerModel * r->model_ids.size()) return false;
  static const ContextualModel kPrior{};
  for (size_t i = 0; i < n; ++i) {
    const int slot = r->slot_of(models[i]);
    const ContextualModel& m =
        slot >= 0 && r->models[size_t(slot)] ? *r->models[size_t(slot)] : kPrior;
    samples[i] = m.sample_probability(x, rng);
    means[i] = m.mean_probability(x);
  }
  return true;
}

void ContextualBook::learn_outcome(std::string_view route, int model, const FeatureVector& x,
                                   double reward, uint64_t id) {
  RouteModels* r = find(route);
  if (!r || x.empty()) return;
  std::lock_guard lock(r->mu);
  const int slot = r->slot_of(model);
  if (slot < 0) return;
  if (id) {
    if (id <= r->last_id[size_t(slot)]) return;
    r->last_id[size_t(slot)] = id;
  }
  auto& m = r->models[size_t(slot)];
  if (!m) m = std::make_unique<ContextualModel>(params_);
  m->learn_outcome(x, reward);
  ++r->updates;
}

void ContextualBook::learn_feedback(std::string_view route, int model, const FeatureVector& x,
                                    double transport, double feedback, uint64_t id) {
  RouteModels* r = find(route);
  if (!r || x.empty()) return;
  std::lock_guard lock(r->mu);
  const int slot = r->slot_of(model);
  if (slot < 0) return;
  if (id) {
    if (id <= r->last_id[size_t(slot)]) return;
    r->last_id[size_t(slot)] = id;
  }
  auto& m = r->models[size_t(slot)];
  if (!m) m = std::make_unique<ContextualModel>(params_);
  m->learn_feedback(x, transport, feedback);
  ++r->updates;
}

std::vector<ContextualBook::Snapshot> ContextualBook::export_state() const {
  std::vector<Snapshot> out;
  for (const auto& [name, r] : routes_) {
    std::lock_guard lock(r->mu);
    for (size_t i = 0; i < r->models.size(); ++i) {
      if (!r->models[i]) continue;
      out.push_back(Snapshot{name,
                             r->model_ids[i],
                             {},
                             r->models[i]->means(),
                             r->models[i]->variances(),
                             r->models[i]->updates(),
                             r->last_id[i]});
    }
  }
  return out;
}

void ContextualBook::import_state(const std::vector<Snapshot>& state) {
  for (const auto& s : state) {
    RouteModels* r = find(s.route);
    if (!r) continue;
    std::lock_guard lock(r->mu);
    const int slot = r->slot_of(s.model);
    if (slot < 0) continue;
    auto m = std::make_unique<ContextualModel>(params_);
    if (!m->restore(s.means, s.variances, s.updates)) continue;
    auto& dst = r->models[size_t(slot)];
    r->updates = r->updates - (dst ? dst->updates() : 0) + s.updates;
    dst = std::move(m);
    r->last_id[size_t(slot)] = std::max(r->last_id[size_t(slot)], s.last_id);
  }
}

std::vector<std::pair<uint16_t, double>> ContextualBook::contributions(std::string_view route,
                                                                       int model,
                                                                       const FeatureVector& x,
                                                                       size_t k) const {
  std::vector<std::pair<uint16_t, double>> out;
  RouteModels* r = find(route);
  if (!r) return out;
  std::lock_guard lock(r->mu);
  const int slot = r->slot_of(model);
  if (slot < 0 || !r->models[size_t(slot)]) return out;
  for (uint16_t i = 0; i < x.size; ++i)
    out.emplace_back(x.index[i], double(x.value[i]) * r->models[size_t(slot)]->weight(x.index[i]));
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return std::abs(a.second) > std::abs(b.second); });
  if (out.size() > k) out.resize(k);
  return out;
}

std::vector<std::pair<uint16_t, double>> ContextualBook::strongest(std::string_view route,
                                                                   int model, size_t k) const {
  std::vector<std::pair<uint16_t, double>> out;
  RouteModels* r = find(route);
  if (!r) return out;
  std::lock_guard lock(r->mu);
  const int slot = r->slot_of(model);
  if (slot < 0 || !r->models[size_t(slot)]) return out;
  const auto& means = r->models[size_t(slot)]->means();
  for (size_t i = 0; i < means.size(); ++i)
    if (means[i] != 0) out.emplace_back(uint16_t(i), means[i]);
  const size_t n = std::min(k, out.size());
  std::partial_sort(
      out.begin(), out.begin() + long(n), out.end(),
      [](const auto& a, const auto& b) { return std::abs(a.second) > std::abs(b.second); });
  out.resize(n);
  return out;
}

uint64_t ContextualBook::updates(std::string_view route, int model) const {
  RouteModels* r = find(route);
  if (!r) return 0;
  std::lock_guard lock(r->mu);
  const int slot = r->slot_of(model);
  return slot >= 0 && r->models[size_t(slot)] ? r->models[size_t(slot)]->updates() : 0;
}

}  // namespace switchboard::routing
