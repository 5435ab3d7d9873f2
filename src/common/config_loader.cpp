// YAML → Config: parsing, environment overrides, env: references, defaults and validation.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

#include "common/config.h"

namespace switchboard {
namespace {

constexpr std::string_view kOverridePrefix = "SWITCHBOARD__";

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> split_csv(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string_view::npos) comma = s.size();
    std::string item = trim(s.substr(start, comma - start));
    if (!item.empty()) out.push_back(std::move(item));
    start = comma + 1;
  }
  return out;
}

// Walks the YAML tree with a path, collecting every error instead of stopping at the first.
class Loader {
 public:
  Loader(std::string source, const Environment& env) : source_(std::move(source)), env_(env) {}

  ConfigLoad load_text(const std::string& text) {
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

 private:
  // ---- errors ---------------------------------------------------------------------------------
  void error(const YAML::Node& n, const std::string& path, std::string message) {
    ConfigError e;
    e.path = path;
    e.message = std::move(message);
    if (auto it = find_override(path); !it.empty()) {
      e.source = "env " + it;
    } else {
      e.source = source_;
      if (n.IsDefined()) {
        auto m = n.Mark();
        if (m.line >= 0) {
          e.line = m.line + 1;
          e.column = m.column + 1;
        }
      }
    }
    errors_.push_back(std::move(e));
  }

  // The override variable that set `path` or one of its parents.
  std::string find_override(const std::string& path) const {
    for (const auto& [p, var] : overrides_) {
      if (path == p || (path.size() > p.size() && path.compare(0, p.size(), p) == 0 &&
                        (path[p.size()] == '.' || path[p.size()] == '['))) {
        return var;
      }
    }
    return "";
  }

  ConfigLoad finish() {
    ConfigLoad out;
    out.errors = std::move(errors_);
    if (out.errors.empty()) out.config = std::move(cfg_);
    return out;
  }

  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  // ---- environment overrides --------------------------------------------------------------------
  void apply_overrides(YAML::Node& root) {
    for (const auto& [name, value] : env_.vars()) {
      if (name.size() <= kOverridePrefix.size() ||
          name.compare(0, kOverridePrefix.size(), kOverridePrefix) != 0)
        continue;
      std::vector<std::string> parts;
      std::string rest = name.substr(kOverridePrefix.size());
      size_t pos = 0;
      while (true) {
        size_t next = rest.find("__", pos);
        parts.push_back(
            lower(rest.substr(pos, next == std::string::npos ? std::string::npos : next - pos)));
        if (next == std::string::npos) break;
        pos = next + 2;
      }
      if (std::any_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); })) {
        ConfigError e;
        e.source = "env " + name;
        e.message = "malformed override name (empty path segment)";
        errors_.push_back(e);
        continue;
      }
      YAML::Node parsed;
      try {
        parsed = YAML::Load(value);
      } catch (const YAML::Exception&) {
        parsed = YAML::Node(value);
      }
      if (!parsed.IsDefined() || parsed.IsNull()) parsed = YAML::Node(value);
      std::string path;
      YAML::Node cur = root;
      bool ok = true;
      for (size_t i = 0; i < parts.size(); ++i) {
        std::string key = existing_key(cur, parts[i]);
        path = join(path, key);
        if (i + 1 == parts.size()) {
          cur[key] = parsed;
        } else {
          YAML::Node child = cur[key];
          if (!child.IsDefined() || child.IsNull()) {
            cur[key] = YAML::Node(YAML::NodeType::Map);
            child = cur[key];
          } else if (!child.IsMap()) {
            ConfigError e;
            e.source = "env " + name;
            e.path = path;
            e.message = "cannot override inside a value that is not a mapping";
            errors_.push_back(e);
            ok = false;
            break;
          }
          cur.reset(child);
        }
      }
      if (ok) overrides_.emplace_back(path, name);
    }
  }

  // Environment names are upper case; match an existing key of the map case-insensitively.
  static std::string existing_key(const YAML::Node& map, const std::string& lowered) {
    if (map.IsMap()) {
      for (auto it = map.begin(); it != map.end(); ++it) {
        auto k = it->first.as<std::string>("");
        if (lower(k) == lowered) return k;
      }
    }
    return lowered;
  }

  // ---- typed readers
  // ------------------------------------------------------------------------------ Reports every
  // key of `n` not in `known`. Returns false when n is present but not a map.
  bool check_map(const YAML::Node& n, const std::string& path,
                 std::initializer_list<const char*> known) {
    if (!n.IsDefined() || n.IsNull()) return true;
    if (!n.IsMap()) {
      error(n, path, "expected a mapping");
      return false;
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string k = it->first.as<std::string>("");
      bool found = std::any_of(known.begin(), known.end(), [&](const char* x) { return k == x; });
      if (!found) {
        std::string list;
        for (const char* x : known) list += list.empty() ? x : std::string(", ") + x;
        error(it->first, join(path, k), "unknown key '" + k + "' (expected one of: " + list + ")");
      }
    }
    return true;
  }

  static bool present(const YAML::Node& parent, const char* key) {
    return parent.IsDefined() && parent.IsMap() && parent[key].IsDefined() && !parent[key].IsNull();
  }

  void read_int(const YAML::Node& parent, const char* key, const std::string& path, int64_t& out,
                int64_t min, int64_t max = std::numeric_limits<int64_t>::max()) {
    if (!present(parent, key)) return;
    YAML::Node n = parent[key];
    std::string p = join(path, key);
    int64_t v = 0;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) {
      error(n, p, "expected an integer, got " + describe(n));
      return;
    }
    if (v < min || v > max) {
      error(n, p,
            range_message(static_cast<double>(min), static_cast<double>(max), true) + ", got " +
                std::to_string(v));
      return;
    }
    out = v;
  }

  void read_int(const YAML::Node& parent, const char* key, const std::string& path, int& out,
                int64_t min, int64_t max = std::numeric_limits<int>::max()) {
    int64_t v = out;
    read_int(parent, key, path, v, min, max);
    out = static_cast<int>(v);
  }

  void read_double(const YAML::Node& parent, const char* key, const std::string& path, double& out,
                   double min, double max = std::numeric_limits<double>::infinity(),
                   bool min_exclusive = false) {
    if (!present(parent, key)) return;
    YAML::Node n = parent[key];
    std::string p = join(path, key);
    double v = 0;
    if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) {
      error(n, p, "expected a number, got " + describe(n));
      return;
    }
    if (v < min || v > max || (min_exclusive && v == min)) {
      std::ostringstream m;
      m << (min_exclusive ? "must be > " : "must be >= ") << min;
      if (std::isfinite(max)) m << " and <= " << max;
      m << ", got " << v;
      error(n, p, m.str());
      return;
    }
    out = v;
  }

  void read_bool(const YAML::Node& parent, const char* key, const std::string& path, bool& out) {
    if (!present(parent, key)) return;
    YAML::Node n = parent[key];
    bool v = false;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
      error(n, join(path, key), "expected true or false, got " + describe(n));
      return;
    }
    out = v;
  }

  bool read_string(const YAML::Node& parent, const char* key, const std::string& path,
                   std::string& out) {
    if (!present(parent, key)) return false;
    YAML::Node n = parent[key];
    if (!n.IsScalar()) {
      error(n, join(path, key), "expected a string, got " + describe(n));
      return false;
    }
    out = n.Scalar();
    return true;
  }

  template <typename E>
  void read_enum(const YAML::Node& parent, const char* key, const std::string& path, E& out,
                 std::initializer_list<std::pair<const char*, E>> values) {
    std::string s;
    if (!read_string(parent, key, path, s)) return;
    for (const auto& [name, v] : values) {
      if (s == name) {
        out = v;
        return;
      }
    }
    std::string list;
    for (const auto& [name, v] : values) list += list.empty() ? name : std::string(" | ") + name;
    error(parent[key], join(path, key), "unknown value '" + s + "' (expected " + list + ")");
  }

  static std::string describe(const YAML::Node& n) {
    if (!n.IsDefined()) return "nothing";
    if (n.IsMap()) return "a mapping";
    if (n.IsSequence()) return "a list";
    if (n.IsNull()) return "nothing";
    return "'" + n.Scalar() + "'";
  }

  static std::string range_message(double min, double max, bool integer) {
    std::ostringstream m;
    m << "must be >= " << static_cast<int64_t>(min);
    if (max < static_cast<double>(std::numeric_limits<int>::max()) || !integer) {
      if (max < 9e18) m << " and <= " << static_cast<int64_t>(max);
    }
    return m.str();
  }

  // A secret value: a literal, or `env:NAME`. Missing variables give nullopt (callers decide).
  std::optional<std::string> resolve(const std::string& value, std::string* var = nullptr) {
    if (value.rfind("env:", 0) == 0) {
      std::string name = value.substr(4);
      if (var) *var = name;
      return env_.get(name);
    }
    return value;
  }

  // ---- sections ---------------------------------------------------------------------------------
  void read_root(const YAML::Node& root) {
    check_map(root, "",
              {"listen", "server", "state", "auth", "log", "providers", "models", "routes",
               "cooldown", "breaker", "retry", "learning", "routing", "workflows"});
    if (read_string(root, "listen", "", cfg_.listen)) check_listen(root["listen"], cfg_.listen);
    read_server(root["server"]);
    read_state(root["state"]);
    read_auth(root["auth"]);
    read_log(root["log"]);
    read_cooldown(root["cooldown"], "cooldown", cfg_.cooldown);
    read_breaker(root["breaker"], "breaker", cfg_.breaker);
    read_retry(root["retry"]);
    read_learning(root["learning"]);
    read_routing(root["routing"]);
    read_workflows(root["workflows"]);
    read_providers(root["providers"]);
    read_models(root["models"]);
    read_routes(root["routes"]);
    check_keys_for_routes(root["providers"]);
    check_gateway_routes(root["auth"]);
  }

  void check_listen(const YAML::Node& n, const std::string& v) {
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

  void read_server(const YAML::Node& n) {
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

  void read_state(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return;
    const std::string p = "state";
    if (!check_map(n, p,
                   {"backend", "path", "synchronous", "busy_timeout_ms", "batch_ms", "batch_max",
                    "queue_capacity", "retention_days"}))
      return;
    auto& s = cfg_.state;
    if (read_string(n, "backend", p, s.backend) && s.backend != "sqlite") {
      error(n["backend"], "state.backend",
            "unsupported backend '" + s.backend + "' (this build supports: sqlite)");
    }
    if (read_string(n, "path", p, s.path) && s.path.empty())
      error(n["path"], "state.path", "must not be empty");
    read_enum(n, "synchronous", p, s.synchronous,
              {{"normal", SyncMode::kNormal}, {"full", SyncMode::kFull}});
    read_int(n, "busy_timeout_ms", p, s.busy_timeout_ms, 0);
    read_int(n, "batch_ms", p, s.batch_ms, 1, 60000);
    read_int(n, "batch_max", p, s.batch_max, 1, 1000000);
    read_int(n, "queue_capacity", p, s.queue_capacity, 16, 100000000);
    read_int(n, "retention_days", p, s.retention_days, 0);
  }

  void read_auth(const YAML::Node& n) {
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

  // `env:NAME` (comma-separated keys), or a list whose entries are keys or
  // {key, name, routes, rpm, monthly_budget_usd}.
  void read_gateway_keys(const YAML::Node& n, AuthConfig& a) {
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
          read_double(item, "monthly_budget_usd", ip, policy.monthly_budget_usd, 0.0);
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

  // Route lists of gateway keys must name routes or models that exist.
  void check_gateway_routes(const YAML::Node& auth) {
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

  void read_log(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return;
    const std::string p = "log";
    if (!check_map(n, p, {"level", "format", "access_log"})) return;
    auto& l = cfg_.log;
    if (read_string(n, "level", p, l.level)) {
      static const std::set<std::string> kLevels = {"trace", "debug", "info",
                                                    "warn",  "error", "off"};
      if (!kLevels.count(l.level))
        error(
            n["level"], "log.level",
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

  void read_cooldown(const YAML::Node& n, const std::string& p, CooldownConfig& c) {
    if (!n.IsDefined() || n.IsNull()) return;
    if (!check_map(n, p, {"initial_ms", "multiplier", "max_ms", "jitter"})) return;
    read_int(n, "initial_ms", p, c.initial_ms, 1);
    read_double(n, "multiplier", p, c.multiplier, 1.0, 100.0);
    read_int(n, "max_ms", p, c.max_ms, 1);
    read_double(n, "jitter", p, c.jitter, 0.0, 1.0);
    if (c.max_ms < c.initial_ms) error(n["max_ms"], join(p, "max_ms"), "must be >= initial_ms");
  }

  void read_breaker(const YAML::Node& n, const std::string& p, BreakerConfig& b) {
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

  void read_retry(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return;
    const std::string p = "retry";
    if (!check_map(n, p, {"max_attempts", "budget_ms", "wait_for_key_ms"})) return;
    read_int(n, "max_attempts", p, cfg_.retry.max_attempts, 1, 100);
    read_int(n, "budget_ms", p, cfg_.retry.budget_ms, 1);
    read_int(n, "wait_for_key_ms", p, cfg_.retry.wait_for_key_ms, 0);
  }

  void read_learning(const YAML::Node& n) {
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

  void read_workflows(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return;
    const std::string p = "workflows";
    if (!check_map(n, p,
                   {"allow_exec", "http_allow", "lease_ms", "max_concurrent_runs", "max_parallel"}))
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
          const size_t scheme = v.rfind("https://", 0) == 0  ? 8
                                : v.rfind("http://", 0) == 0 ? 7
                                                             : 0;
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
  }

  void read_routing(const YAML::Node& n) {
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

  // A list of secrets: `env:NAME` (comma-separated in that variable) or a YAML list of literals
  // or env: references. Entries may be mappings {key, weight} when `weights` is given.
  std::vector<std::string> read_secret_list(const YAML::Node& n, const std::string& path, bool,
                                            std::vector<double>* weights = nullptr,
                                            std::string* missing_var = nullptr) {
    std::vector<std::string> out;
    auto add = [&](const std::string& secret, double w) {
      out.push_back(secret);
      if (weights) weights->push_back(w);
    };
    if (n.IsScalar()) {
      std::string var;
      auto v = resolve(n.Scalar(), &var);
      if (!v) {
        if (missing_var) *missing_var = var;
        return out;
      }
      if (!var.empty()) {
        for (auto& s : split_csv(*v)) add(s, 1.0);
      } else if (!v->empty()) {
        add(*v, 1.0);
      }
      return out;
    }
    if (!n.IsSequence()) {
      error(n, path, "expected env:NAME or a list of keys, got " + describe(n));
      return out;
    }
    for (size_t i = 0; i < n.size(); ++i) {
      YAML::Node item = n[i];
      std::string ip = path + "[" + std::to_string(i) + "]";
      std::string value;
      double w = 1.0;
      if (item.IsScalar()) {
        value = item.Scalar();
      } else if (item.IsMap() && weights) {
        check_map(item, ip, {"key", "weight"});
        if (!read_string(item, "key", ip, value)) {
          error(item, ip, "a key entry needs 'key'");
          continue;
        }
        read_double(item, "weight", ip, w, 0.0, 1e6, true);
      } else {
        error(item, ip, "expected a key string" + std::string(weights ? " or {key, weight}" : ""));
        continue;
      }
      std::string var;
      auto v = resolve(value, &var);
      if (!v) {
        error(item, ip, "environment variable " + var + " is not set");
        continue;
      }
      if (v->empty()) {
        error(item, ip, "key is empty");
        continue;
      }
      add(*v, w);
    }
    return out;
  }

  void read_providers(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return;
    if (!n.IsMap()) {
      error(n, "providers", "expected a mapping of provider names");
      return;
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string name = it->first.as<std::string>("");
      std::string p = "providers." + name;
      YAML::Node v = it->second;
      ProviderConfig pc;
      pc.name = name;
      pc.cooldown = cfg_.cooldown;
      pc.breaker = cfg_.breaker;
      if (name.empty() || name.find_first_of("/#. ") != std::string::npos) {
        error(it->first, p,
              "provider names must be non-empty and contain no '/', '#', '.' or spaces");
      }
      if (!check_map(v, p,
                     {"kind", "base_url", "keys", "limits", "timeout_ms", "selection", "cooldown",
                      "breaker", "mock_if_no_keys", "mock"})) {
        continue;
      }
      read_enum(v, "kind", p, pc.kind,
                {{"openai", ProviderKind::kOpenAI},
                 {"anthropic", ProviderKind::kAnthropic},
                 {"mock", ProviderKind::kMock}});
      if (read_string(v, "base_url", p, pc.base_url)) {
        if (pc.base_url.rfind("http://", 0) != 0 && pc.base_url.rfind("https://", 0) != 0)
          error(v["base_url"], p + ".base_url", "must start with http:// or https://");
        while (!pc.base_url.empty() && pc.base_url.back() == '/') pc.base_url.pop_back();
      } else if (pc.kind == ProviderKind::kOpenAI) {
        pc.base_url = "https://api.openai.com/v1";
      } else if (pc.kind == ProviderKind::kAnthropic) {
        pc.base_url = "https://api.anthropic.com/v1";
      }
      bool mock_if_no_keys = false;
      read_bool(v, "mock_if_no_keys", p, mock_if_no_keys);
      std::vector<double> weights;
      std::string missing_var;
      if (present(v, "keys")) {
        auto secrets = read_secret_list(v["keys"], p + ".keys", true, &weights, &missing_var);
        for (size_t i = 0; i < secrets.size(); ++i) {
          KeyConfig k;
          k.id = name + "#" + std::to_string(i + 1);
          k.secret = secrets[i];
          k.weight = weights[i];
          pc.keys.push_back(std::move(k));
        }
      }
      if (pc.keys.empty() && (mock_if_no_keys || pc.kind == ProviderKind::kMock)) {
        // A mock needs no secret; it still gets a key so that the pool has something to lease.
        if (pc.kind != ProviderKind::kMock) pc.mock_substitute = true;
        pc.kind = ProviderKind::kMock;
        KeyConfig k;
        k.id = name + "#1";
        k.secret = "mock-key-" + name;
        pc.keys.push_back(std::move(k));
      }
      if (!missing_var.empty()) missing_vars_[name] = missing_var;
      YAML::Node lim = v["limits"];
      const std::string lp = p + ".limits";
      if (check_map(lim, lp, {"rpm", "tpm", "rpd", "tpd", "max_concurrent", "daily_reset"})) {
        read_int(lim, "rpm", lp, pc.limits.rpm, 0);
        read_int(lim, "tpm", lp, pc.limits.tpm, 0);
        read_int(lim, "rpd", lp, pc.limits.rpd, 0);
        read_int(lim, "tpd", lp, pc.limits.tpd, 0);
        read_int(lim, "max_concurrent", lp, pc.limits.max_concurrent, 0, 1000000);
        if (present(lim, "daily_reset")) {
          YAML::Node dr = lim["daily_reset"];
          int64_t hour = 0;
          if (dr.IsScalar() && dr.Scalar() == "rolling") {
            pc.limits.daily_reset_hour_utc = -1;
          } else if (dr.IsScalar() && YAML::convert<int64_t>::decode(dr, hour) && hour >= 0 &&
                     hour <= 23) {
            pc.limits.daily_reset_hour_utc = static_cast<int>(hour);
          } else {
            error(dr, lp + ".daily_reset",
                  "expected a UTC hour 0-23 or 'rolling', got " + describe(dr));
          }
        }
      }
      read_int(v, "timeout_ms", p, pc.timeout_ms, 1);
      read_enum(v, "selection", p, pc.selection,
                {{"round_robin", KeySelection::kRoundRobin},
                 {"least_loaded", KeySelection::kLeastLoaded}});
      if (present(v, "cooldown")) read_cooldown(v["cooldown"], p + ".cooldown", pc.cooldown);
      if (present(v, "breaker")) read_breaker(v["breaker"], p + ".breaker", pc.breaker);
      if (present(v, "mock")) read_mock(v["mock"], p + ".mock", pc.mock);
      cfg_.providers.push_back(std::move(pc));
    }
  }

  void read_models(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return;
    if (!n.IsMap()) {
      error(n, "models", "expected a mapping of model names");
      return;
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string name = it->first.as<std::string>("");
      std::string p = "models." + name;
      YAML::Node v = it->second;
      ModelConfig m;
      m.name = name;
      if (!check_map(
              v, p,
              {"provider", "upstream", "tier", "cost", "context_window", "strengths", "weight"}))
        continue;
      if (!read_string(v, "provider", p, m.provider)) {
        error(v.IsDefined() && !v.IsNull() ? v : it->first, p + ".provider", "is required");
      } else if (!cfg_.find_provider(m.provider)) {
        error(v["provider"], p + ".provider", "unknown provider '" + m.provider + "'");
      }
      if (!read_string(v, "upstream", p, m.upstream)) m.upstream = name;
      read_enum(
          v, "tier", p, m.tier,
          {{"speed", Tier::kSpeed}, {"balanced", Tier::kBalanced}, {"flagship", Tier::kFlagship}});
      YAML::Node c = v["cost"];
      if (check_map(c, p + ".cost", {"input_per_mtok", "output_per_mtok"})) {
        read_double(c, "input_per_mtok", p + ".cost", m.cost.input_per_mtok, 0.0);
        read_double(c, "output_per_mtok", p + ".cost", m.cost.output_per_mtok, 0.0);
      }
      read_int(v, "context_window", p, m.context_window, 1);
      if (present(v, "strengths")) {
        YAML::Node s = v["strengths"];
        if (!s.IsSequence()) {
          error(s, p + ".strengths", "expected a list of strings");
        } else {
          for (size_t i = 0; i < s.size(); ++i) {
            if (!s[i].IsScalar())
              error(s[i], p + ".strengths[" + std::to_string(i) + "]", "expected a string");
            else
              m.strengths.push_back(s[i].Scalar());
          }
        }
      }
      read_double(v, "weight", p, m.weight, 0.0, 1e6, true);
      cfg_.models.push_back(std::move(m));
    }
  }

  void read_routes(const YAML::Node& n) {
    if (!n.IsDefined() || n.IsNull()) return;
    if (!n.IsMap()) {
      error(n, "routes", "expected a mapping of route names");
      return;
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string name = it->first.as<std::string>("");
      std::string p = "routes." + name;
      YAML::Node v = it->second;
      RouteConfig r;
      r.name = name;
      if (!check_map(v, p, {"strategy", "layers"})) continue;
      if (cfg_.find_model(name))
        error(it->first, p, "route name '" + name + "' is also a model name");
      read_enum(v, "strategy", p, r.strategy,
                {{"learned", RouteStrategy::kLearned},
                 {"ordered", RouteStrategy::kOrdered},
                 {"weighted", RouteStrategy::kWeighted},
                 {"cheapest", RouteStrategy::kCheapest}});
      YAML::Node layers = v["layers"];
      if (!present(v, "layers")) {
        error(v.IsDefined() && !v.IsNull() ? v : it->first, p + ".layers", "is required");
      } else if (!layers.IsSequence() || layers.size() == 0) {
        error(layers, p + ".layers", "expected a non-empty list of layers");
      } else {
        for (size_t i = 0; i < layers.size(); ++i) {
          YAML::Node layer = layers[i];
          std::string lp = p + ".layers[" + std::to_string(i) + "]";
          std::vector<std::string> models;
          auto add_model = [&](const YAML::Node& m, const std::string& mp) {
            if (!m.IsScalar()) {
              error(m, mp, "expected a model name");
              return;
            }
            if (!cfg_.find_model(m.Scalar())) {
              error(m, mp, "unknown model '" + m.Scalar() + "'");
              return;
            }
            models.push_back(m.Scalar());
          };
          if (layer.IsScalar()) {
            add_model(layer, lp);
          } else if (layer.IsSequence() && layer.size() > 0) {
            for (size_t j = 0; j < layer.size(); ++j)
              add_model(layer[j], lp + "[" + std::to_string(j) + "]");
          } else {
            error(layer, lp, "expected a model name or a non-empty list of model names");
          }
          if (!models.empty()) r.layers.push_back(std::move(models));
        }
      }
      cfg_.routes.push_back(std::move(r));
    }
  }

  void read_mock(const YAML::Node& n, const std::string& p, MockScenario& m) {
    if (!n.IsDefined() || n.IsNull()) return;
    if (!check_map(n, p,
                   {"latency_ms", "chunks", "chunk_delay_ms", "rpm", "max_concurrent", "error_rate",
                    "error_status", "timeout_rate", "drop_mid_stream_rate", "completion_tokens",
                    "script", "invalid_keys", "quality", "model_latency_ms", "seed"}))
      return;
    read_int(n, "latency_ms", p, m.latency_ms, 0, 3600000);
    read_int(n, "chunks", p, m.chunks, 1, 100000);
    read_int(n, "chunk_delay_ms", p, m.chunk_delay_ms, 0, 3600000);
    read_int(n, "rpm", p, m.rpm, 0);
    read_int(n, "max_concurrent", p, m.max_concurrent, 0);
    read_double(n, "error_rate", p, m.error_rate, 0.0, 1.0);
    read_int(n, "error_status", p, m.error_status, 100, 599);
    read_double(n, "timeout_rate", p, m.timeout_rate, 0.0, 1.0);
    read_double(n, "drop_mid_stream_rate", p, m.drop_mid_stream_rate, 0.0, 1.0);
    read_int(n, "completion_tokens", p, m.completion_tokens, 1, 1000000);
    int64_t seed = int64_t(m.seed);
    read_int(n, "seed", p, seed, 0);
    m.seed = uint64_t(seed);
    if (present(n, "script")) {
      YAML::Node s = n["script"];
      if (!s.IsSequence()) {
        error(s, p + ".script", "expected a list of steps");
      } else {
        for (size_t i = 0; i < s.size(); ++i) {
          std::string sp = p + ".script[" + std::to_string(i) + "]";
          if (!check_map(s[i], sp,
                         {"status", "times", "drop_mid_stream", "hang", "retry_after_ms"}))
            continue;
          MockScriptStep step;
          read_int(s[i], "status", sp, step.status, 100, 599);
          read_int(s[i], "times", sp, step.times, 1, 1000000);
          read_bool(s[i], "drop_mid_stream", sp, step.drop_mid_stream);
          read_bool(s[i], "hang", sp, step.hang);
          read_int(s[i], "retry_after_ms", sp, step.retry_after_ms, 0);
          m.script.push_back(step);
        }
      }
    }
    if (present(n, "invalid_keys")) {
      YAML::Node k = n["invalid_keys"];
      if (!k.IsSequence())
        error(k, p + ".invalid_keys", "expected a list of keys");
      else
        for (size_t i = 0; i < k.size(); ++i)
          if (k[i].IsScalar()) m.invalid_keys.push_back(k[i].Scalar());
    }
    if (present(n, "quality")) {
      YAML::Node q = n["quality"];
      if (!q.IsMap()) {
        error(q, p + ".quality", "expected model: { category: probability }");
      } else {
        for (auto it = q.begin(); it != q.end(); ++it) {
          std::string model = it->first.as<std::string>("");
          std::string qp = p + ".quality." + model;
          if (!it->second.IsMap()) {
            error(it->second, qp, "expected category: probability");
            continue;
          }
          for (auto ct = it->second.begin(); ct != it->second.end(); ++ct) {
            std::string cat = ct->first.as<std::string>("");
            double v = 0;
            if (!ct->second.IsScalar() || !YAML::convert<double>::decode(ct->second, v) || v < 0 ||
                v > 1) {
              error(ct->second, qp + "." + cat, "expected a probability between 0 and 1");
              continue;
            }
            m.quality[model][cat] = v;
          }
        }
      }
    }
    if (present(n, "model_latency_ms")) {
      YAML::Node ml = n["model_latency_ms"];
      if (!ml.IsMap()) {
        error(ml, p + ".model_latency_ms", "expected model: milliseconds");
      } else {
        for (auto it = ml.begin(); it != ml.end(); ++it) {
          int64_t v = 0;
          std::string model = it->first.as<std::string>("");
          if (!YAML::convert<int64_t>::decode(it->second, v) || v < 0)
            error(it->second, p + ".model_latency_ms." + model, "expected milliseconds >= 0");
          else
            m.model_latency_ms[model] = v;
        }
      }
    }
  }

 public:
  MockScenarioLoad load_mock(const std::string& text) {
    MockScenarioLoad out;
    YAML::Node root;
    try {
      root = YAML::Load(text);
      if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
      MockScenario m;
      read_mock(root, "", m);
      out.scenario = m;
    } catch (const YAML::Exception& e) {
      ConfigError err;
      err.source = source_;
      err.line = e.mark.line + 1;
      err.column = e.mark.column + 1;
      err.message = "YAML: " + e.msg;
      errors_.push_back(err);
    }
    out.errors = std::move(errors_);
    if (!out.errors.empty()) out.scenario.reset();
    return out;
  }

 private:
  // A provider that some route needs must have keys (mocks always have one).
  void check_keys_for_routes(const YAML::Node& providers) {
    std::set<std::string> needed;
    for (const auto& r : cfg_.routes)
      for (const auto& layer : r.layers)
        for (const auto& m : layer)
          if (auto* mc = cfg_.find_model(m)) needed.insert(mc->provider);
    for (const auto& pc : cfg_.providers) {
      if (!pc.keys.empty() || !needed.count(pc.name)) continue;
      YAML::Node pn = providers[pc.name];
      YAML::Node at = pn.IsMap() && pn["keys"].IsDefined() ? pn["keys"] : pn;
      std::string why = "no API keys, and a route uses this provider";
      if (auto it = missing_vars_.find(pc.name); it != missing_vars_.end())
        why = "no API keys: environment variable " + it->second +
              " is not set, and a route uses this provider";
      error(at, "providers." + pc.name + ".keys", why);
    }
  }

  std::string source_;
  const Environment& env_;
  Config cfg_;
  std::vector<ConfigError> errors_;
  std::vector<std::pair<std::string, std::string>> overrides_;  // path → variable
  std::map<std::string, std::string> missing_vars_;
};

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
  Loader loader(source_name, env);
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
  Loader loader(source_name, env);
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
