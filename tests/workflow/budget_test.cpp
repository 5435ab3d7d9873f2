// Run budgets (issue 26): steps, tokens, spend and time, counted from the durable records; the
// engine's ceiling; a time limit that interrupts the running step.
#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <future>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::FakeExecutor;
using wftest::Gate;
using wftest::must_parse;
using wftest::query_int;
using wftest::query_text;
using wftest::TempDir;

struct Harness {
  TempDir dir;
  ManualClock clock;
  std::shared_ptr<FakeSleeper> sleeper = std::make_shared<FakeSleeper>(clock);

  std::unique_ptr<Engine> open(std::shared_ptr<StepExecutor> exec, RunBudget ceiling = {},
                               std::shared_ptr<StepExecutor> llm = nullptr) {
    EngineOptions o;
    o.db_path = db();
    o.clock = &clock;
    o.sleeper = sleeper;
    o.executors.exec = std::move(exec);
    o.executors.llm = std::move(llm);
    o.owner = "test";
    o.poll = Millis(5);
    o.budget = ceiling;
    auto e = Engine::open(std::move(o));
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    return std::move(*e);
  }
  std::string db() const { return dir.file("wf.db"); }
  std::string steps_called(const std::string& run_id) const {
    return query_text(db(),
                      "SELECT group_concat(step_id || '=' || status, ',') FROM (SELECT step_id, "
                      "status FROM workflow_steps WHERE run_id = '" +
                          run_id + "' ORDER BY seq)");
  }
};

std::shared_ptr<FakeExecutor> ok_executor() {
  return std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    return Result<json::value>(json::value(r.step_id));
  });
}

std::string three_steps(const std::string& budget) {
  return "name: b\nbudget: " + budget +
         "\nsteps:\n"
         "  - { id: a, kind: exec, input: { argv: [a] } }\n"
         "  - { id: b, kind: exec, input: { argv: [b] }, on_failure: continue }\n"
         "  - { id: c, kind: exec, input: { argv: [c] } }\n";
}

TEST(BudgetTest, TwoStepsStopAThreeStepRunBeforeStepThree) {
  Harness h;
  auto ex = ok_executor();
  auto e = h.open(ex);
  auto id = e->create_run(must_parse(three_steps("{ max_steps: 2 }")), nullptr);
  ASSERT_TRUE(id.ok());
  auto r = e->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kFailed);
  EXPECT_EQ(r->error, "budget exhausted: max_steps 2 reached");
  EXPECT_EQ(ex->count("c"), 0) << "a step started past the budget";
  EXPECT_EQ(h.steps_called(*id), "a=completed,b=completed");
  EXPECT_EQ(query_text(h.db(),
                       "SELECT detail FROM workflow_events WHERE type = "
                       "'budget_exhausted'"),
            "budget exhausted: max_steps 2 reached");
  EXPECT_EQ(query_text(h.db(), "SELECT status || ': ' || error FROM workflow_runs"),
            "failed: budget exhausted: max_steps 2 reached");
}

TEST(BudgetTest, RetriesCountAsStepsAndOnFailureContinueDoesNotEscapeTheBudget) {
  Harness h;
  std::atomic<int> calls{0};
  auto flaky = std::make_shared<FakeExecutor>([&](const StepRequest&, const Interrupt&) {
    ++calls;
    return Result<json::value>(Status::unavailable("flaky"));
  });
  auto e = h.open(flaky);
  auto id = e->create_run(
      must_parse("name: r\nbudget: { max_steps: 3 }\nsteps:\n"
                 "  - { id: a, kind: exec, input: { argv: [a] }, on_failure: continue, retry: { "
                 "max_attempts: 10, initial_ms: 1 } }\n"
                 "  - { id: b, kind: exec, input: { argv: [b] } }\n"),
      nullptr);
  ASSERT_TRUE(id.ok());
  auto r = e->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kFailed);
  EXPECT_EQ(r->error, "budget exhausted: max_steps 3 reached");
  EXPECT_EQ(calls.load(), 3);
  EXPECT_EQ(flaky->count("b"), 0);
  // The step waiting for its retry is recorded failed with the reason, not left waiting.
  EXPECT_EQ(query_text(h.db(), "SELECT status || ': ' || error FROM workflow_steps"),
            "failed: budget exhausted: max_steps 3 reached");
}

TEST(BudgetTest, TheEnginesCeilingBoundsEveryDefinition) {
  Harness h;
  auto ex = ok_executor();
  RunBudget ceiling;
  ceiling.max_steps = 1;
  auto e = h.open(ex, ceiling);
  // A looser (or absent) budget in the definition does not lift the ceiling...
  auto loose = e->create_run(must_parse(three_steps("{ max_steps: 100 }")), nullptr);
  ASSERT_TRUE(loose.ok());
  auto r = e->run(*loose);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->error, "budget exhausted: max_steps 1 reached");
  EXPECT_EQ(ex->calls().size(), 1u);

  RunBudget a, b;
  a.max_steps = 5;
  a.max_cost_usd = 2.5;
  b.max_steps = 3;
  b.max_time_ms = 100;
  const RunBudget t = a.tightest(b);
  EXPECT_EQ(t.max_steps, 3);
  EXPECT_EQ(t.max_cost_usd, 2.5);
  EXPECT_EQ(t.max_time_ms, 100);
  EXPECT_EQ(t.max_tokens, 0);
}

TEST(BudgetTest, AParallelFanOutCountsEachBranch) {
  Harness h;
  auto ex = ok_executor();
  auto e = h.open(ex);
  auto id =
      e->create_run(must_parse("name: p\nbudget: { max_steps: 3 }\nsteps:\n"
                               "  - id: fan\n    kind: parallel\n    for_each: ${input.items}\n"
                               "    max_concurrency: 1\n"
                               "    step: { kind: exec, input: { argv: ['${item}'] } }\n"),
                    json::parse(R"({"items": ["x", "y", "z", "w"]})"));
  ASSERT_TRUE(id.ok());
  auto r = e->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kFailed);
  EXPECT_EQ(r->error, "budget exhausted: max_steps 3 reached");
  EXPECT_EQ(ex->calls().size(), 2u) << "the fan-out step and two branches make three";
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_steps WHERE step_id = 'fan'"),
            "failed");
}

// The count is the records': a resume after the executor stopped mid-run continues it.
TEST(BudgetTest, AResumeContinuesTheCount) {
  Harness h;
  Gate gate;
  auto blocking = std::make_shared<FakeExecutor>([&](const StepRequest& r, const Interrupt& i) {
    if (r.step_id != "b") return Result<json::value>(json::value(r.step_id));
    gate.pass();
    return Result<json::value>(i.check().ok() ? Status::internal("not interrupted") : i.check());
  });
  auto first = h.open(blocking);
  auto id = first->create_run(must_parse(three_steps("{ max_steps: 2 }")), nullptr);
  ASSERT_TRUE(id.ok());
  auto running = std::async(std::launch::async, [&] { return first->run(*id); });
  ASSERT_TRUE(gate.arrived());
  first->shutdown();  // as at a crash: b was running; the claim is handed back
  gate.open();
  EXPECT_FALSE(running.get().ok());
  first.reset();

  auto ex = ok_executor();
  auto second = h.open(ex);
  auto r = second->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kFailed);
  EXPECT_EQ(r->error, "budget exhausted: max_steps 2 reached")
      << "a and b's first attempt already used the budget";
  EXPECT_EQ(ex->calls().size(), 0u);
}

class UsageLlm final : public LlmCaller {
 public:
  Result<HttpReply> complete(const std::string&, const std::string&,
                             const std::vector<std::pair<std::string, std::string>>&, int64_t,
                             const Interrupt&) override {
    ++calls;
    HttpReply r;
    r.status = 200;
    r.body = R"({"choices":[{"message":{"content":"ok"},"finish_reason":"stop"}],)"
             R"("usage":{"prompt_tokens":400,"completion_tokens":200,"total_tokens":600}})";
    r.headers.emplace_back("x-switchboard-cost-usd", "0.012000000");
    return r;
  }
  std::atomic<int> calls{0};
};

std::string three_llm_steps(const std::string& budget) {
  std::string d = "name: t\nbudget: " + budget + "\nsteps:\n";
  for (const char* s : {"one", "two", "three"})
    d += std::string("  - { id: ") + s +
         ", kind: llm, input: { model: m, messages: [{ role: user, content: hi }] } }\n";
  return d;
}

TEST(BudgetTest, TokensAndSpendOfLlmStepsCount) {
  for (const auto& [budget, error] : std::vector<std::pair<std::string, std::string>>{
           {"{ max_tokens: 1000 }", "budget exhausted: max_tokens 1000 reached (1200 used)"},
           {"{ max_cost_usd: 0.02 }",
            "budget exhausted: max_cost_usd 0.02 reached ($0.024000 spent)"}}) {
    Harness h;
    auto llm = std::make_shared<UsageLlm>();
    auto e = h.open(ok_executor(), {}, make_llm_executor(llm));
    auto id = e->create_run(must_parse(three_llm_steps(budget)), nullptr);
    ASSERT_TRUE(id.ok());
    auto r = e->run(*id);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r->status, RunStatus::kFailed) << budget;
    EXPECT_EQ(r->error, error);
    EXPECT_EQ(llm->calls.load(), 2) << budget;
    auto detail = e->get_run(*id);
    ASSERT_TRUE(detail.ok());
    EXPECT_DOUBLE_EQ(detail->steps[0].output.at("cost_usd").as_double(), 0.012);
  }
}

// The time limit is a deadline on the run: it interrupts a step that is running (a real exec
// child, killed), not only the next one.
TEST(BudgetTest, ATimeBudgetInterruptsTheRunningStep) {
  TempDir dir;
  EngineOptions o;
  o.db_path = dir.file("wf.db");
  o.owner = "test";
  o.poll = Millis(5);
  auto e = Engine::open(std::move(o));
  ASSERT_TRUE(e.ok()) << e.status().to_string();
  auto id =
      (*e)->create_run(must_parse("name: slow\nbudget: { max_time_ms: 500 }\nsteps:\n"
                                  "  - { id: nap, kind: exec, input: { argv: [sleep, '5'] } }\n"
                                  "  - { id: after, kind: exec, input: { argv: ['true'] } }\n"),
                       nullptr);
  ASSERT_TRUE(id.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto r = (*e)->run(*id);
  const auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kFailed);
  EXPECT_EQ(r->error, "budget exhausted: max_time_ms 500 reached");
  EXPECT_LT(took, std::chrono::seconds(4)) << "the 5 s step ran to its end";
  EXPECT_EQ(query_text(dir.file("wf.db"),
                       "SELECT step_id || '=' || status FROM workflow_steps ORDER BY seq"),
            "nap=failed");
  EXPECT_EQ(query_int(dir.file("wf.db"),
                      "SELECT count(*) FROM workflow_events WHERE type = 'budget_exhausted'"),
            1);
}

TEST(BudgetTest, BadBudgetsAreRefusedWithTheirLine) {
  auto load = parse_definition(
      "name: x\nbudget: { max_steps: -1, max_minutes: 3 }\nsteps:\n"
      "  - { id: a, kind: exec, input: { argv: [a] } }\n",
      "x.yaml");
  ASSERT_FALSE(load.ok());
  std::string all;
  for (const auto& err : load.errors) all += err.to_string() + "\n";
  EXPECT_NE(all.find("x.yaml:2:"), std::string::npos) << all;
  EXPECT_NE(all.find("budget.max_steps"), std::string::npos) << all;
  EXPECT_NE(all.find("max_minutes"), std::string::npos) << all;
}

}  // namespace
}  // namespace switchboard::workflow
