// Internal to src/common: ConfigReader turns a YAML document into a Config (or a MockScenario):
// one reader per section on YamlReader's typed readers, then the checks across sections (models
// name providers, routes name models, a provider that a route needs has keys, gateway keys name
// routes). The readers are defined by group: config_sections.cpp (the root and the gateway-wide
// sections), config_sections_providers.cpp (providers, models, routes) and config_sections_mock.cpp
// (mock scenarios); config_loader.cpp drives them.
//
// Thread-safety: none; an instance reads one document on one thread.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/yaml_reader.h"

namespace switchboard::config_detail {

class ConfigReader : public YamlReader {
 public:
  using YamlReader::YamlReader;

  // config_loader.cpp
  ConfigLoad load_text(const std::string& text);
  // config_sections_mock.cpp
  MockScenarioLoad load_mock(const std::string& text);

 private:
  ConfigLoad finish();

  // ---- config_sections.cpp ----------------------------------------------------------------------
  void read_root(const YAML::Node& root);
  void check_listen(const YAML::Node& n, const std::string& v);
  void read_server(const YAML::Node& n);
  void read_state(const YAML::Node& n);
  void read_auth(const YAML::Node& n);
  // `env:NAME` (comma-separated keys), or a list whose entries are keys or
  // {key, name, routes, rpm, monthly_budget_usd}.
  void read_gateway_keys(const YAML::Node& n, AuthConfig& a);
  // Route lists of gateway keys must name routes or models that exist.
  void check_gateway_routes(const YAML::Node& auth);
  void read_log(const YAML::Node& n);
  void read_telemetry(const YAML::Node& n);
  void read_cooldown(const YAML::Node& n, const std::string& p, CooldownConfig& c);
  void read_breaker(const YAML::Node& n, const std::string& p, BreakerConfig& b);
  void read_quota(const YAML::Node& n, const std::string& p, QuotaConfig& q);
  void read_retry(const YAML::Node& n);
  void read_cluster(const YAML::Node& n);
  void read_learning(const YAML::Node& n);
  void read_workflows(const YAML::Node& n);
  void read_routing(const YAML::Node& n);

  // ---- config_sections_providers.cpp ------------------------------------------------------------
  // A list of secrets: `env:NAME` (comma-separated in that variable) or a YAML list of literals
  // or env: references. Entries may be mappings {key, weight} when `weights` is given.
  std::vector<std::string> read_secret_list(const YAML::Node& n, const std::string& path, bool,
                                            std::vector<double>* weights = nullptr,
                                            std::string* missing_var = nullptr);
  void read_providers(const YAML::Node& n);
  // A provider's headers, proxy, tls and responses mode.
  void read_provider_egress(const YAML::Node& v, const std::string& p, ProviderConfig& pc);
  void read_models(const YAML::Node& n);
  void read_routes(const YAML::Node& n);
  // A provider that some route needs must have keys (mocks always have one).
  void check_keys_for_routes(const YAML::Node& providers);

  // ---- config_sections_mock.cpp -----------------------------------------------------------------
  void read_mock(const YAML::Node& n, const std::string& p, MockScenario& m);

  Config cfg_;
  std::map<std::string, std::string> missing_vars_;
};

}  // namespace switchboard::config_detail
