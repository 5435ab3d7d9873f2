// Routing hot paths: planning a learned route and recording an outcome.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

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

// A user message as coding agents send them: a pasted trace in a fence and a question.
RequestText typical_text() {
  TextScanner s;
  s.begin_message();
  s.set_role("system");
  s.text("You are a coding assistant. Answer with code when you can.");
  s.end_message();
  s.begin_message();
  s.set_role("user");
  std::string msg =
      "I'm getting this when I run the tests:\n```python\nTraceback (most recent call "
      "last):\n  File \"/srv/app/main.py\", line 88, in handle\n    result = "
      "payload[\"id\"]\nKeyError: 'id'\n```\n";
  for (int i = 0; i < 6; ++i) msg += "The payload comes from the queue consumer and is a dict. ";
  s.text(msg + "how do I fix it?");
  s.end_message();
  return s.result();
}

// The one-pass scan's share and the features: what a request pays before planning.
void BM_FeaturesScanAndBuild(benchmark::State& state) {
  std::string msg = "I'm getting this when I run the tests:\n```python\nKeyError: 'id'\n```\n";
  for (int i = 0; i < 16; ++i) msg += "The payload comes from the queue consumer and is a dict. ";
  for (auto _ : state) {
    TextScanner s;
    s.begin_message();
    s.set_role("user");
    s.text(msg);
    s.end_message();
    auto v = build_features(s.result(), {"", "", 42, "OpenAI/Python 1.40"});
    benchmark::DoNotOptimize(v);
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(msg.size()));
}
BENCHMARK(BM_FeaturesScanAndBuild);

// Planning a learned route without a category hint, by its contextual models (warm), beside
// BM_PlannerPlan (the category posteriors). Reports the 99th percentile of single plans.
void BM_PlannerPlanContextual(benchmark::State& state) {
  Router router(twenty_model_config(), [](std::string_view, std::string_view) { return false; });
  RequestInfo req{.model = "auto", .prompt_tokens = 800, .max_tokens = 400};
  req.features = build_features(typical_text(), {"", "", 42, "OpenAI/Python 1.40"});
  for (int i = 0; i < 20; ++i)
    for (int k = 0; k < 50; ++k) {
      Outcome o{.model = "m" + std::to_string(i), .reward = (k % 3) ? 1.0 : 0.0};
      o.route = "auto";
      o.features = req.features;
      router.record(o);
    }
  Rng rng(1);
  std::vector<double> ns;
  ns.reserve(1 << 20);
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    auto plan = router.plan(req, rng);
    benchmark::DoNotOptimize(plan);
    if (ns.size() < ns.capacity())
      ns.push_back(double((std::chrono::steady_clock::now() - t0).count()));
  }
  if (!ns.empty()) {
    std::sort(ns.begin(), ns.end());
    state.counters["p50_ns"] = ns[ns.size() / 2];
    state.counters["p99_ns"] = ns[ns.size() * 99 / 100];
  }
  auto plan = router.plan(req, rng);
  if (!plan.ok() || !(*plan)[0].score.contextual) state.SkipWithError("not a contextual plan");
}
BENCHMARK(BM_PlannerPlanContextual);

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
