// Routing hot paths: planning a learned route and recording an outcome.
#include <benchmark/benchmark.h>

#include <string>

#include "routing/routing.h"

namespace switchboard::routing {
namespace {

std::shared_ptr<const Config> twenty_model_config() {
  std::string yaml = "providers: { p1: { kind: mock }, p2: { kind: mock } }\nmodels:\n";
  const char* tiers[] = {"speed", "balanced", "flagship"};
  for (int i = 0; i < 20; ++i) {
    yaml += "  m" + std::to_string(i) + ": { provider: p" + std::to_string(1 + i % 2) +
            ", tier: " + tiers[i % 3] +
            ", cost: { input_per_mtok: " + std::to_string(0.1 * (i + 1)) +
            ", output_per_mtok: " + std::to_string(0.4 * (i + 1)) + " } }\n";
  }
  yaml += "routes:\n  auto:\n    strategy: learned\n    layers: [";
  for (int l = 0; l < 3; ++l) {
    yaml += l ? ", [" : "[";
    for (int i = l * 7; i < std::min(20, l * 7 + 7); ++i)
      yaml += (i == l * 7 ? "m" : ", m") + std::to_string(i);
    yaml += "]";
  }
  yaml += "]\n";
  auto load = load_config_string(yaml, "bench", Environment::from_map({}));
  return std::make_shared<const Config>(std::move(*load.config));
}

// 50 outcomes per model in category "coding".
void train(Router& router) {
  for (int i = 0; i < 20; ++i)
    for (int k = 0; k < 50; ++k)
      router.record(Outcome{.model = "m" + std::to_string(i),
                            .category = "coding",
                            .reward = (k % 3) ? 1.0 : 0.0,
                            .latency_us = 1000 + i * 100});
}

// Plans one learned request per iteration on `router`, trained first.
void plan_trained(benchmark::State& state, Router& router) {
  train(router);
  RequestInfo req{.model = "auto", .category = "coding", .prompt_tokens = 800, .max_tokens = 400};
  Rng rng(1);
  for (auto _ : state) {
    auto plan = router.plan(req, rng);
    benchmark::DoNotOptimize(plan);
  }
}

void BM_PlannerPlan(benchmark::State& state) {
  Router router(twenty_model_config(), [](std::string_view, std::string_view) { return false; });
  plan_trained(state, router);
}
BENCHMARK(BM_PlannerPlan);

// The same plan with provider quotas configured: every candidate asks its provider's standing
// (with 96 of 100 used, p1 is critical: half the candidates move behind their layers).
void BM_PlannerPlanWithQuotas(benchmark::State& state) {
  auto config = twenty_model_config();
  std::vector<ProviderConfig> providers = config->providers;
  providers[0].quota.requests = 100;
  const WallTime now = std::chrono::system_clock::now();
  quota::QuotaBook book;
  book.configure(providers, now);
  book.add(providers[0].name, quota::Usage{int64_t(state.range(0)), 0, 0}, now);
  Router router(
      config, [](std::string_view, std::string_view) { return false; },
      [&book, now](std::string_view provider) { return book.level(provider, now); });
  plan_trained(state, router);
}
BENCHMARK(BM_PlannerPlanWithQuotas)->Arg(0)->Arg(96);

void BM_BanditRecord(benchmark::State& state) {
  Router router(twenty_model_config());
  Outcome o{.model = "m7",
            .category = "coding",
            .reward = 1,
            .success = true,
            .latency_us = 1500,
            .tokens_in = 100,
            .tokens_out = 50,
            .cost_usd = 0.0001};
  for (auto _ : state) {
    router.record(o);
    o.reward = 1.0 - o.reward;
  }
}
BENCHMARK(BM_BanditRecord);

}  // namespace
}  // namespace switchboard::routing
