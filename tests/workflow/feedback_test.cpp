// Workflow `feedback:` (issue 10): validation with line and column, the verdict an engine sends
// after the step finishes, and Engine::shutdown handing a run back without cancelling it.
#include <gtest/gtest.h>

#include "test_util.h"

namespace switchboard::workflow {
namespace {
using namespace wftest;

// Records verdicts; fails on demand.
class FakeFeedback final : public FeedbackSender {
 public:
  Status send(const FeedbackCall& call, const Interrupt&) override {
    std::lock_guard lock(mu_);
    calls.push_back(call);
    return fail ? Status::unavailable("HTTP 404: unknown or expired request id") : Status();
  }
  std::mutex mu_;
  std::vector<FeedbackCall> calls;
  bool fail = false;
};

// An llm executor answering with a request id.
std::shared_ptr<FakeExecutor> fake_llm() {
  return std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    json::object o;
    o["content"] = "answer";
    o["request_id"] = "sb-1-" + r.step_id;
    return Result<json::value>(json::value(std::move(o)));
  });
}

TEST(WorkflowFeedback, StepMustNameAnEarlierLlmStep) {
  const std::string head =
      "name: f\nsteps:\n"
      "  - id: ask\n    kind: llm\n    input: { route: auto, messages: [] }\n"
      "  - id: run\n    kind: exec\n    input: { argv: ['true'] }\n";
  auto ok = parse_definition(head +
                                 "  - id: judge\n    kind: exec\n    input: { argv: ['true'] }\n"
                                 "    feedback: { step: ask, success: '${steps.judge.status} == "
                                 "completed', score: 0.5 }\n",
                             "t.yaml");
  EXPECT_TRUE(ok.ok()) << (ok.errors.empty() ? "" : ok.errors.front().to_string());

  auto check = [&](const std::string& fb, int line, int col, const std::string& text) {
    auto load = parse_definition(
        head + "  - id: judge\n    kind: exec\n    input: { argv: ['true'] }\n" + fb, "t.yaml");
    ASSERT_FALSE(load.ok()) << fb;
    const auto& e = load.errors.front();
    EXPECT_EQ(e.line, line) << e.to_string();
    EXPECT_EQ(e.column, col) << e.to_string();
    EXPECT_NE(e.to_string().find(text), std::string::npos) << e.to_string();
  };
  check("    feedback: { step: run }\n", 12, 23, "is not an llm step");
  check("    feedback: { step: nope }\n", 12, 23, "no step 'nope'");
  check("    feedback: { step: judge }\n", 12, 23, "does not run before this one");
  check("    feedback: { step: ask, score: 2 }\n", 12, 35, "between 0 and 1");
  check("    feedback: { step: ask, verdict: true }\n", 12, 28, "unknown field");
  check("    feedback: { success: true }\n", 12, 15, "is required");

  // Not on parallel children; a later llm step cannot be named.
  auto child = parse_definition(
      "name: f\nsteps:\n  - id: ask\n    kind: llm\n    input: { route: auto, messages: [] }\n"
      "  - id: fan\n    kind: parallel\n    for_each: '${input.xs}'\n    step:\n"
      "      kind: exec\n      input: { argv: ['true'] }\n      feedback: { step: ask }\n",
      "t.yaml");
  ASSERT_FALSE(child.ok());
  EXPECT_NE(child.errors.front().message.find("top-level"), std::string::npos);
}

TEST(WorkflowFeedback, VerdictIsSentAfterTheStepFinishesAndNeverChangesItsOutcome) {
  TempDir dir;
  auto sender = std::make_shared<FakeFeedback>();
  EngineOptions opts;
  opts.db_path = dir.file("wf.db");
  opts.executors.llm = fake_llm();
  opts.executors.exec = std::make_shared<FakeExecutor>([](const StepRequest& r, const Interrupt&) {
    if (r.step_id == "broken") return Result<json::value>(Status::unavailable("exit 1"));
    json::object o;
    o["exit_code"] = 0;
    o["stdout"] = "0.75\n";
    return Result<json::value>(json::value(std::move(o)));
  });
  opts.executors.feedback = sender;
  auto engine = Engine::open(opts);
  ASSERT_TRUE(engine.ok()) << engine.status().message();
  auto def = must_parse(
      "name: f\nsteps:\n"
      "  - id: a\n    kind: llm\n    input: { route: auto, messages: [] }\n"
      "  - id: b\n    kind: llm\n    input: { route: auto, messages: [] }\n"
      "  - id: judge\n    kind: exec\n    input: { argv: ['true'] }\n"
      "    feedback: { step: a, success: '${steps.judge.output.exit_code} == 0',"
      " score: '${steps.judge.output.stdout}' }\n"
      "  - id: broken\n    kind: exec\n    on_failure: continue\n    input: { argv: ['false'] }\n"
      "    feedback: { step: b }\n"
      "  - id: undeliverable\n    kind: exec\n    input: { argv: ['true'] }\n"
      "    feedback: { step: a, success: false }\n");
  auto id = (*engine)->create_run(def, json::object());
  ASSERT_TRUE(id.ok());
  auto r = (*engine)->run(*id);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->status, RunStatus::kCompleted) << r->error;
  std::lock_guard lock(sender->mu_);
  ASSERT_EQ(sender->calls.size(), 3u);
  EXPECT_EQ(sender->calls[0].request_id, "sb-1-a");
  EXPECT_TRUE(sender->calls[0].success);
  ASSERT_TRUE(sender->calls[0].score.has_value());
  EXPECT_DOUBLE_EQ(*sender->calls[0].score, 0.75);
  // A failed step without `success` reports a failure on the step it names.
  EXPECT_EQ(sender->calls[1].request_id, "sb-1-b");
  EXPECT_FALSE(sender->calls[1].success);
  EXPECT_FALSE(sender->calls[1].score.has_value());
  EXPECT_FALSE(sender->calls[2].success);
  EXPECT_EQ(query_text(opts.db_path,
                       "SELECT COUNT(*) FROM workflow_events WHERE type = 'feedback_sent' AND "
                       "run_id = '" +
                           *id + "'"),
            "3");
}

TEST(WorkflowFeedback, FailedDeliveryIsAnAuditEventNotAStepFailure) {
  TempDir dir;
  auto sender = std::make_shared<FakeFeedback>();
  sender->fail = true;
  EngineOptions opts;
  opts.db_path = dir.file("wf.db");
  opts.executors.llm = fake_llm();
  opts.executors.exec = std::make_shared<FakeExecutor>(
      [](const StepRequest&, const Interrupt&) { return Result<json::value>(json::object()); });
  opts.executors.feedback = sender;
  auto engine = Engine::open(opts);
  ASSERT_TRUE(engine.ok());
  auto def = must_parse(
      "name: f\nsteps:\n  - id: a\n    kind: llm\n    input: { route: auto, messages: [] }\n"
      "  - id: j\n    kind: exec\n    input: { argv: ['true'] }\n    feedback: { step: a }\n");
  auto id = (*engine)->create_run(def, json::object());
  ASSERT_TRUE(id.ok());
  auto r = (*engine)->run(*id);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->status, RunStatus::kCompleted);
  EXPECT_NE(
      query_text(opts.db_path, "SELECT detail FROM workflow_events WHERE type = 'feedback_failed'")
          .find("unknown or expired"),
      std::string::npos);
}

TEST(WorkflowShutdown, InterruptsReleasesAndRefusesNewRuns) {
  TempDir dir;
  Signal started;
  EngineOptions opts;
  opts.db_path = dir.file("wf.db");
  opts.executors.exec =
      std::make_shared<FakeExecutor>([&](const StepRequest&, const Interrupt& interrupt) {
        started.set();
        if (!eventually([&] { return interrupt.interrupted(); }))
          return Result<json::value>(Status::deadline_exceeded("the step was never interrupted"));
        return Result<json::value>(interrupt.check());
      });
  auto engine = Engine::open(opts);
  ASSERT_TRUE(engine.ok());
  auto def = must_parse("name: s\nsteps:\n  - id: a\n    kind: exec\n    input: { argv: [x] }\n");
  auto id = (*engine)->create_run(def, json::object());
  ASSERT_TRUE(id.ok());
  Result<RunResult> result = Status::internal("not run");
  std::thread t([&] { result = (*engine)->run(*id); });
  // EXPECT, not ASSERT: the thread is joined either way.
  EXPECT_TRUE(started.wait()) << "the step never started";
  (*engine)->shutdown();
  t.join();
  EXPECT_EQ(result.status().code(), StatusCode::kUnavailable);
  auto run = (*engine)->get_run(*id);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->run.status, RunStatus::kRunning);  // not cancelled: resumable
  EXPECT_TRUE(run->run.owner.empty());
  EXPECT_FALSE(run->run.cancel_requested);
  auto again = (*engine)->run(*id);
  EXPECT_EQ(again.status().code(), StatusCode::kUnavailable);

  // Another executor takes it at once (no lease to wait for) and retries the step.
  EngineOptions o2;
  o2.db_path = opts.db_path;
  auto fx = std::make_shared<FakeExecutor>(
      [](const StepRequest&, const Interrupt&) { return Result<json::value>(json::object()); });
  o2.executors.exec = fx;
  auto e2 = Engine::open(o2);
  ASSERT_TRUE(e2.ok());
  auto ids = (*e2)->interrupted_runs();
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(ids->size(), 1u);
  auto r2 = (*e2)->run(*id);
  ASSERT_TRUE(r2.ok()) << r2.status().message();
  EXPECT_EQ(r2->status, RunStatus::kCompleted);
  ASSERT_EQ(fx->calls().size(), 1u);
  EXPECT_EQ(fx->calls()[0].attempt, 2);
}

}  // namespace
}  // namespace switchboard::workflow
