// Workflow benchmarks: the cost of one durable step transition (step row + audit event, fenced by
// the owner check, in one transaction; synchronous=NORMAL) and of resuming a run whose 1000
// steps are already recorded (load, parse the definition, replay, finish).
#include <benchmark/benchmark.h>
#include <sqlite3.h>
#include <stdlib.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "workflow/workflow.h"

namespace switchboard::workflow {
namespace {

class BenchDir {
 public:
  BenchDir() {
    char tmpl[] = "/tmp/switchboard-workflow-bench-XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~BenchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const char* name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

class NoopExecutor final : public StepExecutor {
 public:
  Result<json::value> execute(const StepRequest& r, const Interrupt&) override {
    json::object o;
    o["step"] = r.step_id;
    o["value"] = 42;
    return json::value(std::move(o));
  }
};

Definition steps_definition(int n) {
  std::string yaml = "name: bench\nsteps:\n";
  for (int i = 0; i < n; ++i)
    yaml += "  - { id: s" + std::to_string(i) +
            ", kind: exec, input: { argv: [x, \"${attempt}\"] } }\n";
  return *parse_definition(yaml, "bench.yaml").definition;
}

std::unique_ptr<Engine> open_engine(const std::string& path) {
  EngineOptions o;
  o.db_path = path;
  o.executors.exec = std::make_shared<NoopExecutor>();
  o.owner = "bench";
  auto e = Engine::open(std::move(o));
  return e.ok() ? std::move(*e) : nullptr;
}

// Each step makes two transitions (started, completed), each its own committed transaction.
void step_transitions(benchmark::State& state, Engine* engine) {
  if (engine == nullptr) {
    state.SkipWithError("cannot open the workflow engine");
    return;
  }
  const int steps = 100;
  Definition def = steps_definition(steps);
  int64_t transitions = 0;
  for (auto _ : state) {
    auto id = engine->create_run(def, nullptr);
    auto r = engine->run(*id);
    if (!r.ok() || r->status != RunStatus::kCompleted) {
      state.SkipWithError("run failed");
      return;
    }
    transitions += 2 * steps + 1;
  }
  state.counters["transition_us"] =
      benchmark::Counter(static_cast<double>(transitions) / 1e6,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_WorkflowStepTransition(benchmark::State& state) {
  BenchDir dir;
  auto engine = open_engine(dir.file("wf.db"));
  step_transitions(state, engine.get());
}
BENCHMARK(BM_WorkflowStepTransition)->Unit(benchmark::kMillisecond)->UseRealTime();

// The same on PostgreSQL (runs shared by gateways), when SWITCHBOARD_BENCH_PG_URL names a
// database: bench/store_backends.sh starts a private server and runs both side by side.
void BM_WorkflowStepTransitionPostgres(benchmark::State& state) {
  const char* url = std::getenv("SWITCHBOARD_BENCH_PG_URL");
  if (url == nullptr || *url == '\0') {
    state.SkipWithError("SWITCHBOARD_BENCH_PG_URL is not set (see bench/store_backends.sh)");
    return;
  }
  auto engine = open_engine(url);
  step_transitions(state, engine.get());
}
BENCHMARK(BM_WorkflowStepTransitionPostgres)->Unit(benchmark::kMillisecond)->UseRealTime();

// A run with 1000 completed steps left "running" by a crashed executor: claim, load, replay.
void BM_WorkflowResume1000Completed(benchmark::State& state) {
  BenchDir dir;
  std::string path = dir.file("wf.db");
  auto engine = open_engine(path);
  Definition def = steps_definition(1000);
  auto id = engine->create_run(def, nullptr);
  if (!engine->run(*id).ok()) {
    state.SkipWithError("run failed");
    return;
  }
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_busy_timeout(db, 5000);
  std::string reset =
      "UPDATE workflow_runs SET status = 'running', owner = NULL WHERE id = '" + *id + "'";
  for (auto _ : state) {
    state.PauseTiming();
    sqlite3_exec(db, reset.c_str(), nullptr, nullptr, nullptr);
    state.ResumeTiming();
    auto r = engine->run(*id);
    if (!r.ok() || r->status != RunStatus::kCompleted) {
      state.SkipWithError("resume failed");
      break;
    }
  }
  sqlite3_close(db);
}
BENCHMARK(BM_WorkflowResume1000Completed)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace switchboard::workflow
