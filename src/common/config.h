// Configuration: the typed form of switchboard.yaml (DESIGN.md "Configuration").
//
// `load_config_*` parses YAML, applies `SWITCHBOARD__A__B=value` environment overrides (values
// parsed and checked exactly like file values), resolves `env:NAME` references, fills every
// default, and validates. It reports every error it finds, each with its path
// (`providers.openai.limits.rpm`), the YAML line and column (1-based), or the environment
// variable that set the value. A Config that comes back is complete and valid: later modules never
// re-check it.
//
// Thread-safety: Config is a plain value; share it as `std::shared_ptr<const Config>`.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace switchboard {

// Per key; 0 means no limit.
struct RateLimits {
  int64_t rpm = 0;
  int64_t tpm = 0;
  int64_t rpd = 0;
  int64_t tpd = 0;
  int64_t max_concurrent = 0;
  // Daily windows (rpd/tpd) reset at this UTC hour, or roll over the last 24 h when negative.
  int daily_reset_hour_utc = 0;
  bool daily_rolling() const { return daily_reset_hour_utc < 0; }
};

struct CooldownConfig {
  int64_t initial_ms = 1000;
  double multiplier = 2.0;
  int64_t max_ms = 300000;
  double jitter = 0.2;  // fraction of the backoff added on top, uniformly in [0, jitter]
};

struct BreakerConfig {
  int window = 20;
  int min_calls = 5;
  double failure_rate = 0.5;
  int64_t slow_call_ms = 60000;
  double slow_call_rate = 0.8;
  int64_t open_ms = 30000;
  double open_multiplier = 2.0;  // growth of open time on repeated openings
  int64_t max_open_ms = 300000;  // cap of that growth
  int half_open_probes = 2;
  int64_t half_open_timeout_ms = 120000;  // probes that never report back: reopen after this
  bool count_rate_limits = false;         // do 429s count as failures?
};

struct RetryConfig {
  int max_attempts = 6;
  int64_t budget_ms = 120000;
  int64_t wait_for_key_ms = 10000;
};

struct LearningConfig {
  double prior_alpha = 1.0;
  double prior_beta = 1.0;
  double half_life = 100;  // outcomes per (category, model)
  double explore = 0.05;
  double quality_tolerance = 0.05;
  // How long and how many served requests are remembered for POST /v1/feedback.
  int64_t feedback_ttl_ms = 3600000;
  int64_t feedback_max_requests = 100000;
  // Score weights of the learned strategy (see routing/routing.h for the formula).
  double weight_success = 1.0;
  double weight_tier = 0.3;
  double weight_cost = 0.2;
  double weight_latency = 0.1;
};

enum class Tier { kSpeed, kBalanced, kFlagship };
enum class Complexity { kSimple, kModerate, kHigh, kCritical };

struct RoutingConfig {
  // Preferred tiers per complexity, best first.
  std::map<Complexity, std::vector<Tier>> complexity_tiers = {
      {Complexity::kSimple, {Tier::kSpeed}},
      {Complexity::kModerate, {Tier::kBalanced}},
      {Complexity::kHigh, {Tier::kFlagship, Tier::kBalanced}},
      {Complexity::kCritical, {Tier::kFlagship}},
  };
  Complexity default_complexity = Complexity::kModerate;
};

// openai: any OpenAI-compatible API; azure: Azure OpenAI (api-key header, deployments, an
// api-version query parameter); anthropic: the Messages API; mock: the in-process fake.
enum class ProviderKind { kOpenAI, kAnthropic, kMock, kAzure };
// How POST /v1/responses reaches a provider: passed through to its own /responses (native), or
// translated into a chat completion and back (chat).
enum class ResponsesMode { kChat, kNative };
enum class KeySelection { kRoundRobin, kLeastLoaded };

struct KeyConfig {
  std::string id;      // "provider#N", N counted from 1 in configuration order
  std::string secret;  // never logged, stored or shown
  double weight = 1.0;
  std::string fingerprint() const;  // "sha256:" + first 12 hex digits of SHA-256(secret)
};

// Behaviour of the mock provider (`kind: mock`, `switchboard mock-provider --scenario`).
struct MockScriptStep {
  int status = 200;  // answered to the next `times` requests, in order, before anything else
  int times = 1;
  bool drop_mid_stream = false;  // 200, then the connection is cut half-way through the stream
  bool hang = false;             // never answers (the caller's timeout must fire)
  int64_t retry_after_ms = 0;    // sent as retry-after-ms (and Retry-After) when > 0
};

struct MockScenario {
  int64_t latency_ms = 0;  // before the first byte
  int chunks = 4;          // content chunks of a streamed answer
  int64_t chunk_delay_ms = 0;
  int64_t rpm = 0;             // per API key; 429 with rate-limit headers beyond it
  int64_t max_concurrent = 0;  // per API key; 429 beyond it
  double error_rate = 0;       // answered with error_status
  int error_status = 500;
  double timeout_rate = 0;          // never answered
  double drop_mid_stream_rate = 0;  // stream cut half-way
  int64_t completion_tokens = 16;
  std::vector<MockScriptStep> script;
  std::vector<std::string> invalid_keys;  // answered 401
  // P(answer is right) per model and category ("default" for the rest); 1 when unset. A request
  // names its category in its text as "category=NAME"; the answer says "correct" or "incorrect".
  std::map<std::string, std::map<std::string, double>> quality;
  std::map<std::string, int64_t> model_latency_ms;
  uint64_t seed = 1;
};

// A provider-wide quota per UTC calendar period (a day from 00:00, a month from the 1st):
// tokens (prompt + completion), upstream requests and spend at the models' prices, counted over
// every key of the provider. 0 = no limit on that measure. `warning` and `critical` are fractions
// of the limit (the highest of the measures) at which the provider's standing changes.
enum class QuotaPeriod { kMonth, kDay };

struct QuotaConfig {
  QuotaPeriod period = QuotaPeriod::kMonth;
  int64_t tokens = 0;
  int64_t requests = 0;
  double usd = 0;
  double warning = 0.8;
  double critical = 0.95;
  bool enabled() const { return tokens > 0 || requests > 0 || usd > 0; }
};

struct ProviderConfig {
  std::string name;
  ProviderKind kind = ProviderKind::kOpenAI;
  std::string base_url;
  std::vector<KeyConfig> keys;
  RateLimits limits;
  int64_t timeout_ms = 600000;
  KeySelection selection = KeySelection::kRoundRobin;
  CooldownConfig cooldown;  // global `cooldown`, overridden by the provider's own
  BreakerConfig breaker;    // global `breaker`, overridden by the provider's own
  QuotaConfig quota;
  // kind: azure: the api-version query parameter of every call.
  std::string api_version;
  // keys: none: a keyless local server (Ollama, vLLM, llama.cpp). The pool still has one key
  // entry (id "<name>#1", empty secret) so that limits and cooldowns work; no auth header is sent.
  bool keyless = false;
  // Static request headers (names lowercased) sent with every call; values from `env:NAME` are
  // secrets (`secret`: redacted from logs, never dumped).
  struct Header {
    std::string name, value;
    bool secret = false;
    bool operator==(const Header&) const = default;
  };
  std::vector<Header> headers;
  // Egress: "" = the environment's HTTPS_PROXY/HTTP_PROXY/NO_PROXY; "none" = direct; else an
  // http:// proxy URL (its password is a secret).
  std::string proxy;
  struct Tls {
    std::string ca_file, client_cert, client_key;  // PEM paths; "" = none
    bool empty() const { return ca_file.empty() && client_cert.empty() && client_key.empty(); }
    bool operator==(const Tls&) const = default;
  } tls;
  ResponsesMode responses = ResponsesMode::kChat;
  // kind: anthropic: response_format (JSON) as a forced tool call (false), or refused with a 400
  // (`json_schema: refuse`, true).
  bool refuse_json_schema = false;
  // True when `mock_if_no_keys` turned a real provider into the in-process mock (no keys set).
  bool mock_substitute = false;
  MockScenario mock;  // for kind: mock
};

struct ModelCost {
  double input_per_mtok = 0;
  double output_per_mtok = 0;
};

struct ModelConfig {
  std::string name;
  std::string provider;
  std::string upstream;  // defaults to name
  Tier tier = Tier::kBalanced;
  ModelCost cost;
  int64_t context_window = 128000;
  std::vector<std::string> strengths;
  double weight = 1.0;  // for the `weighted` strategy
};

enum class RouteStrategy { kLearned, kOrdered, kWeighted, kCheapest };

struct RouteConfig {
  std::string name;
  RouteStrategy strategy = RouteStrategy::kLearned;
  std::vector<std::vector<std::string>> layers;  // model names
};

enum class SyncMode { kNormal, kFull };

struct StateConfig {
  std::string backend = "sqlite";  // or "postgres"
  std::string path = "./switchboard.db";
  // postgres: a libpq URI, postgresql://[user[:password]@]host[:port]/database[?...] (secret:
  // it may hold a password), and this gateway's name among those sharing the database (its
  // learned state and sequence numbers are its own). "" = "<hostname>:<listen port>".
  std::string url;
  std::string url_password;  // parsed from `url`, for secrets()
  std::string node;
  SyncMode synchronous = SyncMode::kNormal;
  int64_t busy_timeout_ms = 5000;
  int64_t batch_ms = 20;           // group commit interval
  int64_t batch_max = 1000;        // or this many events, whichever first
  int64_t queue_capacity = 65536;  // events waiting for the writer
  int64_t retention_days = 30;     // outcomes older than this are pruned; 0 keeps all
  // POST /v1/responses answers (with store: true) are kept this long for previous_response_id
  // (OpenAI's own retention is 30 days); 0 = not stored, previous_response_id is refused.
  int64_t responses_ttl_hours = 720;
};

// What one gateway (client) key may do. 0 / empty = no restriction.
struct GatewayKeyPolicy {
  std::string name;                 // shown in logs and errors instead of the key
  std::vector<std::string> routes;  // route or model names this key may request
  int64_t rpm = 0;
  double monthly_budget_usd = 0;  // spend through this key per calendar month (UTC)
};

struct AuthConfig {
  std::vector<std::string> gateway_keys;           // secrets
  std::vector<GatewayKeyPolicy> gateway_policies;  // parallel to gateway_keys
  std::string admin_key;  // secret; empty = admin API open on loopback only
  bool allow_open = false;
};

struct ServerConfig {
  int threads = 0;  // 0 = number of cores
  int64_t max_body_bytes = 8 << 20;
  int64_t max_header_bytes = 64 << 10;
  int64_t request_timeout_ms = 600000;
  int64_t idle_timeout_ms = 60000;
  // The whole request body must arrive within this time after its head (a slow upload cannot
  // hold a connection and its buffer for the request timeout).
  int64_t body_timeout_ms = 60000;
  int64_t max_connections = 10000;
  int64_t shutdown_grace_ms = 30000;
};

// Workflow runs submitted over HTTP (POST /v1/workflows/runs). The CLI is the local user: only
// the bounds (max_parallel) apply to it.
struct WorkflowsConfig {
  bool allow_exec = false;  // exec steps in runs submitted over HTTP
  std::vector<std::string>
      http_allow;                    // URL prefixes http steps may reach besides public addresses
  int64_t lease_ms = 30000;          // a run whose owner stopped renewing is taken over after this
  int64_t max_concurrent_runs = 32;  // per gateway; more runs wait in the queue
  int64_t max_parallel = 64;         // upper bound for any parallel step's max_concurrency
  // Every run's budget ceiling (a definition's `budget:` may be tighter); 0 = none.
  struct Budget {
    int64_t max_steps = 0;
    int64_t max_tokens = 0;
    double max_cost_usd = 0;
    int64_t max_time_ms = 0;
  } budget;
};

// Limits shared by several gateways through one Redis (DESIGN.md invariant 13). Off when `redis`
// is empty: every gateway then counts alone.
enum class RedisDownPolicy { kLocal, kRefuse };
struct ClusterConfig {
  std::string redis;             // redis://[:password@]host:port[/db]; "" = single gateway
  std::string redis_host;        // parsed from `redis`
  int redis_port = 6379;         //
  int redis_db = 0;              //
  std::string redis_password;    // secret (from the URL or env:NAME)
  int64_t lease_ttl_ms = 15000;  // a dead gateway's in-flight slots return after this
  // While Redis is unreachable each gateway serves on its keys' limits divided by this (local),
  // or answers 503 (refuse).
  int64_t expected_gateways = 1;
  RedisDownPolicy on_redis_down = RedisDownPolicy::kLocal;
  int64_t connect_timeout_ms = 1000;
  // Leases of this gateway are renewed every lease_ttl_ms / 3; a Redis reply slower than this
  // counts as Redis down for the request (it falls back to the local limits).
  int64_t command_timeout_ms = 1000;
  std::string prefix = "sb";  // key namespace, for several deployments on one Redis
  bool enabled() const { return !redis.empty(); }
};

struct LogConfig {
  std::string level = "info";
  bool json = false;
  bool access_log = true;
};

// OpenTelemetry traces over OTLP/HTTP (telemetry/telemetry.h).
struct TelemetryConfig {
  std::string otlp_endpoint;  // http(s)://host:port[/path]; "" = no traces
  std::string service_name = "switchboard";
  double sample_ratio = 1.0;  // of new traces; a caller's traceparent decides for its own
};

struct Config {
  std::string listen = "127.0.0.1:8400";
  ServerConfig server;
  StateConfig state;
  AuthConfig auth;
  LogConfig log;
  TelemetryConfig telemetry;
  std::vector<ProviderConfig> providers;  // in file order
  std::vector<ModelConfig> models;
  std::vector<RouteConfig> routes;
  CooldownConfig cooldown;
  BreakerConfig breaker;
  RetryConfig retry;
  LearningConfig learning;
  RoutingConfig routing;
  WorkflowsConfig workflows;
  ClusterConfig cluster;

  const ProviderConfig* find_provider(const std::string& name) const;
  const ModelConfig* find_model(std::string_view name) const;
  const RouteConfig* find_route(const std::string& name) const;
  // Every secret in the configuration with its id, for log redaction.
  std::vector<std::pair<std::string, std::string>> secrets() const;
};

struct ConfigError {
  std::string path;    // "providers.openai.limits.rpm"
  std::string source;  // file name, or "env SWITCHBOARD__..." for overrides
  int line = 0;        // 1-based; 0 when not from a file position
  int column = 0;
  std::string message;
  // "switchboard.yaml:12:7: providers.openai.limits.rpm: must be >= 0"
  std::string to_string() const;
};

// Where `env:NAME` references and SWITCHBOARD__ overrides are read from (injectable for tests).
class Environment {
 public:
  static Environment from_process();
  static Environment from_map(std::map<std::string, std::string> vars) {
    Environment e;
    e.vars_ = std::move(vars);
    return e;
  }
  std::optional<std::string> get(const std::string& name) const;
  const std::map<std::string, std::string>& vars() const { return vars_; }

 private:
  std::map<std::string, std::string> vars_;
};

struct ConfigLoad {
  std::optional<Config> config;  // set only when errors is empty
  std::vector<ConfigError> errors;
  bool ok() const { return errors.empty() && config.has_value(); }
};

ConfigLoad load_config_file(const std::string& path, const Environment& env);
ConfigLoad load_config_string(const std::string& yaml, const std::string& source_name,
                              const Environment& env);
// The built-in configuration used when no file is given: providers from OPENAI_API_KEYS,
// ANTHROPIC_API_KEYS, ... when set, else the in-process mock.
ConfigLoad default_config(const Environment& env);

struct MockScenarioLoad {
  std::optional<MockScenario> scenario;
  std::vector<ConfigError> errors;
  bool ok() const { return errors.empty() && scenario.has_value(); }
};
MockScenarioLoad load_mock_scenario_file(const std::string& path);
MockScenarioLoad load_mock_scenario_string(const std::string& yaml, const std::string& source_name);

// The normalised configuration as YAML, secrets replaced by their key ids and fingerprints.
std::string dump_config(const Config& config);

std::string_view to_string(Tier t);
std::string_view to_string(Complexity c);
std::string_view to_string(ProviderKind k);
std::string_view to_string(RouteStrategy s);
std::optional<Tier> parse_tier(std::string_view s);
std::optional<Complexity> parse_complexity(std::string_view s);

}  // namespace switchboard
