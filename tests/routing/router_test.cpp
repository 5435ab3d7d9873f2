#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <set>
#include <thread>

#include "routing/routing.h"

namespace switchboard::routing {
namespace {

std::shared_ptr<const Config> make_config(const std::string& yaml) {
  auto load = load_config_string(yaml, "test.yaml", Environment::from_map({}));
  if (!load.ok()) {
    ADD_FAILURE() << load.errors.front().to_string();
    return std::make_shared<Config>();
  }
  return std::make_shared<const Config>(std::move(*load.config));
}

const char* kCatalog = R"(
providers:
  p1: { kind: mock }
  p2: { kind: mock }
models:
  fast:  { provider: p1, tier: speed, cost: { input_per_mtok: 0.1, output_per_mtok: 0.4 }, context_window: 16000 }
  mid:   { provider: p1, tier: balanced, cost: { input_per_mtok: 1, output_per_mtok: 4 }, context_window: 64000, strengths: [coding] }
  big:   { provider: p2, upstream: big-2025, tier: flagship, cost: { input_per_mtok: 5, output_per_mtok: 20 }, context_window: 200000, strengths: [coding, reasoning] }
  other: { provider: p2, tier: balanced, cost: { input_per_mtok: 2, output_per_mtok: 8 }, weight: 3 }
routes:
  ordered:  { strategy: ordered, layers: [[big, mid], [fast]] }
  cheapest: { strategy: cheapest, layers: [[big, mid, fast]] }
  weighted: { strategy: weighted, layers: [[mid, other]] }
  learned:  { strategy: learned, layers: [[big, mid], [fast]] }
  ab:       { strategy: learned, layers: [[mid, other]] }
)";

std::vector<std::string> models_of(const FallbackPlan& plan) {
  std::vector<std::string> out;
  for (const auto& a : plan.attempts()) out.emplace_back(a.model);
  return out;
}

TEST(RouterTest, UnknownModelIsNotFound) {
  Router r(make_config(kCatalog));
  auto plan = r.plan(RequestInfo{.model = "nope"});
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.plan(RequestInfo{.model = "p9/x"}).status().code(), StatusCode::kNotFound);
}

TEST(RouterTest, ModelNameGivesASingleAttempt) {
  Router r(make_config(kCatalog));
  auto plan = r.plan(RequestInfo{.model = "big"});
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->size(), 1u);
  EXPECT_EQ((*plan)[0].provider, "p2");
  EXPECT_EQ((*plan)[0].upstream, "big-2025");
}

TEST(RouterTest, ProviderSlashUpstreamFindsCatalogModelOrGoesDirect) {
  Router r(make_config(kCatalog));
  auto known = r.plan(RequestInfo{.model = "p2/big-2025"});
  ASSERT_TRUE(known.ok());
  EXPECT_EQ((*known)[0].model, "big");
  auto direct = r.plan(RequestInfo{.model = "p1/brand-new-model"});
  ASSERT_TRUE(direct.ok());
  EXPECT_EQ((*direct)[0].provider, "p1");
  EXPECT_EQ((*direct)[0].upstream, "brand-new-model");
}

TEST(RouterTest, OrderedKeepsLayersAsWritten) {
  Router r(make_config(kCatalog));
  auto plan = r.plan(RequestInfo{.model = "ordered"});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"big", "mid", "fast"}));
  EXPECT_EQ((*plan)[0].layer, 0);
  EXPECT_EQ((*plan)[2].layer, 1);
}

TEST(RouterTest, ContextWindowExcludesModels) {
  Router r(make_config(kCatalog));
  auto plan = r.plan(RequestInfo{.model = "ordered", .prompt_tokens = 15000, .max_tokens = 2000});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"big", "mid"}));  // fast: 16k window
  auto huge = r.plan(RequestInfo{.model = "ordered", .prompt_tokens = 300000});
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(huge.status().message().find("context window"), std::string::npos);
}

TEST(RouterTest, RequiredStrengthsFilter) {
  Router r(make_config(kCatalog));
  auto plan = r.plan(RequestInfo{.model = "ordered", .required_strengths = {"reasoning"}});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"big"}));
  auto coding = r.plan(RequestInfo{.model = "ordered", .required_strengths = {"coding"}});
  EXPECT_EQ(models_of(*coding), (std::vector<std::string>{"big", "mid"}));
}

TEST(RouterTest, CostCeilingExcludesExpensiveModels) {
  Router r(make_config(kCatalog));
  // 10k prompt + 1k output: big = 0.05 + 0.02 = $0.07, mid = $0.014, fast = $0.0014.
  auto plan = r.plan(RequestInfo{
      .model = "ordered", .prompt_tokens = 10000, .max_tokens = 1000, .max_cost_usd = 0.02});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"mid", "fast"}));
  EXPECT_NEAR((*plan)[0].estimated_cost_usd, 0.014, 1e-9);
}

TEST(RouterTest, CheapestSortsByEstimatedCost) {
  Router r(make_config(kCatalog));
  auto plan = r.plan(RequestInfo{.model = "cheapest", .prompt_tokens = 1000});
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"fast", "mid", "big"}));
}

TEST(RouterTest, WeightedFollowsWeights) {
  Router r(make_config(kCatalog));
  Rng rng(7);
  int other_first = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto plan = r.plan(RequestInfo{.model = "weighted"}, rng);
    ASSERT_EQ(plan->size(), 2u);
    other_first += (*plan)[0].model == "other";
  }
  EXPECT_NEAR(double(other_first) / n, 0.75, 0.02);  // weights 3 : 1
}

TEST(RouterTest, OpenBreakerTargetsGoLast) {
  auto cfg = make_config(kCatalog);
  Router r(cfg, [](std::string_view provider, std::string_view) { return provider == "p2"; });
  auto plan = r.plan(RequestInfo{.model = "ordered"});
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"mid", "fast", "big"}));
  EXPECT_TRUE((*plan)[2].breaker_open);
  EXPECT_FALSE((*plan)[0].breaker_open);
}

// A critical quota moves a provider's models behind the rest of their own layer (not behind
// later layers); an exhausted one sends them to the end, like an open breaker.
TEST(RouterTest, CriticalQuotaTargetsGoBehindTheirLayerAndExhaustedOnesLast) {
  auto cfg = make_config(kCatalog);
  quota::Level p1 = quota::Level::kHealthy, p2 = quota::Level::kHealthy;
  Router r(cfg, nullptr, [&](std::string_view provider) { return provider == "p1" ? p1 : p2; });
  auto plan = r.plan(RequestInfo{.model = "ordered"});  // [[big, mid], [fast]]
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"big", "mid", "fast"}));

  p2 = quota::Level::kCritical;
  plan = r.plan(RequestInfo{.model = "ordered"});
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"mid", "big", "fast"}));
  EXPECT_EQ((*plan)[1].placement, Placement::kQuotaCritical);
  EXPECT_EQ((*plan)[1].rank, 0);  // still its layer's
  EXPECT_EQ((*plan)[0].placement, Placement::kAsWritten);

  // Two critical targets of one layer keep the strategy's order among themselves.
  p2 = quota::Level::kWarning;  // warning changes no order
  p1 = quota::Level::kCritical;
  plan = r.plan(RequestInfo{.model = "cheapest"});  // fast, mid, big by cost
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"big", "fast", "mid"}));
  EXPECT_EQ((*plan)[0].quota, quota::Level::kWarning);
  EXPECT_EQ((*plan)[0].placement, Placement::kCheapest);

  p1 = quota::Level::kHealthy;
  p2 = quota::Level::kExhausted;
  plan = r.plan(RequestInfo{.model = "ordered"});
  EXPECT_EQ(models_of(*plan), (std::vector<std::string>{"mid", "fast", "big"}));
  EXPECT_EQ((*plan)[2].placement, Placement::kQuotaExhausted);
  EXPECT_EQ((*plan)[2].quota, quota::Level::kExhausted);
  EXPECT_NE(plan->to_json().find("\"quota\":\"exhausted\""), std::string::npos);
  EXPECT_NE((*plan)[2].reason().find("quota exhausted"), std::string::npos);
}

TEST(RouterTest, ComplexityHintPromotesPreferredTierLayer) {
  Router r(make_config(kCatalog));
  Rng rng(1);
  auto simple = r.plan(RequestInfo{.model = "learned", .complexity = Complexity::kSimple}, rng);
  ASSERT_TRUE(simple.ok());
  EXPECT_EQ((*simple)[0].model, "fast");
  EXPECT_DOUBLE_EQ((*simple)[0].score.tier, 1.0);
  auto critical = r.plan(RequestInfo{.model = "learned", .complexity = Complexity::kCritical}, rng);
  EXPECT_EQ((*critical)[2].model, "fast");
  // high → [flagship, balanced]: big gets full tier credit, mid half.
  auto high = r.plan(RequestInfo{.model = "learned", .complexity = Complexity::kHigh}, rng);
  for (const auto& a : high->attempts()) {
    if (a.model == "big") {
      EXPECT_DOUBLE_EQ(a.score.tier, 1.0);
    }
    if (a.model == "mid") {
      EXPECT_DOUBLE_EQ(a.score.tier, 0.5);
    }
    if (a.model == "fast") {
      EXPECT_DOUBLE_EQ(a.score.tier, 0.0);
    }
  }
}

TEST(RouterTest, ComplexityTiersAreConfigurable) {
  std::string yaml =
      std::string(kCatalog) + "routing: { complexity_tiers: { simple: [flagship] } }\n";
  Router r(make_config(yaml));
  Rng rng(3);
  auto plan = r.plan(RequestInfo{.model = "learned", .complexity = Complexity::kSimple}, rng);
  EXPECT_DOUBLE_EQ((*plan)[0].score.tier, 1.0);
  EXPECT_EQ((*plan)[0].model, "big");
}

TEST(RouterTest, PosteriorDecaysTowardPrior) {
  Router r(make_config(std::string(kCatalog) + "learning: { half_life: 10 }\n"));
  r.record(Outcome{.model = "mid", .category = "c", .reward = 1, .success = true});
  auto p = r.posterior("c", "mid");
  EXPECT_DOUBLE_EQ(p->alpha, 2.0);
  EXPECT_DOUBLE_EQ(p->beta, 1.0);
  for (int i = 0; i < 10; ++i) r.record(Outcome{.model = "mid", .category = "c", .reward = 0});
  p = r.posterior("c", "mid");
  // The one success has halved after 10 more outcomes of the pair.
  EXPECT_NEAR(p->alpha, 1.5, 1e-9);
  const double g = std::pow(2.0, -0.1);
  double expect_beta = 1.0;
  for (int i = 0; i < 10; ++i) expect_beta = 1.0 + (expect_beta - 1.0) * g + 1.0;
  EXPECT_NEAR(p->beta, expect_beta, 1e-9);
  // Other categories are untouched.
  EXPECT_DOUBLE_EQ(r.posterior("d", "mid")->alpha, 1.0);
}

// Simulated A/B: A succeeds 90%, B 60%; the learned router must settle on A, then move to B
// when A degrades to 30%, within a bound set by the half-life.
TEST(RouterTest, BanditLearnsAndAdaptsToDegradation) {
  auto cfg = make_config(std::string(kCatalog) +
                         "learning: { half_life: 100, explore: 0.05, quality_tolerance: 0.0, "
                         "weights: { success: 1, tier: 0, cost: 0, latency: 0 } }\n");
  Router r(cfg);
  Rng rng(42);
  Rng world(4242);
  double p_a = 0.9, p_b = 0.6;  // A = mid, B = other
  int a_chosen = 0;
  for (int i = 0; i < 2000; ++i) {
    auto plan = r.plan(RequestInfo{.model = "ab", .category = "code"}, rng);
    const std::string m((*plan)[0].model);
    bool ok = world.uniform() < (m == "mid" ? p_a : p_b);
    r.record(Outcome{.model = m, .category = "code", .reward = ok ? 1.0 : 0.0, .success = ok});
    if (i >= 1000) a_chosen += m == "mid";
  }
  EXPECT_GE(a_chosen, 850) << "A chosen " << a_chosen << " of the last 1000";

  p_a = 0.3;
  int shifted_at = -1;
  int window_b = 0;
  std::vector<int> recent;
  for (int i = 0; i < 1000; ++i) {
    auto plan = r.plan(RequestInfo{.model = "ab", .category = "code"}, rng);
    const std::string m((*plan)[0].model);
    bool ok = world.uniform() < (m == "mid" ? p_a : p_b);
    r.record(Outcome{.model = m, .category = "code", .reward = ok ? 1.0 : 0.0, .success = ok});
    recent.push_back(m == "other");
    window_b += recent.back();
    if (recent.size() > 50) window_b -= recent[recent.size() - 51];
    if (recent.size() >= 50 && window_b >= 40 && shifted_at < 0) shifted_at = i;
  }
  // B holds >= 80% of a 50-request window within two half-lives of A's degradation.
  ASSERT_GE(shifted_at, 0);
  EXPECT_LE(shifted_at, 200) << "shifted after " << shifted_at;
  std::printf("bandit: B took over %d decisions after A degraded\n", shifted_at);
}

TEST(RouterTest, ExplorationStaysWithinItsProbability) {
  for (double explore : {0.0, 0.1}) {
    auto cfg =
        make_config(std::string(kCatalog) + "learning: { explore: " + std::to_string(explore) +
                    ", weights: { success: 1, tier: 0, cost: 0, latency: 0 } }\n");
    Router r(cfg);
    r.import_state(
        RouterState{{Posterior{"c", "mid", 5000, 1}, Posterior{"c", "other", 1, 5000}}, {}});
    Rng rng(9);
    int b_first = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i)
      b_first += (*r.plan(RequestInfo{.model = "ab", .category = "c"}, rng))[0].model == "other";
    // Exploration shuffles the layer: B comes first in half of the explored plans.
    EXPECT_NEAR(double(b_first) / n, explore / 2, 0.01) << "explore " << explore;
  }
}

TEST(RouterTest, QualityToleranceFavoursTheCheaperGoodEnoughModel) {
  auto cfg2 = make_config(R"(
providers: { p: { kind: mock } }
models:
  cheap:    { provider: p, tier: speed, cost: { input_per_mtok: 1, output_per_mtok: 1 } }
  flagship: { provider: p, tier: flagship, cost: { input_per_mtok: 50, output_per_mtok: 50 } }
routes:
  pair: { strategy: learned, layers: [[flagship, cheap]] }
learning: { explore: 0, quality_tolerance: 0.05, weights: { success: 1, tier: 0, cost: 0.2, latency: 0 } }
)");
  Router r(cfg2);
  // Both about equally good (0.95 vs 0.96): the cheap one should lead nearly always.
  r.import_state(
      RouterState{{Posterior{"c", "cheap", 950, 50}, Posterior{"c", "flagship", 960, 40}}, {}});
  Rng rng(5);
  int cheap_first = 0;
  for (int i = 0; i < 2000; ++i)
    cheap_first +=
        (*r.plan(RequestInfo{.model = "pair", .category = "c"}, rng))[0].model == "cheap";
  EXPECT_GE(cheap_first, 1900);
  // The cheap one clearly worse (0.6): the flagship leads.
  r.import_state(RouterState{{Posterior{"c", "cheap", 600, 400}}, {}});
  int flagship_first = 0;
  for (int i = 0; i < 2000; ++i)
    flagship_first +=
        (*r.plan(RequestInfo{.model = "pair", .category = "c"}, rng))[0].model == "flagship";
  EXPECT_GE(flagship_first, 1950);
}

TEST(RouterTest, ReplayedOutcomesAreNotCountedTwice) {
  auto cfg = make_config(kCatalog);
  Router r(cfg);
  for (uint64_t id = 1; id <= 5; ++id)
    r.record(Outcome{.id = id,
                     .model = "mid",
                     .category = "c",
                     .reward = 1,
                     .success = true,
                     .latency_us = 1000,
                     .cost_usd = 0.01});
  RouterState saved = r.export_state();
  Router restarted(cfg);
  restarted.import_state(saved);
  // Replay of everything up to id 7: only 6 and 7 are new.
  for (uint64_t id = 1; id <= 7; ++id)
    restarted.record(Outcome{.id = id,
                             .model = "mid",
                             .category = "c",
                             .reward = 1,
                             .success = true,
                             .latency_us = 1000,
                             .cost_usd = 0.01});
  EXPECT_EQ(restarted.posterior("c", "mid")->outcomes, 7u);
  EXPECT_EQ(restarted.stats("mid")->requests, 7u);
  EXPECT_NEAR(restarted.stats("mid")->spend_usd, 0.07, 1e-9);
  EXPECT_EQ(restarted.posterior("c", "mid")->last_outcome_id, 7u);
}

TEST(RouterTest, ClientErrorsDoNotTeachTheBandit) {
  Router r(make_config(kCatalog));
  r.record(Outcome{.model = "mid", .category = "c", .reward = 0, .counts_for_learning = false});
  EXPECT_EQ(r.posterior("c", "mid")->outcomes, 0u);
  EXPECT_EQ(r.stats("mid")->requests, 1u);
}

TEST(RouterTest, StatisticsTrackLatencyAndSpend) {
  Router r(make_config(kCatalog));
  for (int i = 0; i < 1000; ++i)
    r.record(Outcome{.model = "fast",
                     .category = "c",
                     .reward = 1,
                     .success = i % 4 != 0,
                     .latency_us = (i % 100 == 0) ? 100000 : 1000 + (i % 10) * 100,
                     .tokens_in = 10,
                     .tokens_out = 5,
                     .cost_usd = 0.001});
  auto s = r.stats("fast");
  EXPECT_EQ(s->requests, 1000u);
  EXPECT_NEAR(s->success_rate(), 0.75, 1e-9);
  EXPECT_EQ(s->tokens_in, 10000);
  EXPECT_NEAR(s->spend_usd, 1.0, 1e-9);
  EXPECT_GT(s->latency_ewma_us, 1000);
  EXPECT_LT(s->latency_ewma_us, 20000);
  EXPECT_GE(s->latency_p95_us, 1400);  // the body of the distribution tops out at 1900
  EXPECT_LT(s->latency_p95_us, 100000);
}

TEST(RouterTest, CategoriesAreBounded) {
  Router r(make_config(kCatalog));
  for (int i = 0; i < 3000; ++i)
    r.record(Outcome{.model = "mid", .category = "cat-" + std::to_string(i), .reward = 1});
  std::set<std::string> cats;
  for (const auto& p : r.export_state().posteriors) cats.insert(p.category);
  EXPECT_LE(cats.size(), Router::kMaxCategories + 1);
  EXPECT_TRUE(cats.count("other"));
}

TEST(RouterTest, PlanJsonNamesEveryAttempt) {
  Router r(make_config(kCatalog));
  auto plan = r.plan(RequestInfo{.model = "ordered", .category = "debug \"x\""});
  std::string json = plan->to_json();
  EXPECT_NE(json.find("\"route\":\"ordered\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"category\":\"debug \\\"x\\\"\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"model\":\"fast\""), std::string::npos);
  EXPECT_NE(json.find("\"reason\":"), std::string::npos);
}

// Invariant 4: each request owns its plan. Concurrent failures recorded by other requests never
// change a plan already made, and concurrent planning and recording is race-free (TSan).
TEST(RouterTest, ConcurrentPlansAreIndependent) {
  auto cfg = make_config(kCatalog);
  Router r(cfg);
  std::atomic<int> violations{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      Rng rng(100 + t);
      for (int i = 0; i < 2000; ++i) {
        auto plan =
            r.plan(RequestInfo{.model = "learned", .category = "c" + std::to_string(i % 3)}, rng);
        if (!plan.ok()) {
          violations++;
          continue;
        }
        auto before = models_of(*plan);
        // This request fails on its first attempt; others do the same concurrently.
        r.record(Outcome{
            .model = std::string((*plan)[0].model), .category = plan->category(), .reward = 0});
        if (models_of(*plan) != before || plan->size() != 3) violations++;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(violations.load(), 0);
  uint64_t total = 0;
  for (const auto& p : r.export_state().posteriors) total += p.outcomes;
  EXPECT_EQ(total, 8u * 2000u);
}

TEST(RngTest, BetaSamplesHaveTheRightMean) {
  Rng rng(11);
  for (auto [a, b] : {std::pair{2.0, 5.0}, {0.5, 0.5}, {90.0, 10.0}}) {
    double sum = 0;
    const int n = 200000;
    for (int i = 0; i < n; ++i) {
      double x = rng.beta(a, b);
      ASSERT_GE(x, 0.0);
      ASSERT_LE(x, 1.0);
      sum += x;
    }
    EXPECT_NEAR(sum / n, a / (a + b), 0.005) << a << "," << b;
  }
}

}  // namespace
}  // namespace switchboard::routing
