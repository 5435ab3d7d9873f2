#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "routing/routing.h"

namespace switchboard::routing {
namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

std::atomic<uint64_t> g_thread_seed{0};
std::atomic<uint64_t> g_thread_counter{0};

}  // namespace

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t Rng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() {
  return double(next() >> 11) * 0x1.0p-53;
}

double Rng::normal() {
  // Marsaglia's polar method; the second value of each pair is kept for the next call.
  if (have_spare_) {
    have_spare_ = false;
    return spare_;
  }
  double u, v, s;
  do {
    u = uniform() * 2.0 - 1.0;
    v = uniform() * 2.0 - 1.0;
    s = u * u + v * v;
  } while (s >= 1.0 || s == 0.0);
  double m = std::sqrt(-2.0 * std::log(s) / s);
  spare_ = v * m;
  have_spare_ = true;
  return u * m;
}

double Rng::gamma(double shape) {
  // Marsaglia & Tsang (2000); shapes below 1 use the boost Gamma(a) = Gamma(a+1) · U^(1/a).
  if (shape < 1.0) {
    double u = uniform();
    if (u <= 0) u = 1e-300;
    return gamma(shape + 1.0) * std::pow(u, 1.0 / shape);
  }
  const double d = shape - 1.0 / 3.0;
  const double c = 1.0 / std::sqrt(9.0 * d);
  while (true) {
    double x, v;
    do {
      x = normal();
      v = 1.0 + c * x;
    } while (v <= 0.0);
    v = v * v * v;
    double u = uniform();
    if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
    if (u > 0 && std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
  }
}

double Rng::beta(double a, double b) {
  double x = gamma(a);
  double y = gamma(b);
  double s = x + y;
  return s > 0 ? x / s : 0.5;
}

void Rng::set_thread_seed(uint64_t seed) {
  g_thread_seed.store(seed, std::memory_order_relaxed);
  for_this_thread() = Rng(seed);
}

Rng& Rng::for_this_thread() {
  thread_local Rng rng([] {
    uint64_t base = g_thread_seed.load(std::memory_order_relaxed);
    if (base == 0) {
      base = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }
    return base + 0x632be59bd9b4e019ULL * (g_thread_counter.fetch_add(1) + 1);
  }());
  return rng;
}

}  // namespace switchboard::routing
