// Workflow commands. `http`, `llm` steps and `feedback:` verdicts use the gateway module's
// callers (workflow_callers.h), llm steps through an in-process gateway.
#include "cli/workflow_cmd.h"

#include <boost/json.hpp>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "common/config.h"
#include "common/log.h"
#include "gateway/gateway.h"
#include "gateway/workflow_callers.h"
#include "workflow/workflow.h"

namespace switchboard::cli {
namespace {

namespace wf = switchboard::workflow;
namespace json = boost::json;

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

// Starts an in-process gateway on 127.0.0.1:0 at the first llm step (or verdict) and hands its
// address to the gateway step client, so llm steps get routing, key rotation and failover
// exactly as HTTP clients do, and `feedback:` verdicts reach the same gateway that served the
// request (its request-id memory is in process).
class InProcessGateway {
 public:
  explicit InProcessGateway(std::shared_ptr<const Config> config) : config_(std::move(config)) {}
  ~InProcessGateway() {
    if (gateway_) gateway_->stop(Millis(2000));
  }

  Result<gateway::GatewayTarget> target() {
    std::lock_guard lock(mu_);
    if (!gateway_) {
      gateway::GatewayOptions opts;
      opts.listen = "127.0.0.1:0";
      opts.workflows = false;  // this process runs one workflow; it must not resume others
      auto gw = gateway::Gateway::create(config_, opts);
      if (!gw.ok()) return gw.status();
      if (Status st = (*gw)->start(); !st.ok()) return st;
      gateway_ = std::move(*gw);
    }
    gateway::GatewayTarget t;
    t.base_url = gateway_->base_url();
    if (!config_->auth.gateway_keys.empty()) t.gateway_key = config_->auth.gateway_keys.front();
    return t;
  }

 private:
  std::shared_ptr<const Config> config_;
  std::mutex mu_;
  std::unique_ptr<gateway::Gateway> gateway_;
};

std::optional<ConfigLoad> load_config(const std::string& path) {
  auto env = Environment::from_process();
  ConfigLoad load;
  if (!path.empty())
    load = load_config_file(path, env);
  else if (std::filesystem::exists("switchboard.yaml"))
    load = load_config_file("switchboard.yaml", env);
  else
    load = default_config(env);
  if (!load.ok()) {
    for (const auto& e : load.errors) std::cerr << e.to_string() << "\n";
    return std::nullopt;
  }
  return load;
}

}  // namespace

void add_workflow_commands(CLI::App* workflow, WorkflowArgs& a) {
  auto common = [&a](CLI::App* sub) {
    sub->add_option("--db", a.db,
                    "SQLite file or postgresql:// URL (default: the configuration's state)");
    sub->add_option("--config", a.config, "configuration file (for llm steps and the database)");
  };
  a.run = workflow->add_subcommand("run", "start a workflow run and execute it");
  a.run->add_option("FILE", a.file, "workflow definition (YAML or JSON)")->required();
  a.run->add_option("--input", a.input, "input as a JSON object");
  common(a.run);
  a.resume = workflow->add_subcommand("resume", "resume an interrupted run");
  a.resume->add_option("RUN_ID", a.run_id, "run id")->required();
  a.resume->add_option("--file", a.file, "check (or with --force, replace) the definition");
  a.resume->add_flag("--force", a.force, "resume even though the definition changed");
  a.resume->add_flag("--wait", a.wait,
                     "when another executor owns the run, wait until it stops (or its lease "
                     "lapses), then resume, instead of refusing");
  common(a.resume);
  a.cancel = workflow->add_subcommand("cancel", "cancel a run");
  a.cancel->add_option("RUN_ID", a.run_id, "run id")->required();
  common(a.cancel);
  a.list = workflow->add_subcommand("list", "list runs");
  a.list->add_flag("--json", a.json, "print JSON");
  common(a.list);
  a.show = workflow->add_subcommand("show", "show a run's steps, attempts, durations and errors");
  a.show->add_option("RUN_ID", a.run_id, "run id")->required();
  a.show->add_flag("--json", a.json, "print JSON");
  common(a.show);
}

int run_workflow_command(const WorkflowArgs& a) {
  auto load = load_config(a.config);
  if (!load) return kExitUsage;
  auto config = std::make_shared<const Config>(std::move(*load->config));
  log::init(config->log.level == "info" ? "warn" : config->log.level, log::Format::kText);
  for (const auto& [secret, id] : config->secrets()) log::add_secret(secret, id);

  wf::EngineOptions opts;
  // The runs of the configured state: its PostgreSQL database (shared with every gateway on
  // it) or its SQLite file; --db names either.
  const std::string configured =
      config->state.backend == "postgres" ? config->state.url : config->state.path;
  opts.db_path = a.db.empty() ? configured : a.db;
  const bool shared = wf::is_shared_database(opts.db_path);
  // Only `run` creates the state file: reading or resuming runs of a file that is not there
  // (a mistyped --db) must not leave an empty database behind.
  if (!*a.run && !shared && !std::filesystem::exists(opts.db_path)) {
    if (*a.list) {
      std::cout << wf::format_runs({}, a.json);
      return kExitOk;
    }
    std::cerr << "switchboard workflow: no database at " << opts.db_path << "\n";
    return kExitUsage;
  }
  gateway::apply_workflow_bounds(config->workflows, opts);
  opts.synchronous = config->state.synchronous;
  opts.busy_timeout_ms = config->state.busy_timeout_ms;
  // Declared before the engine so that it outlives it (the engine's steps use it).
  auto in_process = std::make_shared<InProcessGateway>(config);
  // The CLI is the local user: its own runs' steps go out under the first gateway key.
  auto client = std::make_shared<gateway::GatewayStepClient>(
      [in_process](const std::string&) { return in_process->target(); });
  // Runs submitted over HTTP keep their restrictions when the local user resumes them here.
  opts.executors.exec =
      gateway::make_gated_exec_executor([config] { return config->workflows.allow_exec; });
  opts.executors.http = wf::make_http_executor(
      gateway::make_blocking_http_caller([config] { return config->workflows.http_allow; }));
  opts.executors.llm = wf::make_llm_executor(client);
  opts.executors.feedback = client;
  opts.on_transition = [](const wf::Transition& t) { std::cout << t.to_line() << std::endl; };
  auto engine = wf::Engine::open(opts);
  if (!engine.ok()) {
    std::cerr << "switchboard workflow: " << engine.status().message() << "\n";
    return kExitRuntime;
  }
  wf::Engine& e = **engine;

  auto finish = [](const Result<wf::RunResult>& r) {
    if (!r.ok()) {
      std::cerr << "switchboard workflow: " << r.status().message() << "\n";
      // An unknown run is a usage error; a refusal (a live owner, a changed definition) is not.
      return r.status().code() == StatusCode::kNotFound ? kExitUsage : kExitRuntime;
    }
    if (r->status != wf::RunStatus::kCompleted && !r->error.empty())
      std::cerr << "switchboard workflow: " << r->error << "\n";
    return r->status == wf::RunStatus::kCompleted ? kExitOk : kExitRuntime;
  };
  auto read_definition = [&](std::optional<wf::Definition>& out) {
    auto def = wf::load_definition_file(a.file);
    if (!def.ok()) {
      for (const auto& err : def.errors) std::cerr << err.to_string() << "\n";
      std::cerr << def.errors.size() << (def.errors.size() == 1 ? " error" : " errors") << "\n";
      return false;
    }
    out = std::move(*def.definition);
    return true;
  };

  if (*a.run) {
    std::optional<wf::Definition> def;
    if (!read_definition(def)) return kExitUsage;
    boost::system::error_code ec;
    json::value input = json::parse(a.input, ec);
    if (ec) {
      std::cerr << "switchboard workflow run: --input is not valid JSON: " << ec.message() << "\n";
      return kExitUsage;
    }
    // Born claimed: a gateway sharing the database does not take it before this process runs it.
    auto id = e.create_run(*def, input, "", /*claim=*/true);
    if (!id.ok()) {
      std::cerr << "switchboard workflow run: " << id.status().message() << "\n";
      return id.status().code() == StatusCode::kInvalidArgument ? kExitUsage : kExitRuntime;
    }
    std::cout << "run " << *id << " started" << std::endl;
    return finish(e.run(*id));
  }
  if (*a.resume) {
    std::optional<wf::Definition> def;
    if (!a.file.empty() && !read_definition(def)) return kExitUsage;
    // An owner that was killed on this host is taken over at once (the engine's takeover
    // prints "run <id> taken over: ..."). A live one, or one on another host, holds the run
    // until its lease lapses: refused (exit 1, with the time left) unless --wait. The wait
    // holds no claim and writes nothing, so the default SIGINT (ending the process) is a clean
    // way to give it up.
    wf::Interrupt wait_forever(SystemClock::instance());
    return finish(
        e.run(a.run_id, def ? &*def : nullptr, a.force, a.wait ? &wait_forever : nullptr));
  }
  if (*a.cancel) {
    Status st = e.request_cancel(a.run_id);
    if (!st.ok()) {
      std::cerr << "switchboard workflow cancel: " << st.message() << "\n";
      return st.code() == StatusCode::kNotFound ? kExitUsage : kExitRuntime;
    }
    std::cout << "run " << a.run_id << " cancel requested\n";
    return kExitOk;
  }
  if (*a.list) {
    auto runs = e.list_runs(1000);
    if (!runs.ok()) {
      std::cerr << "switchboard workflow list: " << runs.status().message() << "\n";
      return kExitRuntime;
    }
    std::cout << wf::format_runs(*runs, a.json);
    return kExitOk;
  }
  if (*a.show) {
    auto run = e.get_run(a.run_id);
    if (!run.ok()) {
      std::cerr << "switchboard workflow show: " << run.status().message() << "\n";
      return run.status().code() == StatusCode::kNotFound ? kExitUsage : kExitRuntime;
    }
    std::cout << wf::format_run(*run, a.json);
    return kExitOk;
  }
  return kExitUsage;
}

}  // namespace switchboard::cli
