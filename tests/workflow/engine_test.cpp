// The durable executor with fake executors, a ManualClock and a FakeSleeper.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <future>
#include <system_error>
#include <thread>

#include "test_util.h"

namespace switchboard::workflow {
namespace {

using wftest::eventually;
using wftest::FakeExecutor;
using wftest::Gate;
using wftest::must_parse;
using wftest::query_int;
using wftest::query_text;
using wftest::Signal;
using wftest::TempDir;

struct Harness {
  TempDir dir;
  ManualClock clock;
  std::shared_ptr<FakeSleeper> sleeper = std::make_shared<FakeSleeper>(clock);
  std::vector<std::string> lines;
  std::mutex lines_mu;
  std::function<void(EngineOptions&)> tweak;  // applied last, by open()

  std::unique_ptr<Engine> open(std::shared_ptr<StepExecutor> exec, std::string owner = "test") {
    EngineOptions o;
    o.db_path = dir.file("wf.db");
    o.clock = &clock;
    o.sleeper = sleeper;
    o.executors.exec = std::move(exec);
    o.owner = std::move(owner);
    o.seed = 42;
    o.poll = Millis(10);
    o.on_transition = [this](const Transition& t) {
      std::lock_guard lock(lines_mu);
      lines.push_back(t.to_line());
    };
    if (tweak) tweak(o);
    auto e = Engine::open(std::move(o));
    EXPECT_TRUE(e.ok()) << e.status().to_string();
    return std::move(*e);
  }
  std::string db() const { return dir.file("wf.db"); }
};

std::shared_ptr<FakeExecutor> echo_executor() {
  return std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    json::object o;
    o["echo"] = r.input;
    o["attempt"] = r.attempt;
    return Result<json::value>(json::value(std::move(o)));
  });
}

TEST(EngineTest, RunsStepsOnceAndPassesOutputsOn) {
  Harness h;
  auto ex = echo_executor();
  auto engine = h.open(ex);
  Definition def = must_parse(R"(name: chain
steps:
  - id: a
    kind: exec
    input: { argv: ["${input.word}"] }
  - id: b
    kind: exec
    input: { argv: ["${steps.a.output.echo.argv[0]}-b", "${attempt}"] }
)");
  auto id = engine->create_run(def, json::parse(R"({"word": "hi"})"));
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  auto res = engine->run(*id);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kCompleted);
  auto calls = ex->calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[1].input, json::parse(R"({"argv": ["hi-b", 1]})"));
  // Running again executes nothing: every step is recorded completed.
  auto again = engine->run(*id);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, RunStatus::kCompleted);
  EXPECT_EQ(ex->calls().size(), 2u);
  // Every transition has its audit event, and the run is released.
  EXPECT_EQ(query_int(h.db(), "SELECT count(*) FROM workflow_events WHERE type = 'step_completed'"),
            2);
  EXPECT_EQ(query_text(h.db(), "SELECT coalesce(owner, 'none') FROM workflow_runs"), "none");
  auto detail = engine->get_run(*id);
  ASSERT_TRUE(detail.ok());
  ASSERT_EQ(detail->steps.size(), 2u);
  EXPECT_EQ(detail->steps[1].output.as_object().at("echo"),
            json::parse(R"({"argv": ["hi-b", 1]})"));
  EXPECT_NE(format_run(*detail, false).find("completed"), std::string::npos);
  auto list = engine->list_runs();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_NE(format_runs(*list, true).find("\"status\":\"completed\""), std::string::npos);
}

TEST(EngineTest, RetriesFollowTheBackoffBounds) {
  Harness h;
  std::atomic<int> n{0};
  auto ex = std::make_shared<FakeExecutor>([&](const StepRequest& r, const Interrupt&) {
    if (++n < 5)
      return Result<json::value>(Status::unavailable("flaky " + std::to_string(r.attempt)));
    return Result<json::value>(json::value(r.attempt));
  });
  auto engine = h.open(ex);
  Definition def = must_parse(R"(name: retry
steps:
  - id: a
    kind: exec
    retry: { max_attempts: 5, initial_ms: 100, multiplier: 2, max_ms: 500, jitter: 0.2 }
    input: { argv: [x] }
)");
  auto id = engine->create_run(def, nullptr);
  ASSERT_TRUE(id.ok());
  auto before = h.clock.wall_now();
  auto res = engine->run(*id);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kCompleted);
  auto waits = h.sleeper->waits();
  ASSERT_EQ(waits.size(), 4u);
  const int64_t base[] = {100, 200, 400, 500};
  for (int i = 0; i < 4; ++i) {
    EXPECT_GE(waits[i].count(), base[i]) << i;
    EXPECT_LE(waits[i].count(), base[i] * 1.2 + 1) << i;
  }
  EXPECT_GE(h.clock.wall_now() - before, Millis(1200));  // simulated, not slept
  auto calls = ex->calls();
  ASSERT_EQ(calls.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(calls[i].attempt, i + 1);
  EXPECT_EQ(query_int(h.db(), "SELECT count(*) FROM workflow_events WHERE type = 'step_retrying'"),
            4);

  // Exhausted attempts fail the step and the run (never left running).
  n = -100;
  auto id2 = engine->create_run(def, nullptr);
  auto res2 = engine->run(*id2);
  ASSERT_TRUE(res2.ok());
  EXPECT_EQ(res2->status, RunStatus::kFailed);
  EXPECT_NE(res2->error.find("step a failed: flaky 5"), std::string::npos) << res2->error;
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_runs WHERE id = '" + *id2 + "'"),
            "failed");
}

TEST(EngineTest, WhenAndOnFailurePaths) {
  Harness h;
  auto ex = std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    const auto& argv = r.input.as_object().at("argv").as_array();
    if (argv[0] == "fail") return Result<json::value>(Status::unavailable("boom"));
    return Result<json::value>(json::value(argv[0]));
  });
  auto engine = h.open(ex);
  Definition def = must_parse(R"(name: flow
steps:
  - id: check
    kind: exec
    input: { argv: ["${input.mode}"] }
  - id: only_fast
    kind: exec
    when: ${steps.check.output} == "fast"
    input: { argv: [fast-path] }
  - id: only_slow
    kind: exec
    when: ${steps.check.output} == slow
    input: { argv: [slow-path] }
  - id: tolerated
    kind: exec
    on_failure: continue
    input: { argv: [fail] }
  - id: jumper
    kind: exec
    on_failure: goto:cleanup
    when: ${steps.tolerated.status} == failed
    input: { argv: [fail] }
  - id: skipped_by_goto
    kind: exec
    input: { argv: [never] }
  - id: cleanup
    kind: exec
    input: { argv: ["cleanup-${steps.jumper.status}"] }
)");
  auto id = engine->create_run(def, json::parse(R"({"mode": "fast"})"));
  auto res = engine->run(*id);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kCompleted) << res->error;
  EXPECT_EQ(ex->count("only_fast"), 1);
  EXPECT_EQ(ex->count("only_slow"), 0);
  EXPECT_EQ(ex->count("tolerated"), 1);
  EXPECT_EQ(ex->count("jumper"), 1);
  EXPECT_EQ(ex->count("skipped_by_goto"), 0);
  auto d = engine->get_run(*id);
  std::map<std::string, std::string> st;
  for (const auto& s : d->steps) st[s.step_id] = s.status;
  EXPECT_EQ(st["only_slow"], "skipped");
  EXPECT_EQ(st["tolerated"], "failed");
  EXPECT_EQ(st["skipped_by_goto"], "skipped");
  EXPECT_EQ(st["cleanup"], "completed");
  EXPECT_EQ(d->steps.back().output, json::value("cleanup-failed"));

  // A failing step with the default on_failure fails the run right there.
  Definition fail_def = must_parse(R"(name: f
steps:
  - { id: x, kind: exec, input: { argv: [fail] } }
  - { id: y, kind: exec, input: { argv: [ok] } }
)");
  auto id2 = engine->create_run(fail_def, nullptr);
  auto res2 = engine->run(*id2);
  ASSERT_TRUE(res2.ok());
  EXPECT_EQ(res2->status, RunStatus::kFailed);
  EXPECT_EQ(ex->count("y"), 0);
}

TEST(EngineTest, ParallelFanInReportsEveryFailedBranch) {
  Harness h;
  auto ex = std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    int64_t i = r.input.as_object().at("argv").as_array()[0].as_int64();
    // Uneven durations so that late branches finish after early failures.
    std::this_thread::sleep_for(Millis((i * 7) % 11));
    if (i == 2 || i == 5 || i == 9)
      return Result<json::value>(Status::unavailable("bad " + std::to_string(i)));
    return Result<json::value>(json::value(i * 10));
  });
  auto engine = h.open(ex);
  Definition def = must_parse(R"(name: fan
steps:
  - id: fan
    kind: parallel
    for_each: ${input.items}
    max_concurrency: 4
    step:
      kind: exec
      input: { argv: ["${item}"] }
  - id: after
    kind: exec
    input: { argv: [99] }
)");
  auto id = engine->create_run(def, json::parse(R"({"items": [0,1,2,3,4,5,6,7,8,9]})"));
  auto res = engine->run(*id);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kFailed);
  EXPECT_EQ(ex->calls().size(), 10u);
  EXPECT_EQ(ex->count("after"), 0);
  std::string err = query_text(h.db(), "SELECT error FROM workflow_steps WHERE step_id = 'fan'");
  EXPECT_NE(err.find("3 of 10 branches failed"), std::string::npos) << err;
  for (int i : {2, 5, 9})
    EXPECT_NE(err.find("fan[" + std::to_string(i) + "]: bad " + std::to_string(i)),
              std::string::npos)
        << err;
  for (int i : {0, 1, 3, 4, 6, 7, 8})
    EXPECT_EQ(err.find("fan[" + std::to_string(i) + "]"), std::string::npos) << err;
  EXPECT_EQ(query_int(h.db(),
                      "SELECT count(*) FROM workflow_steps WHERE step_id LIKE 'fan[%' AND status = "
                      "'completed'"),
            7);
  EXPECT_EQ(query_int(h.db(), "SELECT output FROM workflow_steps WHERE step_id = 'fan[8]'"), 80);
  // No branch wrote after the fan-in was recorded.
  int64_t fan_done = query_int(
      h.db(), "SELECT id FROM workflow_events WHERE step_id = 'fan' AND type = 'step_failed'");
  int64_t last_child =
      query_int(h.db(), "SELECT max(id) FROM workflow_events WHERE step_id LIKE 'fan[%'");
  EXPECT_GT(fan_done, 0);
  EXPECT_LT(last_child, fan_done);
  int64_t fan_finished =
      query_int(h.db(), "SELECT finished_ms FROM workflow_steps WHERE step_id = 'fan'");
  EXPECT_LE(
      query_int(h.db(), "SELECT max(finished_ms) FROM workflow_steps WHERE step_id LIKE 'fan[%'"),
      fan_finished);
  auto out =
      json::parse(query_text(h.db(), "SELECT output FROM workflow_steps WHERE step_id = 'fan'"));
  ASSERT_TRUE(out.is_array());
  EXPECT_EQ(out.as_array()[3], json::value(30));
  EXPECT_TRUE(out.as_array()[2].is_null());
}

TEST(EngineTest, ParallelBranchesListTheFailedBranch) {
  Harness h;
  std::atomic<bool> fail_b{true};
  auto ex = std::make_shared<FakeExecutor>([&](const StepRequest& r, const Interrupt&) {
    if (r.step_id == "p.b" && fail_b) return Result<json::value>(Status::unavailable("b down"));
    return Result<json::value>(json::value(r.step_id));
  });
  auto engine = h.open(ex);
  Definition def = must_parse(R"(name: br
steps:
  - id: p
    kind: parallel
    branches:
      - { id: a, kind: exec, input: { argv: [a] } }
      - { id: b, kind: exec, input: { argv: [b] } }
)");
  auto id = engine->create_run(def, nullptr);
  auto res = engine->run(*id);
  ASSERT_TRUE(res.ok());
  EXPECT_EQ(res->status, RunStatus::kFailed);
  EXPECT_NE(res->error.find("p.b: b down"), std::string::npos) << res->error;
  EXPECT_EQ(ex->count("p.a"), 1);
}

// A client's max_concurrency cannot make the gateway start a thread per item.
TEST(EngineTest, ParallelConcurrencyIsBoundedByMaxParallel) {
  EXPECT_EQ(EngineOptions{}.max_parallel, 64);
  Harness h;
  h.tweak = [](EngineOptions& o) { o.max_parallel = 8; };
  std::atomic<int> running{0}, most{0};
  auto ex = std::make_shared<FakeExecutor>([&](const StepRequest& r, const Interrupt&) {
    int now = ++running;
    for (int m = most.load(); now > m && !most.compare_exchange_weak(m, now);) {
    }
    std::this_thread::sleep_for(Millis(2));
    --running;
    return Result<json::value>(r.input.as_object().at("argv").as_array()[0]);
  });
  auto engine = h.open(ex);
  Definition def = must_parse(R"(name: wide
steps:
  - id: fan
    kind: parallel
    for_each: ${input.items}
    max_concurrency: 100000
    step:
      kind: exec
      input: { argv: ["${item}"] }
)");
  json::array items;
  for (int i = 0; i < 200; ++i) items.push_back(i);
  json::object input;
  input["items"] = std::move(items);
  auto id = engine->create_run(def, input);
  ASSERT_TRUE(id.ok()) << id.status().to_string();
  auto res = engine->run(*id);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kCompleted) << res->error;
  EXPECT_EQ(ex->calls().size(), 200u);
  EXPECT_LE(most.load(), 8);
  EXPECT_GT(most.load(), 1);  // still parallel
  auto out =
      json::parse(query_text(h.db(), "SELECT output FROM workflow_steps WHERE step_id = 'fan'"));
  ASSERT_EQ(out.as_array().size(), 200u);
  EXPECT_EQ(out.as_array()[199], json::value(199));
}

// std::thread throws std::system_error (EAGAIN) when the process is out of threads.
std::function<std::thread(std::function<void()>)> threads_that_fail_after(
    std::shared_ptr<std::atomic<int>> left) {
  return [left](std::function<void()> fn) {
    if (left->fetch_sub(1) <= 0)
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                              "thread creation");
    return std::thread(std::move(fn));
  };
}

TEST(EngineTest, ThreadCreationFailureFailsTheParallelStepNotTheProcess) {
  Harness h;
  auto left = std::make_shared<std::atomic<int>>(3);  // the heartbeat and two workers
  h.tweak = [left](EngineOptions& o) { o.start_thread = threads_that_fail_after(left); };
  auto ex = std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    std::this_thread::sleep_for(Millis(1));
    return Result<json::value>(json::value(r.step_id));
  });
  auto engine = h.open(ex);
  Definition def = must_parse(R"(name: starved
steps:
  - id: fan
    kind: parallel
    for_each: ${input.items}
    max_concurrency: 10
    on_failure: continue
    step:
      kind: exec
      input: { argv: ["${item}"] }
  - id: after
    kind: exec
    input: { argv: [done] }
)");
  auto id = engine->create_run(def, json::parse(R"({"items": [0,1,2,3,4,5,6,7,8,9]})"));
  ASSERT_TRUE(id.ok());
  auto res = engine->run(*id);
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kCompleted) << res->error;  // on_failure: continue
  EXPECT_EQ(ex->count("after"), 1);
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_steps WHERE step_id = 'fan'"),
            "failed");
  std::string err = query_text(h.db(), "SELECT error FROM workflow_steps WHERE step_id = 'fan'");
  EXPECT_EQ(err.rfind("ResourceExhausted: cannot start thread 3 of 9 for parallel step fan (", 0),
            0u)
      << err;
  EXPECT_NE(err.find("branches not started"), std::string::npos) << err;
  // The children that did start finished and were recorded; none runs again on resume.
  const size_t ran = ex->calls().size() - 1;
  EXPECT_LT(ran, 10u);
  EXPECT_EQ(query_int(h.db(),
                      "SELECT count(*) FROM workflow_steps WHERE step_id LIKE 'fan[%' "
                      "AND status = 'completed'"),
            static_cast<int64_t>(ran));
  left->store(1000);
  auto again = engine->run(*id);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->status, RunStatus::kCompleted);
  EXPECT_EQ(ex->calls().size(), ran + 1);

  // Without on_failure the run fails with the same clear error, and stays failed on resume.
  left->store(1);  // the heartbeat only: not a single worker
  Definition strict = must_parse(R"(name: strict
steps:
  - id: fan
    kind: parallel
    for_each: ${input.items}
    step:
      kind: exec
      input: { argv: ["${item}"] }
)");
  auto id2 = engine->create_run(strict, json::parse(R"({"items": [0,1,2]})"));
  auto res2 = engine->run(*id2);
  ASSERT_TRUE(res2.ok()) << res2.status().to_string();
  EXPECT_EQ(res2->status, RunStatus::kFailed);
  EXPECT_NE(res2->error.find("ResourceExhausted: cannot start thread 1 of 2"), std::string::npos)
      << res2->error;
  EXPECT_NE(res2->error.find("3 of 3 branches not started"), std::string::npos) << res2->error;
  left->store(1000);
  auto res3 = engine->run(*id2);
  ASSERT_TRUE(res3.ok());
  EXPECT_EQ(res3->status, RunStatus::kFailed);
}

TEST(EngineTest, NoHeartbeatThreadHandsTheRunBack) {
  Harness h;
  auto left = std::make_shared<std::atomic<int>>(0);
  h.tweak = [left](EngineOptions& o) { o.start_thread = threads_that_fail_after(left); };
  auto ex = echo_executor();
  auto engine = h.open(ex);
  Definition def =
      must_parse("name: hb\nsteps:\n  - { id: a, kind: exec, input: { argv: [x] } }\n");
  auto id = engine->create_run(def, nullptr);
  ASSERT_TRUE(id.ok());
  auto res = engine->run(*id);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(res.status().message().find("cannot start the heartbeat thread"), std::string::npos)
      << res.status().message();
  EXPECT_EQ(ex->calls().size(), 0u);
  // Unowned and resumable at once, by this executor or another.
  EXPECT_EQ(query_text(h.db(), "SELECT coalesce(owner, 'none') FROM workflow_runs"), "none");
  auto ids = engine->interrupted_runs();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, std::vector<std::string>{*id});
  left->store(1000);
  auto again = engine->run(*id);
  ASSERT_TRUE(again.ok()) << again.status().to_string();
  EXPECT_EQ(again->status, RunStatus::kCompleted);
  EXPECT_EQ(ex->calls().size(), 1u);
}

TEST(EngineTest, OnlyOneOfTwoExecutorsRunsARun) {
  Harness h;
  wftest::expect_one_of_two_executors_runs_it(
      [&](std::shared_ptr<StepExecutor> ex, const std::string& owner) {
        return h.open(std::move(ex), owner);
      });
}

TEST(EngineTest, DurableSleepWaitsOnlyTheRemainderAfterARestart) {
  Harness h;
  // The first executor "crashes" 20 minutes into a 60-minute sleep: another owner takes the run
  // (as after a lease expiry), so the first can write nothing more.
  struct CrashingSleeper : Sleeper {
    Harness* h;
    Status sleep_until(WallTime, const Interrupt&) override {
      h->clock.advance(std::chrono::minutes(20));
      wftest::query_text(h->db(), "UPDATE workflow_runs SET owner = 'someone-else'");
      return Status::unavailable("crashed");
    }
  };
  auto crashing = std::make_shared<CrashingSleeper>();
  crashing->h = &h;
  EngineOptions o;
  o.db_path = h.db();
  o.clock = &h.clock;
  o.sleeper = crashing;
  o.owner = "first";
  o.poll = Millis(5);
  auto e1 = Engine::open(o);
  ASSERT_TRUE(e1.ok());
  Definition def = must_parse(R"(name: nap
steps:
  - { id: nap, kind: sleep, input: { duration_ms: 3600000 } }
  - { id: after, kind: exec, input: { argv: [x] } }
)");
  auto id = (*e1)->create_run(def, nullptr);
  auto r1 = (*e1)->run(*id);
  ASSERT_FALSE(r1.ok());  // lost the run: wrote nothing more
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_steps WHERE step_id = 'nap'"),
            "running");
  query_text(h.db(), "UPDATE workflow_runs SET owner = NULL");  // the lease expired

  auto ex = echo_executor();
  auto e2 = h.open(ex, "second");
  auto r2 = e2->run(*id);
  ASSERT_TRUE(r2.ok()) << r2.status().to_string();
  EXPECT_EQ(r2->status, RunStatus::kCompleted);
  auto waits = h.sleeper->waits();
  ASSERT_EQ(waits.size(), 1u);
  EXPECT_EQ(waits[0], std::chrono::minutes(40));
  EXPECT_EQ(query_int(h.db(), "SELECT attempt FROM workflow_steps WHERE step_id = 'nap'"), 2);
}

TEST(EngineTest, ResumeWithAnotherDefinitionIsRefusedUnlessForced) {
  Harness h;
  auto ex = echo_executor();
  auto engine = h.open(ex);
  Definition v1 =
      must_parse("name: d\nsteps:\n  - { id: a, kind: exec, input: { argv: [one] } }\n");
  Definition v2 =
      must_parse("name: d\nsteps:\n  - { id: a, kind: exec, input: { argv: [two] } }\n");
  ASSERT_NE(v1.hash, v2.hash);
  auto id = engine->create_run(v1, nullptr);
  auto refused = engine->run(*id, &v2);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("definition changed"), std::string::npos);
  EXPECT_EQ(ex->calls().size(), 0u);
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_runs"), "pending");
  auto same = engine->run(*id, &v1);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(same->status, RunStatus::kCompleted);

  auto id2 = engine->create_run(v1, nullptr);
  auto forced = engine->run(*id2, &v2, /*force=*/true);
  ASSERT_TRUE(forced.ok()) << forced.status().to_string();
  EXPECT_EQ(ex->calls().back().input, json::parse(R"({"argv": ["two"]})"));
}

TEST(EngineTest, CancelStopsTheRunningStep) {
  Harness h;
  std::atomic<bool> saw_cancel{false};
  Signal step_started;
  auto ex = std::make_shared<FakeExecutor>([&](const StepRequest&, const Interrupt& intr) {
    step_started.set();
    if (!eventually([&] { return intr.interrupted(); }))
      return Result<json::value>(Status::deadline_exceeded("the step was never interrupted"));
    saw_cancel = intr.check().code() == StatusCode::kCancelled;
    return Result<json::value>(intr.check());
  });
  auto engine = h.open(ex);
  auto other = h.open(echo_executor(), "cli");  // another process's handle on the same file
  Definition def = must_parse(R"(name: long
steps:
  - { id: a, kind: exec, input: { argv: [x] } }
  - { id: b, kind: exec, input: { argv: [y] } }
)");
  auto id = engine->create_run(def, nullptr);
  auto fut = std::async(std::launch::async, [&] { return engine->run(*id); });
  ASSERT_TRUE(step_started.wait()) << "step a never started";
  ASSERT_TRUE(other->request_cancel(*id).ok());
  auto res = fut.get();
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kCancelled);
  EXPECT_TRUE(saw_cancel);
  EXPECT_EQ(ex->count("b"), 0);
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_steps WHERE step_id = 'a'"),
            "cancelled");
  EXPECT_FALSE(other->request_cancel(*id).ok());  // already cancelled

  // A run nobody executes is cancelled at once.
  auto id2 = engine->create_run(def, nullptr);
  ASSERT_TRUE(other->request_cancel(*id2).ok());
  EXPECT_EQ(query_text(h.db(), "SELECT status FROM workflow_runs WHERE id = '" + *id2 + "'"),
            "cancelled");
  auto r2 = engine->run(*id2);
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(r2->status, RunStatus::kCancelled);
}

// The heartbeat renews the lease by the engine's clock, so simulated time drives it: an hour of
// ManualClock renews a lease whose heartbeat is an hour, within a few real polls.
TEST(EngineTest, HeartbeatRenewsTheLeaseOnTheEngineClock) {
  Harness h;
  h.tweak = [](EngineOptions& o) {
    o.lease = std::chrono::hours(2);
    o.heartbeat = std::chrono::hours(1);  // never reached in real time during this test
    o.poll = Millis(2);
  };
  Gate gate;
  auto ex = std::make_shared<FakeExecutor>([&](const StepRequest&, const Interrupt&) {
    if (!gate.pass()) return Result<json::value>(Status::deadline_exceeded("gate never opened"));
    return Result<json::value>(json::value(1));
  });
  auto engine = h.open(ex);
  Definition def =
      must_parse("name: hb\nsteps:\n  - { id: a, kind: exec, input: { argv: [x] } }\n");
  auto id = engine->create_run(def, nullptr);
  ASSERT_TRUE(id.ok());
  const auto wall_ms = [&] {
    return std::chrono::duration_cast<Millis>(h.clock.wall_now().time_since_epoch()).count();
  };
  const int64_t claimed_at = wall_ms();
  auto fut = std::async(std::launch::async, [&] { return engine->run(*id); });
  ASSERT_TRUE(gate.arrived()) << "step a never started";
  auto lease_end = [&] { return query_int(h.db(), "SELECT lease_expires_ms FROM workflow_runs"); };
  EXPECT_EQ(lease_end(), claimed_at + 2 * 3600 * 1000);

  h.clock.advance(std::chrono::minutes(61));
  const int64_t renewed_until = wall_ms() + 2 * 3600 * 1000;
  EXPECT_TRUE(eventually([&] { return lease_end() == renewed_until; }))
      << "the lease still ends at " << lease_end() << ", not " << renewed_until;
  gate.open();
  auto res = fut.get();
  ASSERT_TRUE(res.ok()) << res.status().to_string();
  EXPECT_EQ(res->status, RunStatus::kCompleted);
}

TEST(EngineTest, InterruptedRunsAreListedForRecovery) {
  Harness h;
  auto engine = h.open(echo_executor());
  Definition def = must_parse("name: d\nsteps:\n  - { id: a, kind: exec, input: { argv: [x] } }\n");
  auto id = engine->create_run(def, nullptr);
  query_text(h.db(),
             "UPDATE workflow_runs SET status = 'running', owner = 'dead', lease_expires_ms = 1");
  auto ids = engine->interrupted_runs();
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 1u);
  EXPECT_EQ((*ids)[0], *id);
  auto r = engine->run(*id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, RunStatus::kCompleted);
}

// The shared-queue operations on SQLite too (one file, several executors): claim_next takes
// unowned runs once each, never a run born claimed or under a live lease, and a released run is
// runnable at once.
TEST(EngineTest, ClaimNextTakesOnlyRunnableRunsOnce) {
  Harness h;
  auto e1 = h.open(echo_executor(), "owner-1");
  auto e2 = h.open(echo_executor(), "owner-2");
  Definition def = must_parse("name: q\nsteps:\n  - { id: a, kind: exec, input: { argv: [x] } }\n");
  // Oldest first: one simulated millisecond apart, so the order is the creation order.
  auto free1 = e1->create_run(def, nullptr);
  h.clock.advance(Millis(1));
  auto free2 = e1->create_run(def, nullptr);
  h.clock.advance(Millis(1));
  auto mine = e1->create_run(def, nullptr, "", /*claim=*/true);
  ASSERT_TRUE(free1.ok() && free2.ok() && mine.ok());
  EXPECT_EQ(query_text(h.db(), "SELECT owner FROM workflow_runs WHERE id = '" + *mine + "'"),
            "owner-1");
  auto got = e2->claim_next(10);
  ASSERT_TRUE(got.ok()) << got.status().to_string();
  EXPECT_EQ(*got, (std::vector<std::string>{*free1, *free2}));
  EXPECT_TRUE(e1->claim_next(10)->empty());
  // The born-claimed run is its creator's without a wait; another executor is refused.
  auto refused = e2->run(*mine);
  EXPECT_FALSE(refused.ok());
  auto r = e1->run(*mine);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  e2->release(*free2, "not run here");
  auto back = e1->claim_next(10);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, std::vector<std::string>{*free2});
  // Leases lapse: runnable again.
  h.clock.advance(std::chrono::hours(1));
  EXPECT_EQ(e2->claim_next(10)->size(), 2u);
}

}  // namespace
}  // namespace switchboard::workflow
