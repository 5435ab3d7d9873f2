// ConfigReader (config_reader.h): providers and their keys, models and routes, and the checks that
// tie them together.
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>

#include "common/config_reader.h"

namespace switchboard::config_detail {
namespace {

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

}  // namespace

std::vector<std::string> ConfigReader::read_secret_list(const YAML::Node& n,
                                                        const std::string& path, bool,
                                                        std::vector<double>* weights,
                                                        std::string* missing_var) {
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

void ConfigReader::read_providers(const YAML::Node& n) {
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
                    "breaker", "quota", "mock_if_no_keys", "mock", "api_version", "headers",
                    "proxy", "tls", "responses", "json_schema"})) {
      continue;
    }
    read_enum(v, "kind", p, pc.kind,
              {{"openai", ProviderKind::kOpenAI},
               {"azure", ProviderKind::kAzure},
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
    } else if (pc.kind == ProviderKind::kAzure) {
      error(v.IsDefined() && !v.IsNull() ? v : it->first, p + ".base_url",
            "kind: azure needs base_url (https://<resource>.openai.azure.com/openai)");
    }
    if (pc.kind == ProviderKind::kAzure) {
      pc.api_version = "2024-10-21";  // the GA version of the data-plane API
      if (read_string(v, "api_version", p, pc.api_version) &&
          (pc.api_version.empty() || pc.api_version.size() > 64 ||
           pc.api_version.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") !=
               std::string::npos))
        error(v["api_version"], p + ".api_version",
              "expected a version such as 2024-10-21 or 2025-01-01-preview");
    } else if (present(v, "api_version")) {
      error(v["api_version"], p + ".api_version", "only kind: azure takes api_version");
    }
    read_provider_egress(v, p, pc);
    bool mock_if_no_keys = false;
    read_bool(v, "mock_if_no_keys", p, mock_if_no_keys);
    std::vector<double> weights;
    std::string missing_var;
    if (present(v, "keys") && v["keys"].IsScalar() && v["keys"].Scalar() == "none") {
      // A keyless server: one key entry without a secret carries the limits and cooldowns.
      pc.keyless = true;
      KeyConfig k;
      k.id = name + "#1";
      pc.keys.push_back(std::move(k));
    } else if (present(v, "keys")) {
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
    read_enum(
        v, "selection", p, pc.selection,
        {{"round_robin", KeySelection::kRoundRobin}, {"least_loaded", KeySelection::kLeastLoaded}});
    if (present(v, "cooldown")) read_cooldown(v["cooldown"], p + ".cooldown", pc.cooldown);
    if (present(v, "breaker")) read_breaker(v["breaker"], p + ".breaker", pc.breaker);
    if (present(v, "quota")) read_quota(v["quota"], p + ".quota", pc.quota);
    if (present(v, "mock")) read_mock(v["mock"], p + ".mock", pc.mock);
    cfg_.providers.push_back(std::move(pc));
  }
}

namespace {

// RFC 9110 token characters: what a header name may be made of.
bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u)) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) return false;
  }
  return true;
}

// A value that cannot end a header line or start another: visible characters, spaces and tabs.
bool is_header_value(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

void ConfigReader::read_provider_egress(const YAML::Node& v, const std::string& p,
                                        ProviderConfig& pc) {
  if (present(v, "headers")) {
    const YAML::Node h = v["headers"];
    const std::string hp = p + ".headers";
    if (!h.IsMap()) {
      error(h, hp, "expected a mapping of header names to values");
    } else {
      // Framing and routing are the gateway's; the credential header is the keys' (except for a
      // keyless provider, whose gateway token may go here).
      static const std::set<std::string, std::less<>> reserved = {
          "host",    "content-length", "transfer-encoding",   "connection",
          "te",      "upgrade",        "keep-alive",          "content-type",
          "trailer", "expect",         "proxy-authorization", "proxy-connection"};
      for (auto it = h.begin(); it != h.end(); ++it) {
        const std::string name = lower(it->first.as<std::string>(""));
        const std::string np = hp + "." + name;
        if (!is_token(name) || name.size() > 128) {
          error(it->first, np, "not a valid header name");
          continue;
        }
        if (reserved.count(name) || name.starts_with("x-switchboard-")) {
          error(it->first, np, "is set by the gateway and cannot be configured");
          continue;
        }
        const bool credential = name == "authorization" || name == "api-key" || name == "x-api-key";
        if (credential && !pc.keyless &&
            !(present(v, "keys") && v["keys"].IsScalar() && v["keys"].Scalar() == "none")) {
          error(it->first, np, "is the provider's key: put it in keys (or use keys: none)");
          continue;
        }
        if (!it->second.IsScalar()) {
          error(it->second, np, "expected a string");
          continue;
        }
        std::string var;
        auto value = resolve(it->second.Scalar(), &var);
        if (!value) {
          error(it->second, np, "environment variable " + var + " is not set");
          continue;
        }
        if (!is_header_value(*value) || value->size() > 8192) {
          error(it->second, np, "the value has control characters or is longer than 8 KiB");
          continue;
        }
        pc.headers.push_back({name, *value, !var.empty() || credential});
      }
    }
  }
  if (read_string(v, "proxy", p, pc.proxy) && pc.proxy != "none") {
    // http://[user:password@]host:port — a plain forward proxy (CONNECT for https targets).
    std::string_view u = pc.proxy;
    bool ok = u.starts_with("http://");
    if (ok) u.remove_prefix(7);
    if (auto at = u.rfind('@'); ok && at != std::string_view::npos) u.remove_prefix(at + 1);
    while (!u.empty() && u.back() == '/') u.remove_suffix(1);
    const auto colon = u.rfind(':');
    ok = ok && colon != std::string_view::npos && colon > 0 && colon + 1 < u.size() &&
         u.find_first_of("/?# ") == std::string_view::npos &&
         u.substr(colon + 1).find_first_not_of("0123456789") == std::string_view::npos;
    if (!ok)
      error(v["proxy"], p + ".proxy",
            "expected http://[user:password@]host:port, or none (the environment's HTTPS_PROXY "
            "is used when proxy is not set)");
  }
  if (present(v, "tls")) {
    const YAML::Node t = v["tls"];
    const std::string tp = p + ".tls";
    if (check_map(t, tp, {"ca_file", "client_cert", "client_key"})) {
      auto file = [&](const char* key, std::string& out) {
        if (!read_string(t, key, tp, out)) return;
        if (std::FILE* f = std::fopen(out.c_str(), "rb")) {
          std::fclose(f);
        } else {
          error(t[key], join(tp, key), "cannot read " + out + ": " + std::strerror(errno));
        }
      };
      file("ca_file", pc.tls.ca_file);
      file("client_cert", pc.tls.client_cert);
      file("client_key", pc.tls.client_key);
      if (pc.tls.client_cert.empty() != pc.tls.client_key.empty())
        error(t, tp, "client_cert and client_key go together");
    }
  }
  if (pc.kind == ProviderKind::kOpenAI && pc.base_url.starts_with("https://api.openai.com/"))
    pc.responses = ResponsesMode::kNative;  // OpenAI has the Responses API itself
  read_enum(v, "responses", p, pc.responses,
            {{"chat", ResponsesMode::kChat}, {"native", ResponsesMode::kNative}});
  if (present(v, "json_schema")) {
    std::string mode;
    read_string(v, "json_schema", p, mode);
    if (mode == "refuse") {
      pc.refuse_json_schema = true;
    } else if (mode != "tool") {
      error(v["json_schema"], p + ".json_schema",
            "expected tool (a forced tool call carries the schema) or refuse (a 400)");
    }
    if (pc.kind != ProviderKind::kAnthropic)
      error(v["json_schema"], p + ".json_schema", "only kind: anthropic takes json_schema");
  }
  if (pc.responses == ResponsesMode::kNative && pc.kind != ProviderKind::kOpenAI &&
      present(v, "responses"))
    error(v["responses"], p + ".responses",
          "native needs kind: openai (other kinds are translated from chat completions)");
}

void ConfigReader::read_quota(const YAML::Node& n, const std::string& p, QuotaConfig& q) {
  if (!check_map(n, p, {"period", "tokens", "requests", "usd", "warning", "critical"})) return;
  read_enum(n, "period", p, q.period, {{"month", QuotaPeriod::kMonth}, {"day", QuotaPeriod::kDay}});
  read_int(n, "tokens", p, q.tokens, 0);
  read_int(n, "requests", p, q.requests, 0);
  read_double(n, "usd", p, q.usd, 0.0, 9e6);
  read_double(n, "warning", p, q.warning, 0.0, 1.0, true);
  read_double(n, "critical", p, q.critical, 0.0, 1.0, true);
  if (q.warning > q.critical)
    error(present(n, "warning") ? n["warning"] : n["critical"], join(p, "warning"),
          "must be <= critical (" + std::to_string(q.critical) + ")");
}

void ConfigReader::read_models(const YAML::Node& n) {
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

void ConfigReader::read_routes(const YAML::Node& n) {
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

void ConfigReader::check_keys_for_routes(const YAML::Node& providers) {
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

}  // namespace switchboard::config_detail
