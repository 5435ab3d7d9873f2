// ConfigReader (config_reader.h): the root of the document and the gateway-wide sections (listen,
// server, state, auth, log, cooldown, breaker, retry, learning, workflows, routing).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "common/config_reader.h"

namespace switchboard::config_detail {

void ConfigReader::read_root(const YAML::Node& root) {
  check_map(
      root, "",
      {"listen", "server", "state", "auth", "log", "providers", "models", "routes", "cooldown",
       "breaker", "retry", "learning", "routing", "workflows", "cluster", "telemetry"});
  if (read_string(root, "listen", "", cfg_.listen)) check_listen(root["listen"], cfg_.listen);
  read_server(root["server"]);
  read_state(root["state"]);
  read_auth(root["auth"]);
  read_log(root["log"]);
  read_telemetry(root["telemetry"]);
  read_cooldown(root["cooldown"], "cooldown", cfg_.cooldown);
  read_breaker(root["breaker"], "breaker", cfg_.breaker);
  read_retry(root["retry"]);
  read_learning(root["learning"]);
  read_routing(root["routing"]);
  read_workflows(root["workflows"]);
  read_cluster(root["cluster"]);
  read_providers(root["providers"]);
  read_models(root["models"]);
  read_routes(root["routes"]);
  check_keys_for_routes(root["providers"]);
  check_gateway_routes(root["auth"]);
}

void ConfigReader::check_listen(const YAML::Node& n, const std::string& v) {
  auto colon = v.rfind(':');
  bool ok = colon != std::string::npos && colon > 0;
  if (ok) {
    std::string port = v.substr(colon + 1);
    ok = !port.empty() && port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
    if (ok) {
      int p = std::stoi(port);
      ok = p >= 0 && p <= 65535;
    }
  }
  if (!ok) error(n, "listen", "expected HOST:PORT (port 0-65535), got '" + v + "'");
}

void ConfigReader::read_server(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "server";
  if (!check_map(n, p,
                 {"threads", "max_body_bytes", "max_header_bytes", "request_timeout_ms",
                  "idle_timeout_ms", "body_timeout_ms", "max_connections", "shutdown_grace_ms"}))
    return;
  auto& s = cfg_.server;
  read_int(n, "threads", p, s.threads, 0, 256);
  read_int(n, "max_body_bytes", p, s.max_body_bytes, 1024, int64_t{1} << 34);
  read_int(n, "max_header_bytes", p, s.max_header_bytes, 1024, int64_t{1} << 24);
  read_int(n, "request_timeout_ms", p, s.request_timeout_ms, 1);
  read_int(n, "idle_timeout_ms", p, s.idle_timeout_ms, 1);
  read_int(n, "body_timeout_ms", p, s.body_timeout_ms, 1);
  read_int(n, "max_connections", p, s.max_connections, 1);
  read_int(n, "shutdown_grace_ms", p, s.shutdown_grace_ms, 0);
}

void ConfigReader::read_state(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "state";
  if (!check_map(n, p,
                 {"backend", "path", "url", "node", "synchronous", "busy_timeout_ms", "batch_ms",
                  "batch_max", "queue_capacity", "retention_days", "responses_ttl_hours"}))
    return;
  auto& s = cfg_.state;
  if (read_string(n, "backend", p, s.backend) && s.backend != "sqlite" && s.backend != "postgres") {
    error(n["backend"], "state.backend",
          "unsupported backend '" + s.backend + "' (this build supports: sqlite, postgres)");
  }
  std::string url;
  if (read_string(n, "url", p, url)) {
    std::string var;
    url = resolve(url, &var).value_or("");
    std::string rest;
    for (const char* scheme : {"postgresql://", "postgres://"})
      if (url.rfind(scheme, 0) == 0) rest = url.substr(std::string_view(scheme).size());
    const std::string authority = rest.substr(0, rest.find_first_of("/?"));
    const bool ok = !rest.empty() && std::none_of(url.begin(), url.end(), [](char ch) {
      return std::iscntrl(static_cast<unsigned char>(ch)) || ch == ' ';
    });
    if (!ok) {
      // The URL may carry a password: never echo it.
      error(n["url"], "state.url", "expected postgresql://[user[:password]@]host[:port]/database");
    } else {
      s.url = url;
      if (auto at = authority.rfind('@'); at != std::string::npos) {
        const std::string user_pass = authority.substr(0, at);
        if (auto colon = user_pass.find(':'); colon != std::string::npos)
          s.url_password = user_pass.substr(colon + 1);
      }
      // libpq also takes ?password=...: a secret all the same.
      if (auto q = rest.find('?'); q != std::string::npos) {
        const std::string query = "&" + rest.substr(q + 1);
        if (auto at = query.find("&password="); at != std::string::npos) {
          const size_t from = at + 10;
          s.url_password = query.substr(from, query.find('&', from) - from);
        }
      }
    }
  }
  if (read_string(n, "node", p, s.node) && (s.node.empty() || s.node.size() > 128 ||
                                            std::any_of(s.node.begin(), s.node.end(), [](char ch) {
                                              return static_cast<unsigned char>(ch) < 0x21 ||
                                                     static_cast<unsigned char>(ch) > 0x7e;
                                            }))) {
    error(n["node"], "state.node", "must be 1 to 128 printable characters without spaces");
  }
  if (s.backend == "postgres" && s.url.empty() && !present(n, "url"))
    error(n["backend"], "state.url", "backend postgres needs url: postgresql://...");
  if (read_string(n, "path", p, s.path) && s.path.empty())
    error(n["path"], "state.path", "must not be empty");
  read_enum(n, "synchronous", p, s.synchronous,
            {{"normal", SyncMode::kNormal}, {"full", SyncMode::kFull}});
  read_int(n, "busy_timeout_ms", p, s.busy_timeout_ms, 0);
  read_int(n, "batch_ms", p, s.batch_ms, 1, 60000);
  read_int(n, "batch_max", p, s.batch_max, 1, 1000000);
  read_int(n, "queue_capacity", p, s.queue_capacity, 16, 100000000);
  read_int(n, "retention_days", p, s.retention_days, 0);
  read_int(n, "responses_ttl_hours", p, s.responses_ttl_hours, 0, 24 * 365 * 10);
}

void ConfigReader::read_auth(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "auth";
  if (!check_map(n, p, {"gateway_keys", "admin_key", "allow_open"})) return;
  auto& a = cfg_.auth;
  if (present(n, "gateway_keys")) read_gateway_keys(n["gateway_keys"], a);
  std::string admin;
  if (read_string(n, "admin_key", p, admin)) {
    std::string var;
    auto v = resolve(admin, &var);
    a.admin_key = v.value_or("");
  }
  read_bool(n, "allow_open", p, a.allow_open);
}

void ConfigReader::read_gateway_keys(const YAML::Node& n, AuthConfig& a) {
  const std::string p = "auth.gateway_keys";
  if (n.IsScalar()) {
    a.gateway_keys = read_secret_list(n, p, false);
  } else if (!n.IsSequence()) {
    error(n, p, "expected env:NAME or a list of keys");
    return;
  } else {
    for (size_t i = 0; i < n.size(); ++i) {
      YAML::Node item = n[i];
      std::string ip = p + "[" + std::to_string(i) + "]";
      std::string value;
      GatewayKeyPolicy policy;
      if (item.IsScalar()) {
        value = item.Scalar();
      } else if (item.IsMap()) {
        check_map(item, ip, {"key", "name", "routes", "rpm", "monthly_budget_usd"});
        if (!read_string(item, "key", ip, value)) {
          error(item, ip, "a gateway key entry needs 'key'");
          continue;
        }
        read_string(item, "name", ip, policy.name);
        read_int(item, "rpm", ip, policy.rpm, 0);
        // Shared budgets count in nano-USD exactly up to about $9M (cluster.h).
        read_double(item, "monthly_budget_usd", ip, policy.monthly_budget_usd, 0.0, 9e6);
        if (present(item, "routes")) {
          YAML::Node r = item["routes"];
          if (!r.IsSequence())
            error(r, ip + ".routes", "expected a list of route or model names");
          else
            for (size_t j = 0; j < r.size(); ++j) {
              if (r[j].IsScalar())
                policy.routes.push_back(r[j].Scalar());
              else
                error(r[j], ip + ".routes[" + std::to_string(j) + "]", "expected a name");
            }
        }
      } else {
        error(item, ip, "expected a key or {key, name, routes, rpm, monthly_budget_usd}");
        continue;
      }
      std::string var;
      auto v = resolve(value, &var);
      if (!v || v->empty()) {
        error(item, ip, v ? "key is empty" : "environment variable " + var + " is not set");
        continue;
      }
      a.gateway_keys.push_back(*v);
      a.gateway_policies.push_back(std::move(policy));
    }
  }
  a.gateway_policies.resize(a.gateway_keys.size());
  for (size_t i = 0; i < a.gateway_policies.size(); ++i)
    if (a.gateway_policies[i].name.empty())
      a.gateway_policies[i].name = "gateway#" + std::to_string(i + 1);
}

void ConfigReader::check_gateway_routes(const YAML::Node& auth) {
  for (size_t i = 0; i < cfg_.auth.gateway_policies.size(); ++i) {
    for (const auto& r : cfg_.auth.gateway_policies[i].routes) {
      if (!cfg_.find_route(r) && !cfg_.find_model(r)) {
        YAML::Node at = auth.IsDefined() && auth.IsMap() && auth["gateway_keys"].IsSequence() &&
                                i < auth["gateway_keys"].size()
                            ? auth["gateway_keys"][i]
                            : auth;
        error(at, "auth.gateway_keys[" + std::to_string(i) + "].routes",
              "unknown route or model '" + r + "'");
      }
    }
  }
}

void ConfigReader::read_log(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "log";
  if (!check_map(n, p, {"level", "format", "access_log"})) return;
  auto& l = cfg_.log;
  if (read_string(n, "level", p, l.level)) {
    static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
    if (!kLevels.count(l.level))
      error(n["level"], "log.level",
            "unknown value '" + l.level + "' (expected trace | debug | info | warn | error | off)");
  }
  std::string format;
  if (read_string(n, "format", p, format)) {
    if (format == "json")
      l.json = true;
    else if (format == "text")
      l.json = false;
    else
      error(n["format"], "log.format", "unknown value '" + format + "' (expected text | json)");
  }
  read_bool(n, "access_log", p, l.access_log);
}

void ConfigReader::read_telemetry(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "telemetry";
  if (!check_map(n, p, {"otlp_endpoint", "service_name", "sample_ratio"})) return;
  auto& t = cfg_.telemetry;
  if (read_string(n, "otlp_endpoint", p, t.otlp_endpoint) && !t.otlp_endpoint.empty()) {
    if (t.otlp_endpoint.rfind("http://", 0) != 0 && t.otlp_endpoint.rfind("https://", 0) != 0)
      error(n["otlp_endpoint"], "telemetry.otlp_endpoint",
            "must start with http:// or https:// (OTLP over HTTP, e.g. http://127.0.0.1:4318)");
    else if (t.otlp_endpoint.find_first_of(" \t\r\n") != std::string::npos)
      error(n["otlp_endpoint"], "telemetry.otlp_endpoint", "must not contain white space");
    while (!t.otlp_endpoint.empty() && t.otlp_endpoint.back() == '/') t.otlp_endpoint.pop_back();
  }
  if (read_string(n, "service_name", p, t.service_name) &&
      (t.service_name.empty() || t.service_name.size() > 128))
    error(n["service_name"], "telemetry.service_name", "must be 1 to 128 characters");
  read_double(n, "sample_ratio", p, t.sample_ratio, 0.0, 1.0);
}

void ConfigReader::read_cooldown(const YAML::Node& n, const std::string& p, CooldownConfig& c) {
  if (!n.IsDefined() || n.IsNull()) return;
  if (!check_map(n, p, {"initial_ms", "multiplier", "max_ms", "jitter"})) return;
  read_int(n, "initial_ms", p, c.initial_ms, 1);
  read_double(n, "multiplier", p, c.multiplier, 1.0, 100.0);
  read_int(n, "max_ms", p, c.max_ms, 1);
  read_double(n, "jitter", p, c.jitter, 0.0, 1.0);
  if (c.max_ms < c.initial_ms) error(n["max_ms"], join(p, "max_ms"), "must be >= initial_ms");
}

void ConfigReader::read_breaker(const YAML::Node& n, const std::string& p, BreakerConfig& b) {
  if (!n.IsDefined() || n.IsNull()) return;
  if (!check_map(n, p,
                 {"window", "min_calls", "failure_rate", "slow_call_ms", "slow_call_rate",
                  "open_ms", "open_multiplier", "max_open_ms", "half_open_probes",
                  "half_open_timeout_ms", "count_rate_limits"}))
    return;
  read_int(n, "window", p, b.window, 1, 100000);
  read_int(n, "min_calls", p, b.min_calls, 1, 100000);
  read_double(n, "failure_rate", p, b.failure_rate, 0.0, 1.0, true);
  read_int(n, "slow_call_ms", p, b.slow_call_ms, 1);
  read_double(n, "slow_call_rate", p, b.slow_call_rate, 0.0, 1.0, true);
  read_int(n, "open_ms", p, b.open_ms, 1);
  read_double(n, "open_multiplier", p, b.open_multiplier, 1.0, 100.0);
  read_int(n, "max_open_ms", p, b.max_open_ms, 1);
  read_int(n, "half_open_probes", p, b.half_open_probes, 1, 1000);
  read_int(n, "half_open_timeout_ms", p, b.half_open_timeout_ms, 1);
  read_bool(n, "count_rate_limits", p, b.count_rate_limits);
  if (b.min_calls > b.window) error(n["min_calls"], join(p, "min_calls"), "must be <= window");
  if (b.max_open_ms < b.open_ms)
    error(n["max_open_ms"], join(p, "max_open_ms"), "must be >= open_ms");
}

void ConfigReader::read_retry(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "retry";
  if (!check_map(n, p, {"max_attempts", "budget_ms", "wait_for_key_ms"})) return;
  read_int(n, "max_attempts", p, cfg_.retry.max_attempts, 1, 100);
  read_int(n, "budget_ms", p, cfg_.retry.budget_ms, 1);
  read_int(n, "wait_for_key_ms", p, cfg_.retry.wait_for_key_ms, 0);
}

void ConfigReader::read_learning(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "learning";
  if (!check_map(n, p,
                 {"prior", "half_life", "explore", "quality_tolerance", "weights",
                  "feedback_ttl_ms", "feedback_max_requests"}))
    return;
  auto& l = cfg_.learning;
  if (present(n, "prior")) {
    YAML::Node pr = n["prior"];
    double a = 0, b = 0;
    if (!pr.IsSequence() || pr.size() != 2 || !YAML::convert<double>::decode(pr[0], a) ||
        !YAML::convert<double>::decode(pr[1], b)) {
      error(pr, "learning.prior", "expected [alpha, beta], two positive numbers");
    } else if (!(a > 0) || !(b > 0) || !std::isfinite(a) || !std::isfinite(b)) {
      error(pr, "learning.prior", "alpha and beta must be > 0");
    } else {
      l.prior_alpha = a;
      l.prior_beta = b;
    }
  }
  read_double(n, "half_life", p, l.half_life, 0.0, 1e9, true);
  read_double(n, "explore", p, l.explore, 0.0, 1.0);
  read_double(n, "quality_tolerance", p, l.quality_tolerance, 0.0, 1.0);
  read_int(n, "feedback_ttl_ms", p, l.feedback_ttl_ms, 1000);
  read_int(n, "feedback_max_requests", p, l.feedback_max_requests, 16, 100000000);
  YAML::Node w = n["weights"];
  const std::string wp = "learning.weights";
  if (present(n, "weights") && check_map(w, wp, {"success", "tier", "cost", "latency"})) {
    read_double(w, "success", wp, l.weight_success, 0.0, 100.0);
    read_double(w, "tier", wp, l.weight_tier, 0.0, 100.0);
    read_double(w, "cost", wp, l.weight_cost, 0.0, 100.0);
    read_double(w, "latency", wp, l.weight_latency, 0.0, 100.0);
  }
}

void ConfigReader::read_workflows(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "workflows";
  if (!check_map(n, p,
                 {"allow_exec", "http_allow", "lease_ms", "max_concurrent_runs", "max_parallel",
                  "budget"}))
    return;
  auto& w = cfg_.workflows;
  read_bool(n, "allow_exec", p, w.allow_exec);
  if (present(n, "http_allow")) {
    YAML::Node list = n["http_allow"];
    if (!list.IsSequence()) {
      error(list, "workflows.http_allow", "expected a list of URL prefixes");
    } else {
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string ip = "workflows.http_allow[" + std::to_string(i) + "]";
        std::string v = list[i].IsScalar() ? list[i].Scalar() : "";
        // A prefix must name its origin whole ("http://host:port/..."): "http://10.0.0.1"
        // would also admit "http://10.0.0.19" and "http://10.0.0.1.evil.example".
        const size_t scheme = v.rfind("https://", 0) == 0 ? 8 : v.rfind("http://", 0) == 0 ? 7 : 0;
        if (scheme == 0 || v.find('/', scheme) == std::string::npos ||
            v.find('/', scheme) == scheme) {
          error(list[i], ip,
                "expected a URL prefix with scheme, host and a path (e.g. "
                "\"http://10.0.0.5:8080/\"), got " +
                    describe(list[i]));
          continue;
        }
        w.http_allow.push_back(v);
      }
    }
  }
  read_int(n, "lease_ms", p, w.lease_ms, 1000);
  read_int(n, "max_concurrent_runs", p, w.max_concurrent_runs, 1, 100000);
  read_int(n, "max_parallel", p, w.max_parallel, 1, 10000);
  if (present(n, "budget")) {
    const YAML::Node b = n["budget"];
    const std::string bp = "workflows.budget";
    if (check_map(b, bp, {"max_steps", "max_tokens", "max_cost_usd", "max_time_ms"})) {
      read_int(b, "max_steps", bp, w.budget.max_steps, 0);
      read_int(b, "max_tokens", bp, w.budget.max_tokens, 0);
      read_double(b, "max_cost_usd", bp, w.budget.max_cost_usd, 0.0, 9e6);
      read_int(b, "max_time_ms", bp, w.budget.max_time_ms, 0);
    }
  }
}

void ConfigReader::read_routing(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "routing";
  if (!check_map(n, p, {"complexity_tiers", "default_complexity"})) return;
  auto& r = cfg_.routing;
  std::string dc;
  if (read_string(n, "default_complexity", p, dc)) {
    if (auto c = parse_complexity(dc))
      r.default_complexity = *c;
    else
      error(n["default_complexity"], "routing.default_complexity",
            "unknown complexity '" + dc + "' (expected simple | moderate | high | critical)");
  }
  YAML::Node ct = n["complexity_tiers"];
  const std::string cp = "routing.complexity_tiers";
  if (!present(n, "complexity_tiers") ||
      !check_map(ct, cp, {"simple", "moderate", "high", "critical"}))
    return;
  for (auto it = ct.begin(); it != ct.end(); ++it) {
    std::string k = it->first.as<std::string>("");
    auto c = parse_complexity(k);
    if (!c) continue;  // already reported as unknown
    std::string ip = cp + "." + k;
    if (!it->second.IsSequence() || it->second.size() == 0) {
      error(it->second, ip, "expected a non-empty list of tiers");
      continue;
    }
    std::vector<Tier> tiers;
    for (size_t i = 0; i < it->second.size(); ++i) {
      YAML::Node t = it->second[i];
      auto tier = t.IsScalar() ? parse_tier(t.Scalar()) : std::nullopt;
      if (!tier)
        error(t, ip + "[" + std::to_string(i) + "]",
              "unknown tier " + describe(t) + " (expected speed | balanced | flagship)");
      else
        tiers.push_back(*tier);
    }
    r.complexity_tiers[*c] = tiers;
  }
}

}  // namespace switchboard::config_detail

namespace switchboard::config_detail {

// redis://[:password@]host[:port][/db]. The password may also come as `password: env:NAME`.
void ConfigReader::read_cluster(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return;
  const std::string p = "cluster";
  if (!check_map(n, p,
                 {"redis", "password", "lease_ttl_ms", "expected_gateways", "on_redis_down",
                  "connect_timeout_ms", "command_timeout_ms", "prefix"}))
    return;
  auto& c = cfg_.cluster;
  std::string url;
  if (read_string(n, "redis", p, url) && !url.empty()) {
    std::string var;
    url = resolve(url, &var).value_or("");
    std::string rest = url;
    bool ok = rest.rfind("redis://", 0) == 0;
    if (ok) rest = rest.substr(8);
    if (ok) {
      if (auto at = rest.rfind('@'); at != std::string::npos) {
        std::string user_pass = rest.substr(0, at);
        rest = rest.substr(at + 1);
        auto colon = user_pass.find(':');
        c.redis_password = colon == std::string::npos ? user_pass : user_pass.substr(colon + 1);
      }
      if (auto slash = rest.find('/'); slash != std::string::npos) {
        std::string db = rest.substr(slash + 1);
        rest = rest.substr(0, slash);
        if (!db.empty()) {
          ok = db.size() <= 2 && std::all_of(db.begin(), db.end(), [](char ch) {
                 return std::isdigit(static_cast<unsigned char>(ch));
               });
          if (ok) c.redis_db = std::stoi(db);
        }
      }
      if (auto colon = rest.rfind(':'); ok && colon != std::string::npos) {
        std::string port = rest.substr(colon + 1);
        rest = rest.substr(0, colon);
        ok = !port.empty() && port.size() <= 5 &&
             std::all_of(port.begin(), port.end(),
                         [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); });
        if (ok) c.redis_port = std::stoi(port);
        ok = ok && c.redis_port > 0 && c.redis_port <= 65535;
      }
      c.redis_host = rest;
      ok = ok && !rest.empty() && std::none_of(rest.begin(), rest.end(), [](char ch) {
             return std::iscntrl(static_cast<unsigned char>(ch)) || ch == ' ';
           });
    }
    if (!ok) {
      // The URL may carry a password: never echo it.
      error(n["redis"], "cluster.redis", "expected redis://[:password@]host[:port][/db]");
    } else {
      c.redis = url;
    }
  }
  std::string password;
  if (read_string(n, "password", p, password)) {
    std::string var;
    c.redis_password = resolve(password, &var).value_or("");
  }
  read_int(n, "lease_ttl_ms", p, c.lease_ttl_ms, 100, 3600000);
  read_int(n, "expected_gateways", p, c.expected_gateways, 1, 1000);
  read_enum(n, "on_redis_down", p, c.on_redis_down,
            {{"local", RedisDownPolicy::kLocal}, {"refuse", RedisDownPolicy::kRefuse}});
  read_int(n, "connect_timeout_ms", p, c.connect_timeout_ms, 1, 60000);
  read_int(n, "command_timeout_ms", p, c.command_timeout_ms, 1, 60000);
  if (read_string(n, "prefix", p, c.prefix)) {
    const bool ok = !c.prefix.empty() && c.prefix.size() <= 64 &&
                    std::all_of(c.prefix.begin(), c.prefix.end(), [](char ch) {
                      return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' ||
                             ch == '-' || ch == ':' || ch == '.';
                    });
    if (!ok) error(n["prefix"], "cluster.prefix", "expected 1-64 of [A-Za-z0-9_.:-]");
  }
}

}  // namespace switchboard::config_detail
