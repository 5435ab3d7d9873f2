// YAML → Config: the public load_* functions and the built-in defaults. The reading itself is
// ConfigReader's (config_reader.h): YAML reading and errors in yaml_reader.cpp, environment
// overrides in env_overrides.cpp, the sections in config_sections*.cpp.
#include <fstream>
#include <sstream>

#include "common/config.h"
#include "common/config_reader.h"

namespace switchboard {
namespace config_detail {

ConfigLoad ConfigReader::load_text(const std::string& text) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    ConfigError err;
    err.source = source_;
    err.line = e.mark.line + 1;
    err.column = e.mark.column + 1;
    err.message = "YAML syntax error: " + e.msg;
    return ConfigLoad{std::nullopt, {err}};
  }
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) {
    error(root, "", "the configuration must be a mapping of sections");
    return finish();
  }
  try {
    apply_overrides(root);
    read_root(root);
  } catch (const YAML::Exception& e) {
    // A shape the readers did not anticipate: still an error with a position, never a crash.
    ConfigError err;
    err.source = source_;
    err.line = e.mark.line + 1;
    err.column = e.mark.column + 1;
    err.message = "unexpected structure: " + e.msg;
    errors_.push_back(err);
  }
  return finish();
}

ConfigLoad ConfigReader::finish() {
  ConfigLoad out;
  out.errors = std::move(errors_);
  if (out.errors.empty()) out.config = std::move(cfg_);
  return out;
}

}  // namespace config_detail

namespace {

const char* kDefaultConfig =
    R"(# Built-in defaults: real providers when their keys are set, else the in-process mock.
listen: 127.0.0.1:8400
state: { backend: sqlite, path: ./switchboard.db }
providers:
  openai:
    kind: openai
    keys: env:OPENAI_API_KEYS
    mock_if_no_keys: true
  anthropic:
    kind: anthropic
    keys: env:ANTHROPIC_API_KEYS
    mock_if_no_keys: true
models:
  gpt-4o-mini: { provider: openai, tier: speed, cost: { input_per_mtok: 0.15, output_per_mtok: 0.6 }, context_window: 128000 }
  gpt-4o: { provider: openai, tier: flagship, cost: { input_per_mtok: 2.5, output_per_mtok: 10 }, context_window: 128000, strengths: [coding] }
  claude-haiku: { provider: anthropic, upstream: claude-3-5-haiku-latest, tier: speed, cost: { input_per_mtok: 0.8, output_per_mtok: 4 }, context_window: 200000 }
  claude-sonnet: { provider: anthropic, upstream: claude-sonnet-4-5, tier: flagship, cost: { input_per_mtok: 3, output_per_mtok: 15 }, context_window: 200000, strengths: [coding] }
routes:
  auto:
    strategy: learned
    layers: [[gpt-4o, claude-sonnet], [gpt-4o-mini, claude-haiku]]
)";

}  // namespace

ConfigLoad load_config_string(const std::string& yaml, const std::string& source_name,
                              const Environment& env) {
  config_detail::ConfigReader loader(source_name, env);
  return loader.load_text(yaml);
}

ConfigLoad load_config_file(const std::string& path, const Environment& env) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ConfigError e;
    e.source = path;
    e.message = "cannot read the configuration file";
    return ConfigLoad{std::nullopt, {e}};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return load_config_string(ss.str(), path, env);
}

MockScenarioLoad load_mock_scenario_string(const std::string& yaml,
                                           const std::string& source_name) {
  Environment env;
  config_detail::ConfigReader loader(source_name, env);
  return loader.load_mock(yaml);
}

MockScenarioLoad load_mock_scenario_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ConfigError e;
    e.source = path;
    e.message = "cannot read the scenario file";
    return MockScenarioLoad{std::nullopt, {e}};
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return load_mock_scenario_string(ss.str(), path);
}

ConfigLoad default_config(const Environment& env) {
  return load_config_string(kDefaultConfig, "<built-in defaults>", env);
}

}  // namespace switchboard
