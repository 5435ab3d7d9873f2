// The workflow API of a running gateway (issue 9) and workflow feedback (issue 10): runs started
// over HTTP execute in the background, interrupted runs are resumed by a gateway start, a
// gateway stop hands its runs back, llm steps go through the gateway itself, and a later step's
// `feedback:` reaches POST /v1/feedback.
#include <sqlite3.h>

#include <fstream>
#include <sstream>

#include "gateway_fixture.h"
#include "workflow/workflow.h"

namespace switchboard {
namespace {

using namespace gwtest;
namespace wf = switchboard::workflow;

constexpr auto kDeadline = std::chrono::seconds(20);

// A POST /v1/workflows/runs body with the definition as text (so errors have real lines).
std::string run_body(const std::string& yaml, const std::string& input = "{}") {
  boost::json::object o;
  o["definition"] = yaml;
  o["input"] = boost::json::parse(input);
  return boost::json::serialize(o);
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class WorkflowApiTest : public GatewayTest {
 protected:
  std::string db() const { return (dir_ / "state.db").string(); }

  // Starts the run and returns its id (asserting 201).
  std::string submit(const std::string& yaml, const std::string& input = "{}",
                     const Headers& headers = {}) {
    auto r = post(port_, "/v1/workflows/runs", run_body(yaml, input), headers);
    EXPECT_EQ(r.status, 201) << r.body;
    auto v = parse_json(r.body);
    if (!v.is_object() || !v.as_object().contains("id")) return {};
    std::string id(v.as_object().at("id").as_string());
    EXPECT_EQ(r.header("location"), "/v1/workflows/runs/" + id);
    return id;
  }

  boost::json::value show(const std::string& id, const Headers& headers = {}) {
    auto r = get(port_, "/v1/workflows/runs/" + id, headers);
    return r.status == 200 ? parse_json(r.body) : boost::json::value();
  }

  std::string status_of(const std::string& id, const Headers& headers = {}) {
    auto v = show(id, headers);
    if (!v.is_object()) return "";
    return std::string(v.as_object().at("status").as_string());
  }

  // Polls until the run reaches `status` (or the deadline passes).
  bool reaches(const std::string& id, const std::string& status, const Headers& headers = {}) {
    return eventually([&] { return status_of(id, headers) == status; }, kDeadline);
  }

  const boost::json::object* step(const boost::json::value& run, const std::string& id) {
    for (const auto& s : run.as_object().at("steps").as_array())
      if (s.as_object().at("id").as_string() == id) return &s.as_object();
    return nullptr;
  }

  static std::string exec_provider_yaml(const gateway::MockProvider& m) {
    // Runs over HTTP may run exec steps only when the configuration allows it (issue 17).
    return "workflows: { allow_exec: true }\nproviders:\n" + provider("pa", m) +
           "models:\n  ma: { provider: pa, upstream: up-a }\n";
  }
};

TEST_F(WorkflowApiTest, PostedRunCompletesInTheBackgroundAndIsListed) {
  auto& m = add_mock();
  start_gateway(exec_provider_yaml(m));
  const std::string out = (dir_ / "out.txt").string();
  std::string id = submit(
      "name: two-steps\n"
      "input: { required: [word] }\n"
      "steps:\n"
      "  - id: one\n"
      "    kind: exec\n"
      "    input: { argv: [sh, -c, 'echo \"$0\" >> " +
          out +
          "', '${input.word}'] }\n"
          "  - id: two\n"
          "    kind: exec\n"
          "    input: { argv: [sh, -c, 'echo two >> " +
          out + "'] }\n",
      R"({"word": "hello"})");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(reaches(id, "completed")) << status_of(id);
  EXPECT_EQ(read_file(out), "hello\ntwo\n");

  auto run = show(id);
  ASSERT_TRUE(run.is_object());
  EXPECT_EQ(run.as_object().at("steps").as_array().size(), 2u);
  EXPECT_EQ(step(run, "one")->at("status").as_string(), "completed");

  auto list = get(port_, "/v1/workflows/runs");
  ASSERT_EQ(list.status, 200) << list.body;
  auto lv = parse_json(list.body);
  ASSERT_TRUE(lv.is_object());
  bool found = false;
  for (const auto& r : lv.as_object().at("data").as_array())
    found = found || r.as_object().at("id").as_string() == id;
  EXPECT_TRUE(found) << list.body;

  // Input that does not match the schema: 400 and no run.
  auto bad = post(port_, "/v1/workflows/runs",
                  run_body("name: n\ninput: { required: [word] }\nsteps:\n  - id: a\n"
                           "    kind: exec\n    input: { argv: ['true'] }\n"));
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_TRUE(is_openai_error(bad.body));
}

TEST_F(WorkflowApiTest, CancelStopsARunningRunAndUnknownRunsAre404) {
  auto& m = add_mock();
  start_gateway(exec_provider_yaml(m));
  std::string id = submit(
      "name: long\nsteps:\n  - id: wait\n    kind: exec\n    input: { argv: [sleep, '60'] }\n");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(eventually(
      [&] {
        auto v = show(id);
        return v.is_object() && step(v, "wait") && step(v, "wait")->at("status") == "running";
      },
      kDeadline));
  auto c = post(port_, "/v1/workflows/runs/" + id + "/cancel", "");
  EXPECT_EQ(c.status, 202) << c.body;
  ASSERT_TRUE(reaches(id, "cancelled")) << status_of(id);
  auto again = post(port_, "/v1/workflows/runs/" + id + "/cancel", "");
  EXPECT_EQ(again.status, 409) << again.body;

  EXPECT_EQ(get(port_, "/v1/workflows/runs/wf_nosuchrun").status, 404);
  auto c404 = post(port_, "/v1/workflows/runs/wf_nosuchrun/cancel", "");
  EXPECT_EQ(c404.status, 404);
  EXPECT_TRUE(is_openai_error(c404.body));
  EXPECT_EQ(request(port_, "DELETE", "/v1/workflows/runs/" + id).status, 405);
}

TEST_F(WorkflowApiTest, BadDefinitionsAre400WithLineAndColumn) {
  auto& m = add_mock();
  start_gateway(exec_provider_yaml(m));
  // Line 4, column 5: the unknown field.
  auto r = post(port_, "/v1/workflows/runs",
                run_body("name: bad\nsteps:\n  - id: a\n    colour: red\n    kind: exec\n"
                         "    input: { argv: ['true'] }\n"));
  ASSERT_EQ(r.status, 400) << r.body;
  ASSERT_TRUE(is_openai_error(r.body));
  auto e = parse_json(r.body).as_object().at("error").as_object();
  EXPECT_EQ(e.at("code"), "invalid_workflow");
  auto errs = e.at("errors").as_array();
  ASSERT_EQ(errs.size(), 1u) << r.body;
  EXPECT_EQ(errs[0].as_object().at("line").to_number<int>(), 4);
  EXPECT_EQ(errs[0].as_object().at("column").to_number<int>(), 5);
  EXPECT_NE(e.at("message").as_string().find("definition:4:5"), std::string::npos) << r.body;

  // feedback.step must name an earlier llm step (line 6, column 23).
  auto f =
      post(port_, "/v1/workflows/runs",
           run_body("name: fb\nsteps:\n  - id: a\n    kind: exec\n    input: { argv: ['true'] }\n"
                    "    feedback: { step: a }\n"));
  ASSERT_EQ(f.status, 400) << f.body;
  auto ferrs = parse_json(f.body).as_object().at("error").as_object().at("errors").as_array();
  ASSERT_EQ(ferrs.size(), 1u) << f.body;
  EXPECT_EQ(ferrs[0].as_object().at("path"), "steps[0].feedback.step");
  EXPECT_EQ(ferrs[0].as_object().at("line").to_number<int>(), 6);
  EXPECT_EQ(ferrs[0].as_object().at("column").to_number<int>(), 23);

  // Malformed bodies and a definition object (not text) that is invalid.
  EXPECT_EQ(post(port_, "/v1/workflows/runs", "{not json").status, 400);
  EXPECT_EQ(post(port_, "/v1/workflows/runs", R"({"input": {}})").status, 400);
  EXPECT_EQ(
      post(port_, "/v1/workflows/runs", R"({"definition": {"name": "x"}, "extra": 1})").status,
      400);
  auto obj = post(port_, "/v1/workflows/runs", R"({"definition": {"name": "x"}})");
  EXPECT_EQ(obj.status, 400) << obj.body;
  EXPECT_NE(obj.body.find("steps"), std::string::npos) << obj.body;
}

TEST_F(WorkflowApiTest, RunsUnderV1NeedTheGatewayKey) {
  auto& m = add_mock();
  start_gateway("auth: { gateway_keys: [gw-wf-key-1] }\n" + exec_provider_yaml(m));
  const std::string yaml =
      "name: k\nsteps:\n  - id: a\n    kind: exec\n    input: { argv: ['true'] }\n";
  EXPECT_EQ(post(port_, "/v1/workflows/runs", run_body(yaml)).status, 401);
  EXPECT_EQ(get(port_, "/v1/workflows/runs").status, 401);
  const Headers auth = {{"authorization", "Bearer gw-wf-key-1"}};
  std::string id = submit(yaml, "{}", auth);
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(reaches(id, "completed", auth));
}

// A run left `running` by an executor that died (its lease expired) is claimed and finished by
// the next gateway start; the step recorded completed before the crash is not executed again.
TEST_F(WorkflowApiTest, InterruptedRunIsResumedByGatewayStart) {
  const std::string out = (dir_ / "out.txt").string();
  const std::string yaml =
      "name: resume-me\nsteps:\n"
      "  - id: one\n    kind: exec\n    input: { argv: [sh, -c, 'echo one >> " +
      out +
      "'] }\n"
      "  - id: two\n    kind: exec\n    input: { argv: [sh, -c, 'echo two >> " +
      out + "'] }\n";
  auto def = wf::parse_definition(yaml, "test");
  ASSERT_TRUE(def.ok());
  std::string id;
  {
    // The dead executor: it ran step one, then step two was interrupted by its "crash".
    struct Blocking final : wf::StepExecutor {
      std::shared_ptr<wf::StepExecutor> real = wf::make_exec_executor();
      std::atomic<bool> blocked{false};
      Result<boost::json::value> execute(const wf::StepRequest& req,
                                         const wf::Interrupt& interrupt) override {
        if (req.step_id == "one") return real->execute(req, interrupt);
        blocked = true;
        // Parked until the shutdown interrupts it; a bound turns a missed interrupt into a
        // failed step instead of a hung test.
        const auto until = std::chrono::steady_clock::now() + kDeadline;
        while (!interrupt.interrupted() && std::chrono::steady_clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(5));
        if (!interrupt.interrupted()) ADD_FAILURE() << "the shutdown never interrupted the step";
        return interrupt.check();
      }
    };
    auto blocking = std::make_shared<Blocking>();
    wf::EngineOptions opts;
    opts.db_path = db();
    opts.owner = "dead-executor";
    opts.executors.exec = blocking;
    auto engine = wf::Engine::open(opts);
    ASSERT_TRUE(engine.ok()) << engine.status().message();
    auto created = (*engine)->create_run(*def.definition, boost::json::object());
    ASSERT_TRUE(created.ok());
    id = *created;
    std::thread t([&] { (void)(*engine)->run(id); });
    ASSERT_TRUE(eventually([&] { return blocking->blocked.load(); }, kDeadline));
    (*engine)->shutdown();
    t.join();
  }
  // What a kill -9 leaves: the run still owned by the dead executor, its lease expired, and
  // step two recorded running.
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db().c_str(), &h), SQLITE_OK);
  std::string sql =
      "UPDATE workflow_runs SET owner = 'dead-executor', lease_expires_ms = 1 WHERE id = '" + id +
      "'";
  ASSERT_EQ(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(h);
  ASSERT_EQ(read_file(out), "one\n");

  auto& m = add_mock();
  start_gateway(exec_provider_yaml(m));
  ASSERT_TRUE(reaches(id, "completed")) << status_of(id);
  EXPECT_EQ(read_file(out), "one\ntwo\n");
  auto run = show(id);
  EXPECT_EQ(step(run, "one")->at("attempt").to_number<int>(), 1);
  EXPECT_EQ(step(run, "two")->at("attempt").to_number<int>(), 2);  // retried after the crash
}

// Stopping the gateway interrupts a running workflow without cancelling it and hands it back at
// once; the next gateway resumes it and it completes (a durable sleep keeps its wake-up time).
TEST_F(WorkflowApiTest, StopReleasesRunsAndTheNextStartFinishesThem) {
  auto& m = add_mock();
  const std::string yaml_cfg = exec_provider_yaml(m);
  start_gateway(yaml_cfg);
  std::string id = submit(
      "name: sleepy\nsteps:\n  - id: nap\n    kind: sleep\n    input: { duration_ms: 1500 }\n"
      "  - id: after\n    kind: exec\n    input: { argv: ['true'] }\n");
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(eventually(
      [&] {
        auto v = show(id);
        return v.is_object() && step(v, "nap") && step(v, "nap")->at("status") == "running";
      },
      kDeadline));
  gw_->stop(Millis(1000));  // returns only after the run's thread was joined
  gw_.reset();
  {
    wf::EngineOptions opts;
    opts.db_path = db();
    auto engine = wf::Engine::open(opts);
    ASSERT_TRUE(engine.ok());
    auto run = (*engine)->get_run(id);
    ASSERT_TRUE(run.ok());
    EXPECT_EQ(run->run.status, wf::RunStatus::kRunning);    // not cancelled
    EXPECT_TRUE(run->run.owner.empty()) << run->run.owner;  // released, not left to lapse
    auto interrupted = (*engine)->interrupted_runs();
    ASSERT_TRUE(interrupted.ok());
    EXPECT_EQ(interrupted->size(), 1u);
  }
  start_gateway(yaml_cfg);
  ASSERT_TRUE(reaches(id, "completed")) << status_of(id);
}

// An llm step goes through this gateway to a MockProvider upstream, records its request id, and
// a later step's feedback reaches POST /v1/feedback: the learned posterior counts the verdict.
TEST_F(WorkflowApiTest, LlmStepThroughTheGatewayAndFeedbackFromALaterStep) {
  auto& m = add_mock();
  start_gateway(
      "auth: { gateway_keys: [gw-wf-key-2] }\nworkflows: { allow_exec: true }\n"
      "providers:\n" +
      provider("pa", m) +
      "models:\n  ma: { provider: pa, upstream: up-a }\n"
      "routes:\n  auto: { strategy: learned, layers: [[ma]] }\n");
  const Headers auth = {{"authorization", "Bearer gw-wf-key-2"}};
  std::string id = submit(
      "name: ask-and-judge\nsteps:\n"
      "  - id: ask\n    kind: llm\n"
      "    input: { route: auto, category: wfcat, messages: [{ role: user, content: hi }] }\n"
      "  - id: judge\n    kind: exec\n    input: { argv: [sh, -c, 'echo 0.25'] }\n"
      "    feedback: { step: ask, success: '${steps.judge.output.exit_code} == 0',"
      " score: '${steps.judge.output.stdout}' }\n",
      "{}", auth);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(reaches(id, "completed", auth)) << show(id, auth);
  auto run = show(id, auth);
  const auto* ask = step(run, "ask");
  ASSERT_NE(ask, nullptr);
  const auto& out = ask->at("output").as_object();
  ASSERT_TRUE(out.contains("request_id")) << run;
  EXPECT_EQ(std::string(out.at("request_id").as_string()).rfind("sb-", 0), 0u) << run;
  EXPECT_GE(m.stats().requests, 1u);

  // The verdict arrived: one feedback for (wfcat, ma), with the score the judge printed.
  ASSERT_TRUE(eventually(
      [&] {
        auto r = get(port_, "/admin/models");
        auto v = parse_json(r.body);
        if (!v.is_object()) return false;
        for (const auto& p : v.as_object().at("posteriors").as_array()) {
          const auto& o = p.as_object();
          if (o.at("category") == "wfcat" && o.at("model") == "ma")
            return o.at("feedback").to_number<int>() == 1 &&
                   std::abs(o.at("feedback_success").to_number<double>() - 0.25) < 1e-9;
        }
        return false;
      },
      kDeadline));
  // The same verdict again is refused as a duplicate: the step already delivered it.
  auto dup = post(
      port_, "/v1/feedback",
      "{\"request_id\":\"" + std::string(out.at("request_id").as_string()) + "\",\"success\":true}",
      auth);
  EXPECT_EQ(dup.status, 409) << dup.body;
}

// Issue 26: the gateway prices each answer (x-switchboard-cost-usd), llm steps record it, and the
// configured ceiling (workflows.budget) stops a run whose spend reached it before another step.
TEST_F(WorkflowApiTest, TheConfiguredSpendBudgetStopsARunOnTheGatewaysPrices) {
  MockScenario wordy;
  wordy.completion_tokens = 250;
  auto& m = add_mock(wordy);
  start_gateway("workflows: { budget: { max_cost_usd: 0.4 } }\nproviders:\n" + provider("pa", m) +
                "models:\n  ma: { provider: pa, upstream: up-a, cost: { input_per_mtok: 0, "
                "output_per_mtok: 1000 } }\n");
  auto direct = post(port_, "/v1/chat/completions", chat_body("ma"));
  ASSERT_EQ(direct.status, 200) << direct.body;
  EXPECT_EQ(direct.header("x-switchboard-cost-usd"), "0.250000000");
  std::string yaml = "name: spend\nsteps:\n";
  for (const char* id : {"one", "two", "three"})
    yaml += std::string("  - { id: ") + id +
            ", kind: llm, input: { model: ma, messages: [{ role: user, content: hi }] } }\n";
  std::string id = submit(yaml);
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(reaches(id, "failed")) << show(id);
  auto run = show(id);
  EXPECT_EQ(run.at("error").as_string(),
            "budget exhausted: max_cost_usd 0.4 reached ($0.500000 spent)")
      << run;
  const auto* one = step(run, "one");
  ASSERT_NE(one, nullptr);
  EXPECT_DOUBLE_EQ(one->at("output").at("cost_usd").as_double(), 0.25);
  EXPECT_EQ(step(run, "three"), nullptr) << "a step started past the budget";
  EXPECT_EQ(m.stats().requests, 3u) << "the direct request and two steps";
}

}  // namespace
}  // namespace switchboard
