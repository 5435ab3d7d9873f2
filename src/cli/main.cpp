// switchboard: the one binary. Each subcommand parses its flags here and calls into a module.
// Exit codes (DESIGN.md): 0 ok, 1 runtime failure, 2 bad usage or invalid configuration.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <string>

#include "cli/admin_views.h"
#include "cli/workflow_cmd.h"
#include "common/config.h"
#include "common/json.h"
#include "common/version.h"
#include "gateway/gateway.h"
#include "gateway/mock_provider.h"
#include "routing/routing.h"
#include "store/store.h"

namespace {

using switchboard::ConfigLoad;
using switchboard::Environment;

constexpr int kExitOk = 0;
constexpr int kExitRuntime = 1;
constexpr int kExitUsage = 2;

void print_errors(const ConfigLoad& load) {
  for (const auto& e : load.errors) std::cerr << e.to_string() << "\n";
  std::cerr << load.errors.size() << (load.errors.size() == 1 ? " error" : " errors") << "\n";
}

int cmd_check_config(const std::string& file) {
  auto load = switchboard::load_config_file(file, Environment::from_process());
  if (!load.ok()) {
    print_errors(load);
    return kExitUsage;
  }
  std::cout << switchboard::dump_config(*load.config);
  std::cerr << file << ": ok\n";
  return kExitOk;
}

struct RouteText {
  std::string prompt;  // the last user message ("" = no features)
  std::string system;
  std::string user_agent;
};

int cmd_route(const std::string& file, const std::string& model, const std::string& complexity,
              const std::string& category, const std::string& db, uint64_t seed, bool seeded,
              const RouteText& text) {
  auto load = switchboard::load_config_file(file, Environment::from_process());
  if (!load.ok()) {
    print_errors(load);
    return kExitUsage;
  }
  switchboard::routing::RequestInfo req;
  req.model = model;
  req.category = category;
  if (!complexity.empty()) {
    req.complexity = switchboard::parse_complexity(complexity);
    if (!req.complexity) {
      std::cerr << "switchboard route: unknown complexity '" << complexity
                << "' (expected simple | moderate | high | critical)\n";
      return kExitUsage;
    }
  }
  auto config = std::make_shared<const switchboard::Config>(std::move(*load.config));
  switchboard::routing::Router router(config);
  if (!db.empty()) {
    // Plan with what the gateway learned: the state a restart would restore, read-only.
    auto loaded =
        switchboard::store::load_state(db, switchboard::SystemClock::instance().wall_now());
    if (!loaded.ok()) {
      std::cerr << "switchboard route: " << loaded.status().message() << "\n";
      return loaded.status().code() == switchboard::StatusCode::kNotFound ? kExitUsage
                                                                          : kExitRuntime;
    }
    router.restore(switchboard::gateway::router_state_of(*loaded), loaded->learning);
  }
  // A request's text gives it features, as the gateway reads them from a body.
  std::vector<std::string> names;
  if (!text.prompt.empty()) {
    switchboard::routing::TextScanner scanner;
    scanner.keep_words();
    if (!text.system.empty()) {
      scanner.begin_message();
      scanner.set_role("system");
      scanner.text(text.system);
      scanner.end_message();
    }
    scanner.begin_message();
    scanner.set_role("user");
    scanner.text(text.prompt);
    scanner.end_message();
    req.features = switchboard::routing::build_features(
        scanner.result(), {category, complexity, 0, text.user_agent}, &names, &scanner.words());
  }
  switchboard::routing::Rng rng(seeded ? seed : std::random_device{}());
  auto plan = router.plan(req, rng);
  if (!plan.ok()) {
    std::cerr << "switchboard route: " << plan.status().message() << "\n";
    return plan.status().code() == switchboard::StatusCode::kNotFound ? kExitUsage : kExitRuntime;
  }
  std::string out = plan->to_json();
  // Which features moved each contextual choice: the largest x·w of each attempt's model.
  if (!plan->empty() && (*plan)[0].score.contextual) {
    std::string why = ",\"features\":{";
    for (size_t a = 0; a < plan->size(); ++a) {
      const auto& attempt = (*plan)[a];
      int idx = -1;
      for (size_t m = 0; m < config->models.size(); ++m)
        if (config->models[m].name == attempt.model) idx = int(m);
      why += (a ? "," : "") + switchboard::json::quote(attempt.model) + ":[";
      const auto top = router.contextual().contributions(plan->route(), idx, req.features, 6);
      for (size_t i = 0; i < top.size(); ++i) {
        std::string name = "#" + std::to_string(top[i].first);
        for (const auto& n : names)
          if (switchboard::routing::feature_slot(n) == top[i].first) name = n;
        why += (i ? "," : "") + std::string("{\"feature\":") + switchboard::json::quote(name) +
               ",\"contribution\":" + switchboard::json::number(top[i].second) + "}";
      }
      why += "]";
    }
    out.insert(out.size() - 1, why + "}");
  }
  std::cout << out << "\n";
  return kExitOk;
}

int not_in_this_build(const std::string& what) {
  std::cerr << "switchboard: '" << what
            << "' is not available in this build yet (see the project's open issues)\n";
  return kExitRuntime;
}

}  // namespace

// The URL of the gateway a configuration file describes (its `listen:`; a wildcard address is
// reached on loopback), or nullopt after printing why.
std::optional<std::string> admin_url_from_config(const std::string& path) {
  auto load = switchboard::load_config_file(path, switchboard::Environment::from_process());
  if (!load.ok()) {
    for (const auto& e : load.errors) std::cerr << e.to_string() << "\n";
    return std::nullopt;
  }
  std::string listen = load.config->listen;
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon), port = listen.substr(colon + 1);
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::" || host == "[::]") host = "[::1]";
  return "http://" + host + ":" + port;
}

int main(int argc, char** argv) {
  CLI::App app{"switchboard: an LLM gateway that routes, rotates keys, fails over and learns"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version, "print the version and exit");

  std::string check_file;
  auto* check = app.add_subcommand("check-config", "validate a configuration file");
  check->add_option("FILE", check_file, "configuration file")->required();

  std::string serve_config, serve_listen;
  auto* serve = app.add_subcommand("serve", "run the gateway");
  serve->add_option("--config", serve_config,
                    "configuration file (none: every default, listening on 127.0.0.1:8400)");
  serve->add_option("--listen", serve_listen,
                    "HOST:PORT to listen on (default: the file's listen:)");

  auto* route = app.add_subcommand("route", "print the fallback plan for a request, as JSON");
  std::string route_config, route_model, route_complexity, route_category, route_db;
  uint64_t route_seed = 0;
  route->add_option("--config", route_config, "configuration file")->required();
  route->add_option("--model", route_model, "route, model or provider/upstream name")->required();
  route->add_option("--complexity", route_complexity, "simple | moderate | high | critical");
  route->add_option("--category", route_category, "task category");
  route->add_option("--db", route_db, "plan with what the gateway learned, from its state file");
  auto* seed_opt =
      route->add_option("--seed", route_seed, "seed for the learned strategy's sampling");
  RouteText route_text;
  route->add_option("--prompt", route_text.prompt,
                    "the request's last user message: plan by its features, as the gateway does "
                    "for a request without a category hint");
  route->add_option("--system", route_text.system, "the request's system prompt (with --prompt)");
  route->add_option("--user-agent", route_text.user_agent,
                    "the client's User-Agent (with --prompt)");

  std::string admin_url = "http://127.0.0.1:8400";
  std::string admin_config;
  bool admin_json = false;
  std::vector<CLI::App*> views;
  for (const char* name : {"keys", "breakers", "models", "quotas"}) {
    auto* sub = app.add_subcommand(name, std::string("show ") + name +
                                             " of a running gateway (the admin key, when one is "
                                             "set, is read from SWITCHBOARD_ADMIN_KEY)");
    views.push_back(sub);
    auto* url = sub->add_option("--url", admin_url, "gateway URL")->capture_default_str();
    sub->add_option("--config", admin_config,
                    "the gateway's configuration file: its URL from `listen:`")
        ->excludes(url);
    sub->add_flag("--json", admin_json, "print JSON instead of a table");
  }

  auto* mock = app.add_subcommand("mock-provider", "run a fake OpenAI-compatible upstream");
  std::string mock_listen, mock_scenario;
  mock->add_option("--listen", mock_listen, "HOST:PORT")->required();
  mock->add_option("--scenario", mock_scenario, "scenario file");

  auto* stats = app.add_subcommand("stats", "per-model statistics from a store");
  std::string stats_db = "./switchboard.db";
  stats->add_option("--db", stats_db, "database path, or postgresql:// URL of a shared database")
      ->capture_default_str();
  bool stats_json = false;
  stats->add_flag("--json", stats_json, "print JSON instead of a table");

  auto* workflow = app.add_subcommand("workflow", "durable workflows");
  workflow->require_subcommand(1);
  switchboard::cli::WorkflowArgs workflow_args;
  switchboard::cli::add_workflow_commands(workflow, workflow_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? kExitOk : kExitUsage;
  }

  if (version) {
    std::cout << "switchboard " << SWITCHBOARD_VERSION << " (" << switchboard::build_commit()
              << ")\n";
    return kExitOk;
  }
  if (*check) return cmd_check_config(check_file);
  for (auto* v : views) {
    if (!*v) continue;
    if (!admin_config.empty()) {
      auto url = admin_url_from_config(admin_config);
      if (!url) return kExitUsage;
      admin_url = *url;
    }
    return switchboard::cli::run_admin_view(v->get_name(), admin_url, admin_json);
  }
  if (*serve) return switchboard::gateway::run_serve(serve_config, serve_listen);
  if (*mock) return switchboard::gateway::run_mock_provider(mock_listen, mock_scenario);
  if (*stats) {
    auto text = switchboard::store::format_model_stats(stats_db, stats_json);
    if (!text.ok()) {
      std::cerr << "switchboard stats: " << text.status().message() << "\n";
      return text.status().code() == switchboard::StatusCode::kNotFound ? kExitUsage : kExitRuntime;
    }
    std::cout << *text;
    return kExitOk;
  }
  if (*route)
    return cmd_route(route_config, route_model, route_complexity, route_category, route_db,
                     route_seed, seed_opt->count() > 0, route_text);
  if (*workflow) return switchboard::cli::run_workflow_command(workflow_args);
  for (auto* sub : app.get_subcommands()) return not_in_this_build(sub->get_name());
  std::cout << app.help();
  return kExitUsage;
}
