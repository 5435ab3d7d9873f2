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
    : p_(params), w_(size_t(FeatureVector::kDim) * 2, 0.0f) {
  for (size_t i = 1; i < w_.size(); i += 2) w_[i] = float(params.prior_variance);
}

ContextualModel::Score ContextualModel::score(View w, const FeatureVector& x) {
  Score s;
  for (uint16_t i = 0; i < x.size; ++i) {
    const double xi = x.value[i];
    s.mean += xi * w.mean(x.index[i]);
    s.variance += xi * xi * w.var(x.index[i]);
  }
  return s;
}

ContextualModel::Score ContextualModel::score(const FeatureVector& x) const {
  return score(view(), x);
}

double ContextualModel::mean_probability(const FeatureVector& x) const {
  const Score s = score(x);
  return normal_cdf(s.mean / std::sqrt(p_.noise * p_.noise + s.variance));
}

double ContextualModel::sample_probability(const FeatureVector& x, Rng& rng) const {
  const Score s = score(x);
  return normal_cdf(s.mean + p_.sample_scale * std::sqrt(s.variance) * rng.normal());
}

void ContextualModel::update(View w, const ContextualParams& p, const FeatureVector& x,
                             bool success, double strength) {
  if (!(strength > 1e-3) || x.empty()) return;
  const float cap = float(p.prior_variance);
  for (uint16_t i = 0; i < x.size; ++i) {
    float& v = w.var(x.index[i]);
    v = std::min(cap, v + float(p.drift));
  }
  const Score s = score(w, x);
  // A stronger observation is a less noisy one.
  const double noise2 = p.noise * p.noise / strength;
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
    float& m = w.mean(x.index[i]);
    float& v = w.var(x.index[i]);
    m += float(y * xi * v / sd * vt);
    v = std::max(kMinVariance, float(v * (1.0 - xi * xi * v / total * wt)));
  }
}

void ContextualModel::update(const FeatureVector& x, bool success, double strength) {
  if (!(strength > 1e-3) || x.empty()) return;
  update(view(), p_, x, success, strength);
  ++updates_;
}

std::pair<bool, double> ContextualModel::outcome_lesson(const ContextualParams& p, double reward) {
  const double r = std::clamp(reward, 0.0, 1.0);
  // A graded reward teaches in proportion to its distance from a coin flip.
  return {r >= 0.5, p.transport_weight * std::abs(2 * r - 1)};
}

std::pair<bool, double> ContextualModel::feedback_lesson(const ContextualParams& p,
                                                         double transport, double feedback) {
  const double t = std::clamp(transport, 0.0, 1.0), f = std::clamp(feedback, 0.0, 1.0);
  // The verdict's evidence minus the transport outcome's, on the ±1 scale of each.
  const double net = p.feedback_weight * (2 * f - 1) - p.transport_weight * (2 * t - 1);
  return {net > 0, std::abs(net)};
}

void ContextualModel::learn_outcome(const FeatureVector& x, double reward) {
  auto [success, strength] = outcome_lesson(p_, reward);
  update(x, success, strength);
}

void ContextualModel::learn_feedback(const FeatureVector& x, double transport, double feedback) {
  auto [success, strength] = feedback_lesson(p_, transport, feedback);
  update(x, success, strength);
}

std::vector<float> ContextualModel::means() const {
  std::vector<float> out(FeatureVector::kDim);
  for (size_t i = 0; i < out.size(); ++i) out[i] = w_[2 * i];
  return out;
}

std::vector<float> ContextualModel::variances() const {
  std::vector<float> out(FeatureVector::kDim);
  for (size_t i = 0; i < out.size(); ++i) out[i] = w_[2 * i + 1];
  return out;
}

bool ContextualModel::valid(const std::vector<float>& means, const std::vector<float>& variances) {
  if (means.size() != FeatureVector::kDim || variances.size() != FeatureVector::kDim) return false;
  for (size_t i = 0; i < means.size(); ++i) {
    if (!std::isfinite(means[i]) || !(variances[i] > 0) || !std::isfinite(variances[i]))
      return false;
  }
  return true;
}

bool ContextualModel::restore(const std::vector<float>& means, const std::vector<float>& variances,
                              uint64_t updates) {
  if (!valid(means, variances)) return false;
  for (size_t i = 0; i < means.size(); ++i) {
    w_[2 * i] = means[i];
    w_[2 * i + 1] = variances[i];
  }
  updates_ = updates;
  return true;
}

// ---- ContextualBook

struct ContextualBook::RouteModels {
  mutable std::mutex mu;
  std::vector<int> model_ids;  // the route's models (catalog indexes)
  // Slot-major: the row of slot s holds every model's mean, then every model's variance
  // (s * 2n + m and s * 2n + n + m), so scoring all models is one contiguous pass per feature.
  std::vector<float> w;
  std::vector<uint64_t> updates;  // per model
  std::vector<uint64_t> last_id;  // per model
  uint64_t total_updates = 0;

  size_t n() const { return model_ids.size(); }
  ContextualModel::View view(int m) const {
    return ContextualModel::View{const_cast<float*>(w.data()) + size_t(m), 2 * n(), n()};
  }
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
    r->w.assign(size_t(FeatureVector::kDim) * models.size() * 2, 0.0f);
    for (size_t slot = 0; slot < FeatureVector::kDim; ++slot)
      std::fill_n(r->w.begin() + long((2 * slot + 1) * models.size()), models.size(),
                  float(params.prior_variance));
    r->updates.resize(models.size());
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

size_t ContextualBook::score_all(std::string_view route, const FeatureVector& x, Rng& rng,
                                 int* models, double* samples, double* means) const {
  RouteModels* r = find(route);
  if (!r || x.empty() || r->n() > kMaxScored) return 0;
  const size_t n = r->n();
  float mean[kMaxScored] = {}, var[kMaxScored] = {};
  {
    std::lock_guard lock(r->mu);
    if (r->total_updates < kWarmupPerModel * n) return 0;
    // One contiguous pass per feature over every model's weights (vectorizes).
    for (uint16_t f = 0; f < x.size; ++f) {
      const float xi = x.value[f], xi2 = xi * xi;
      const float* row = r->w.data() + size_t(x.index[f]) * 2 * n;
      for (size_t i = 0; i < n; ++i) {
        mean[i] += xi * row[i];
        var[i] += xi2 * row[n + i];
      }
    }
  }
  const double noise2 = params_.noise * params_.noise;
  for (size_t i = 0; i < n; ++i) {
    models[i] = r->model_ids[i];
    samples[i] =
        normal_cdf(mean[i] + params_.sample_scale * std::sqrt(double(var[i])) * rng.normal());
    means[i] = normal_cdf(mean[i] / std::sqrt(noise2 + var[i]));
  }
  return n;
}

void ContextualBook::learn(std::string_view route, int model, const FeatureVector& x,
                           std::pair<bool, double> lesson, uint64_t id) {
  RouteModels* r = find(route);
  if (!r || x.empty()) return;
  std::lock_guard lock(r->mu);
  const int m = r->slot_of(model);
  if (m < 0) return;
  if (id) {
    if (id <= r->last_id[size_t(m)]) return;
    r->last_id[size_t(m)] = id;
  }
  if (!(lesson.second > 1e-3)) return;
  ContextualModel::update(r->view(m), params_, x, lesson.first, lesson.second);
  ++r->updates[size_t(m)];
  ++r->total_updates;
}

void ContextualBook::learn_outcome(std::string_view route, int model, const FeatureVector& x,
                                   double reward, uint64_t id) {
  learn(route, model, x, ContextualModel::outcome_lesson(params_, reward), id);
}

void ContextualBook::learn_feedback(std::string_view route, int model, const FeatureVector& x,
                                    double transport, double feedback, uint64_t id) {
  learn(route, model, x, ContextualModel::feedback_lesson(params_, transport, feedback), id);
}

std::vector<ContextualBook::Snapshot> ContextualBook::export_state() const {
  std::vector<Snapshot> out;
  for (const auto& [name, r] : routes_) {
    std::lock_guard lock(r->mu);
    for (size_t m = 0; m < r->n(); ++m) {
      if (r->updates[m] == 0 && r->last_id[m] == 0) continue;
      Snapshot s{name, r->model_ids[m], {}, {}, {}, r->updates[m], r->last_id[m]};
      s.means.resize(FeatureVector::kDim);
      s.variances.resize(FeatureVector::kDim);
      const auto v = r->view(int(m));
      for (uint16_t slot = 0; slot < FeatureVector::kDim; ++slot) {
        s.means[slot] = v.mean(slot);
        s.variances[slot] = v.var(slot);
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

void ContextualBook::import_state(const std::vector<Snapshot>& state) {
  for (const auto& s : state) {
    RouteModels* r = find(s.route);
    if (!r || !ContextualModel::valid(s.means, s.variances)) continue;
    std::lock_guard lock(r->mu);
    const int m = r->slot_of(s.model);
    if (m < 0) continue;
    const auto v = r->view(m);
    for (uint16_t slot = 0; slot < FeatureVector::kDim; ++slot) {
      v.mean(slot) = s.means[slot];
      v.var(slot) = s.variances[slot];
    }
    r->total_updates = r->total_updates - r->updates[size_t(m)] + s.updates;
    r->updates[size_t(m)] = s.updates;
    r->last_id[size_t(m)] = std::max(r->last_id[size_t(m)], s.last_id);
  }
}

namespace {
// The `k` entries of largest magnitude, largest first.
std::vector<std::pair<uint16_t, double>> top_by_magnitude(
    std::vector<std::pair<uint16_t, double>> v, size_t k) {
  const size_t n = std::min(k, v.size());
  std::partial_sort(v.begin(), v.begin() + long(n), v.end(), [](const auto& a, const auto& b) {
    return std::abs(a.second) > std::abs(b.second);
  });
  v.resize(n);
  return v;
}
}  // namespace

std::vector<std::pair<uint16_t, double>> ContextualBook::weights_of(std::string_view route,
                                                                    int model,
                                                                    const FeatureVector* x) const {
  std::vector<std::pair<uint16_t, double>> out;
  RouteModels* r = find(route);
  if (!r) return out;
  std::lock_guard lock(r->mu);
  const int m = r->slot_of(model);
  if (m < 0) return out;
  const auto v = r->view(m);
  if (x) {
    for (uint16_t i = 0; i < x->size; ++i)
      out.emplace_back(x->index[i], double(x->value[i]) * v.mean(x->index[i]));
  } else {
    for (uint16_t slot = 0; slot < FeatureVector::kDim; ++slot)
      if (v.mean(slot) != 0) out.emplace_back(slot, v.mean(slot));
  }
  return out;
}

std::vector<std::pair<uint16_t, double>> ContextualBook::contributions(std::string_view route,
                                                                       int model,
                                                                       const FeatureVector& x,
                                                                       size_t k) const {
  return top_by_magnitude(weights_of(route, model, &x), k);
}

std::vector<std::pair<uint16_t, double>> ContextualBook::strongest(std::string_view route,
                                                                   int model, size_t k) const {
  return top_by_magnitude(weights_of(route, model, nullptr), k);
}

uint64_t ContextualBook::updates(std::string_view route, int model) const {
  RouteModels* r = find(route);
  if (!r) return 0;
  std::lock_guard lock(r->mu);
  const int m = r->slot_of(model);
  return m >= 0 ? r->updates[size_t(m)] : 0;
}

}  // namespace switchboard::routing
