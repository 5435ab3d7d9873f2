#include "common/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

namespace switchboard {
namespace {

Environment no_env() {
  return Environment::from_map({});
}

const char* kMinimal = R"(
providers:
  openai:
    kind: openai
    keys: env:TEST_OPENAI_KEYS
    limits: { rpm: 100 }
models:
  small: { provider: openai, tier: speed }
routes:
  auto:
    layers: [[small]]
)";

TEST(ConfigTest, EmptyFileGivesDesignDefaults) {
  auto load = load_config_string("", "empty.yaml", no_env());
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const Config& c = *load.config;
  EXPECT_EQ(c.listen, "127.0.0.1:8400");
  EXPECT_EQ(c.state.backend, "sqlite");
  EXPECT_EQ(c.state.path, "./switchboard.db");
  EXPECT_EQ(c.cooldown.initial_ms, 1000);
  EXPECT_DOUBLE_EQ(c.cooldown.multiplier, 2.0);
  EXPECT_EQ(c.cooldown.max_ms, 300000);
  EXPECT_DOUBLE_EQ(c.cooldown.jitter, 0.2);
  EXPECT_EQ(c.breaker.window, 20);
  EXPECT_EQ(c.breaker.min_calls, 5);
  EXPECT_DOUBLE_EQ(c.breaker.failure_rate, 0.5);
  EXPECT_EQ(c.breaker.slow_call_ms, 60000);
  EXPECT_DOUBLE_EQ(c.breaker.slow_call_rate, 0.8);
  EXPECT_EQ(c.breaker.open_ms, 30000);
  EXPECT_EQ(c.breaker.half_open_probes, 2);
  EXPECT_EQ(c.retry.max_attempts, 6);
  EXPECT_EQ(c.retry.budget_ms, 120000);
  EXPECT_EQ(c.retry.wait_for_key_ms, 10000);
  EXPECT_DOUBLE_EQ(c.learning.prior_alpha, 1);
  EXPECT_DOUBLE_EQ(c.learning.half_life, 100);
  EXPECT_DOUBLE_EQ(c.learning.explore, 0.05);
}

TEST(ConfigTest, KeysFromEnvironmentGetIdsInOrder) {
  auto load = load_config_string(kMinimal, "t.yaml",
                                 Environment::from_map({{"TEST_OPENAI_KEYS", "sk-a, sk-b,,sk-c"}}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const auto* p = load.config->find_provider("openai");
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(p->keys.size(), 3u);
  EXPECT_EQ(p->keys[0].id, "openai#1");
  EXPECT_EQ(p->keys[0].secret, "sk-a");
  EXPECT_EQ(p->keys[2].id, "openai#3");
  EXPECT_EQ(p->keys[2].secret, "sk-c");
  EXPECT_EQ(p->limits.rpm, 100);
  EXPECT_EQ(p->base_url, "https://api.openai.com/v1");
  // Provider sections inherit the global cooldown and breaker.
  EXPECT_EQ(p->breaker.open_ms, load.config->breaker.open_ms);
  EXPECT_EQ(load.config->find_model("small")->upstream, "small");
}

TEST(ConfigTest, KeyListWithWeightsAndEnvEntries) {
  const char* yaml = R"(
providers:
  p:
    kind: openai
    base_url: http://127.0.0.1:9000/v1/
    keys: [literal-key, env:ONE_KEY, { key: weighted-key, weight: 3 }]
)";
  auto load = load_config_string(yaml, "t.yaml", Environment::from_map({{"ONE_KEY", "from-env"}}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const auto& keys = load.config->providers[0].keys;
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[1].secret, "from-env");
  EXPECT_DOUBLE_EQ(keys[2].weight, 3.0);
  EXPECT_EQ(load.config->providers[0].base_url, "http://127.0.0.1:9000/v1");
}

TEST(ConfigTest, ClusterSectionParsesTheRedisUrlAndKeepsItsPasswordSecret) {
  auto load = load_config_string(
      "cluster: { redis: \"redis://:hunter2-pass@10.0.0.5:6380/3\", lease_ttl_ms: 5000,\n"
      "           expected_gateways: 3, on_redis_down: refuse }\n",
      "t.yaml", no_env());
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const ClusterConfig& c = load.config->cluster;
  EXPECT_TRUE(c.enabled());
  EXPECT_EQ(c.redis_host, "10.0.0.5");
  EXPECT_EQ(c.redis_port, 6380);
  EXPECT_EQ(c.redis_db, 3);
  EXPECT_EQ(c.redis_password, "hunter2-pass");
  EXPECT_EQ(c.lease_ttl_ms, 5000);
  EXPECT_EQ(c.expected_gateways, 3);
  EXPECT_EQ(c.on_redis_down, RedisDownPolicy::kRefuse);
  bool listed = false;
  for (const auto& [secret, id] : load.config->secrets()) listed |= secret == "hunter2-pass";
  EXPECT_TRUE(listed) << "the password is redacted like every secret";
  const std::string dump = dump_config(*load.config);
  EXPECT_EQ(dump.find("hunter2"), std::string::npos) << dump;
  EXPECT_NE(dump.find("redis://10.0.0.5:6380/3"), std::string::npos) << dump;

  auto none = load_config_string("", "t.yaml", no_env());
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none.config->cluster.enabled()) << "a single gateway by default";
}

TEST(ConfigTest, ABadRedisUrlIsAnErrorAtItsLineThatDoesNotEchoIt) {
  for (const char* url : {"http://host:6379", "redis://:secret-pw@host:99999/0", "redis://",
                          "redis://host:63a9", "redis://host/db"}) {
    auto load =
        load_config_string(std::string("listen: 127.0.0.1:1\ncluster:\n  redis: \"") + url + "\"\n",
                           "t.yaml", no_env());
    ASSERT_FALSE(load.ok()) << url;
    EXPECT_EQ(load.errors[0].path, "cluster.redis") << url;
    EXPECT_EQ(load.errors[0].line, 3) << url;
    EXPECT_EQ(load.errors[0].to_string().find("secret-pw"), std::string::npos);
  }
  auto ttl = load_config_string("cluster: { redis: \"redis://h\", lease_ttl_ms: 5 }\n", "t.yaml",
                                no_env());
  ASSERT_FALSE(ttl.ok());
  EXPECT_EQ(ttl.errors[0].path, "cluster.lease_ttl_ms");
}

TEST(ConfigTest, APostgresStateKeepsItsUrlPasswordSecretAndNeedsAUrl) {
  auto load = load_config_string(
      "state: { backend: postgres, url: "
      "\"postgresql://sb:pg-hunter3@db.internal:5433/switchboard\","
      " node: gw-1 }\n",
      "t.yaml", no_env());
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const StateConfig& s = load.config->state;
  EXPECT_EQ(s.backend, "postgres");
  EXPECT_EQ(s.node, "gw-1");
  EXPECT_EQ(s.url_password, "pg-hunter3");
  bool listed = false;
  for (const auto& [secret, id] : load.config->secrets()) listed |= secret == "pg-hunter3";
  EXPECT_TRUE(listed);
  const std::string dump = dump_config(*load.config);
  EXPECT_EQ(dump.find("pg-hunter3"), std::string::npos) << dump;
  EXPECT_NE(dump.find("postgresql://sb:***@db.internal:5433/switchboard"), std::string::npos)
      << dump;

  auto query = load_config_string(
      "state: { backend: postgres, url: \"postgresql://db/sb?sslmode=require&password=pg-q-4\" }\n",
      "t.yaml", no_env());
  ASSERT_TRUE(query.ok());
  EXPECT_EQ(query.config->state.url_password, "pg-q-4");
  EXPECT_EQ(dump_config(*query.config).find("pg-q-4"), std::string::npos);

  auto missing = load_config_string("state:\n  backend: postgres\n", "t.yaml", no_env());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.errors[0].path, "state.url");
  auto bad = load_config_string("state: { backend: postgres, url: \"mysql://u:pw-x@h/db\" }\n",
                                "t.yaml", no_env());
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.errors[0].path, "state.url");
  EXPECT_EQ(bad.errors[0].to_string().find("pw-x"), std::string::npos);
  auto node = load_config_string("state: { node: \"two words\" }\n", "t.yaml", no_env());
  ASSERT_FALSE(node.ok());
  EXPECT_EQ(node.errors[0].path, "state.node");
}

TEST(ConfigTest, EnvOverrideTakesPrecedenceOverFile) {
  const char* yaml = "breaker: { open_ms: 1000 }\n";
  auto load = load_config_string(
      yaml, "t.yaml", Environment::from_map({{"SWITCHBOARD__BREAKER__OPEN_MS", "5000"}}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  EXPECT_EQ(load.config->breaker.open_ms, 5000);
}

TEST(ConfigTest, EnvOverrideCreatesMissingSectionsAndReachesProviders) {
  auto load = load_config_string(
      kMinimal, "t.yaml",
      Environment::from_map({{"TEST_OPENAI_KEYS", "sk-a"},
                             {"SWITCHBOARD__RETRY__MAX_ATTEMPTS", "3"},
                             {"SWITCHBOARD__PROVIDERS__OPENAI__LIMITS__RPM", "7"},
                             {"SWITCHBOARD__LEARNING__PRIOR", "[2, 3]"}}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  EXPECT_EQ(load.config->retry.max_attempts, 3);
  EXPECT_EQ(load.config->find_provider("openai")->limits.rpm, 7);
  EXPECT_DOUBLE_EQ(load.config->learning.prior_alpha, 2);
  EXPECT_DOUBLE_EQ(load.config->learning.prior_beta, 3);
}

TEST(ConfigTest, EnvOverrideIsTypeCheckedAndNamesTheVariable) {
  auto load = load_config_string(
      "", "t.yaml", Environment::from_map({{"SWITCHBOARD__BREAKER__OPEN_MS", "soon"}}));
  ASSERT_FALSE(load.ok());
  ASSERT_EQ(load.errors.size(), 1u);
  EXPECT_EQ(load.errors[0].path, "breaker.open_ms");
  EXPECT_EQ(load.errors[0].source, "env SWITCHBOARD__BREAKER__OPEN_MS");
  EXPECT_NE(load.errors[0].message.find("integer"), std::string::npos);
}

TEST(ConfigTest, EnvOverrideOfUnknownKeyIsAnError) {
  auto load = load_config_string(
      "", "t.yaml", Environment::from_map({{"SWITCHBOARD__BREAKER__OPEN_SECONDS", "5"}}));
  ASSERT_FALSE(load.ok());
  EXPECT_EQ(load.errors[0].path, "breaker.open_seconds");
  EXPECT_EQ(load.errors[0].source, "env SWITCHBOARD__BREAKER__OPEN_SECONDS");
}

TEST(ConfigTest, SingleUnderscoreVariablesAreNotOverrides) {
  auto load = load_config_string(
      "", "t.yaml", Environment::from_map({{"SWITCHBOARD_KEYS", "a,b"}, {"SWITCHBOARD_X", "1"}}));
  EXPECT_TRUE(load.ok());
}

TEST(ConfigTest, ReportsEveryErrorNotOnlyTheFirst) {
  const char* yaml = R"(
breaker: { window: 0, failure_rate: 2 }
retry: { max_attempts: many }
bogus: 1
)";
  auto load = load_config_string(yaml, "t.yaml", no_env());
  ASSERT_FALSE(load.ok());
  std::vector<std::string> paths;
  for (const auto& e : load.errors) paths.push_back(e.path);
  EXPECT_EQ(load.errors.size(), 4u);
  EXPECT_NE(std::find(paths.begin(), paths.end(), "breaker.window"), paths.end());
  EXPECT_NE(std::find(paths.begin(), paths.end(), "breaker.failure_rate"), paths.end());
  EXPECT_NE(std::find(paths.begin(), paths.end(), "retry.max_attempts"), paths.end());
  EXPECT_NE(std::find(paths.begin(), paths.end(), "bogus"), paths.end());
}

TEST(ConfigTest, ProviderOverridesGlobalBreaker) {
  const char* yaml = R"(
breaker: { open_ms: 1000 }
providers:
  a: { kind: mock, breaker: { window: 50 } }
  b: { kind: mock }
)";
  auto load = load_config_string(yaml, "t.yaml", no_env());
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  EXPECT_EQ(load.config->find_provider("a")->breaker.window, 50);
  EXPECT_EQ(load.config->find_provider("a")->breaker.open_ms, 1000);
  EXPECT_EQ(load.config->find_provider("b")->breaker.window, 20);
}

TEST(ConfigTest, MockIfNoKeysSubstitutesTheMock) {
  const char* yaml = R"(
providers:
  openai: { kind: openai, keys: env:NOT_SET_ANYWHERE, mock_if_no_keys: true }
models:
  m: { provider: openai }
routes:
  auto: { layers: [m] }
)";
  auto load = load_config_string(yaml, "t.yaml", no_env());
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const auto* p = load.config->find_provider("openai");
  EXPECT_EQ(p->kind, ProviderKind::kMock);
  EXPECT_TRUE(p->mock_substitute);
  EXPECT_EQ(p->keys.size(), 1u);
}

TEST(ConfigTest, MockProviderScenarioIsRead) {
  const char* yaml = R"(
providers:
  p:
    kind: mock
    mock:
      latency_ms: 25
      rpm: 3
      script: [{ status: 503, times: 2 }]
      quality: { m: { sql: 0.4, default: 0.9 } }
)";
  auto load = load_config_string(yaml, "t.yaml", Environment::from_map({}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const auto& m = load.config->providers[0].mock;
  EXPECT_EQ(m.latency_ms, 25);
  EXPECT_EQ(m.rpm, 3);
  ASSERT_EQ(m.script.size(), 1u);
  EXPECT_EQ(m.script[0].status, 503);
  EXPECT_EQ(m.script[0].times, 2);
  EXPECT_DOUBLE_EQ(m.quality.at("m").at("sql"), 0.4);
  auto bad = load_config_string("providers:\n  p: { kind: mock, mock: { error_rate: 2 } }\n",
                                "t.yaml", Environment::from_map({}));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.errors[0].path, "providers.p.mock.error_rate");
}

TEST(ConfigTest, DefaultConfigUsesRealProvidersWhenKeysAreSet) {
  auto with = default_config(Environment::from_map({{"OPENAI_API_KEYS", "sk-real"}}));
  ASSERT_TRUE(with.ok());
  EXPECT_EQ(with.config->find_provider("openai")->kind, ProviderKind::kOpenAI);
  EXPECT_EQ(with.config->find_provider("anthropic")->kind, ProviderKind::kMock);
  auto without = default_config(no_env());
  ASSERT_TRUE(without.ok());
  EXPECT_EQ(without.config->find_provider("openai")->kind, ProviderKind::kMock);
  EXPECT_NE(without.config->find_route("auto"), nullptr);
}

TEST(ConfigTest, DumpMasksSecrets) {
  auto load = load_config_string(
      std::string(kMinimal) +
          "auth: { gateway_keys: [gw-secret-123], admin_key: adm-secret-456 }\n",
      "t.yaml", Environment::from_map({{"TEST_OPENAI_KEYS", "sk-live-supersecret"}}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  std::string dump = dump_config(*load.config);
  EXPECT_EQ(dump.find("sk-live-supersecret"), std::string::npos);
  EXPECT_EQ(dump.find("gw-secret-123"), std::string::npos);
  EXPECT_EQ(dump.find("adm-secret-456"), std::string::npos);
  EXPECT_NE(dump.find("openai#1"), std::string::npos);
  EXPECT_NE(dump.find(load.config->providers[0].keys[0].fingerprint()), std::string::npos);
  // The dump is itself a valid configuration of the same shape (secrets aside).
  EXPECT_NE(dump.find("layers: [[small]]"), std::string::npos);
}

TEST(ConfigTest, FingerprintIsStableAndHidesTheSecret) {
  KeyConfig a{"p#1", "sk-abc", 1.0};
  KeyConfig b{"p#2", "sk-abd", 1.0};
  EXPECT_EQ(a.fingerprint(), (KeyConfig{"x", "sk-abc", 1.0}.fingerprint()));
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  EXPECT_EQ(a.fingerprint().rfind("sha256:", 0), 0u);
  EXPECT_EQ(a.fingerprint().find("sk-abc"), std::string::npos);
}

TEST(ConfigTest, ExampleConfigIsValid) {
  auto load = load_config_file(SWITCHBOARD_EXAMPLE_CONFIG, no_env());
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  EXPECT_GE(load.config->routes.size(), 1u);
}

TEST(ConfigTest, MissingFileIsAnError) {
  auto load = load_config_file("/nonexistent/switchboard.yaml", no_env());
  ASSERT_FALSE(load.ok());
  EXPECT_NE(load.errors[0].to_string().find("cannot read"), std::string::npos);
}

// Each tests/common/configs/bad_*.yaml states on its first line the path, line and column of the
// error it must produce.
TEST(ConfigTest, BadConfigurationsReportPathLineAndColumn) {
  namespace fs = std::filesystem;
  int checked = 0;
  for (const auto& entry : fs::directory_iterator(SWITCHBOARD_TEST_CONFIG_DIR)) {
    std::string name = entry.path().filename().string();
    if (name.rfind("bad_", 0) != 0) continue;
    std::ifstream in(entry.path());
    std::string first;
    std::getline(in, first);
    std::smatch m;
    static const std::regex kExpect(R"(# expect: (\S+) (\d+):(\d+))");
    ASSERT_TRUE(std::regex_match(first, m, kExpect)) << name;
    std::string path = m[1] == "-" ? "" : std::string(m[1]);
    int line = std::stoi(m[2]);
    int col = std::stoi(m[3]);
    auto load = load_config_file(entry.path().string(), no_env());
    ASSERT_FALSE(load.ok()) << name << " was accepted";
    bool found = false;
    for (const auto& e : load.errors) {
      if (e.path == path && e.line == line && e.column == col) found = true;
    }
    std::string all;
    for (const auto& e : load.errors) all += e.to_string() + "\n";
    EXPECT_TRUE(found) << name << ": expected " << path << " at " << line << ":" << col
                       << ", got:\n"
                       << all;
    ++checked;
  }
  EXPECT_GE(checked, 12);
}

}  // namespace
}  // namespace switchboard

namespace switchboard {
namespace {

// The `workflows:` block (DESIGN.md): defaults closed, values checked with line and column.
TEST(ConfigWorkflows, DefaultsAreClosedAndValuesAreRead) {
  auto defaults = load_config_string("", "empty.yaml", Environment::from_map({}));
  ASSERT_TRUE(defaults.ok());
  EXPECT_FALSE(defaults.config->workflows.allow_exec);
  EXPECT_TRUE(defaults.config->workflows.http_allow.empty());
  EXPECT_EQ(defaults.config->workflows.max_concurrent_runs, 32);
  EXPECT_EQ(defaults.config->workflows.max_parallel, 64);
  EXPECT_EQ(defaults.config->workflows.lease_ms, 30000);
  EXPECT_EQ(defaults.config->server.body_timeout_ms, 60000);

  auto load = load_config_string(
      "workflows:\n  allow_exec: true\n  http_allow: ['http://10.0.0.5:8080/', "
      "'https://intranet.example/api/']\n  max_parallel: 8\n  max_concurrent_runs: 3\n",
      "w.yaml", Environment::from_map({{"SWITCHBOARD__WORKFLOWS__LEASE_MS", "5000"}}));
  ASSERT_TRUE(load.ok()) << load.errors.front().to_string();
  const auto& w = load.config->workflows;
  EXPECT_TRUE(w.allow_exec);
  ASSERT_EQ(w.http_allow.size(), 2u);
  EXPECT_EQ(w.http_allow[1], "https://intranet.example/api/");
  EXPECT_EQ(w.max_parallel, 8);
  EXPECT_EQ(w.max_concurrent_runs, 3);
  EXPECT_EQ(w.lease_ms, 5000);
  const std::string dump = dump_config(*load.config);
  EXPECT_NE(dump.find("http://10.0.0.5:8080/"), std::string::npos) << dump;
  EXPECT_NE(dump.find("allow_exec: true"), std::string::npos) << dump;
}

TEST(ConfigWorkflows, PrefixesMustNameAWholeOrigin) {
  auto load = load_config_string(
      "workflows:\n  http_allow:\n    - http://10.0.0.1\n    - 'ftp://x/'\n  max_parallel: 0\n"
      "  allow_exec: maybe\n  colour: red\n",
      "w.yaml", Environment::from_map({}));
  ASSERT_FALSE(load.ok());
  std::string all;
  for (const auto& e : load.errors) all += e.to_string() + "\n";
  EXPECT_NE(all.find("w.yaml:3:7: workflows.http_allow[0]"), std::string::npos) << all;
  EXPECT_NE(all.find("workflows.http_allow[1]"), std::string::npos) << all;
  EXPECT_NE(all.find("workflows.max_parallel"), std::string::npos) << all;
  EXPECT_NE(all.find("workflows.allow_exec"), std::string::npos) << all;
  EXPECT_NE(all.find("unknown key 'colour'"), std::string::npos) << all;
}

}  // namespace
}  // namespace switchboard
