#include "common/config.h"

#include <openssl/evp.h>

#include <cstdlib>

extern char** environ;

namespace switchboard {

std::string KeyConfig::fingerprint() const {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(secret.data(), secret.size(), digest, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned i = 0; i < 6 && i < len; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

const ProviderConfig* Config::find_provider(const std::string& name) const {
  for (const auto& p : providers)
    if (p.name == name) return &p;
  return nullptr;
}

const ModelConfig* Config::find_model(std::string_view name) const {
  for (const auto& m : models)
    if (m.name == name) return &m;
  return nullptr;
}

const RouteConfig* Config::find_route(const std::string& name) const {
  for (const auto& r : routes)
    if (r.name == name) return &r;
  return nullptr;
}

std::vector<std::pair<std::string, std::string>> Config::secrets() const {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& p : providers) {
    for (const auto& k : p.keys) out.emplace_back(k.secret, k.id);
    for (const auto& h : p.headers)
      if (h.secret) out.emplace_back(h.value, p.name + ".headers." + h.name);
    if (auto at = p.proxy.find('@'); at != std::string::npos) {
      // http://user:password@host: the password part
      const auto scheme = p.proxy.find("://");
      const auto colon = p.proxy.find(':', scheme == std::string::npos ? 0 : scheme + 3);
      if (colon != std::string::npos && colon < at)
        out.emplace_back(p.proxy.substr(colon + 1, at - colon - 1), p.name + ".proxy");
    }
  }
  for (size_t i = 0; i < auth.gateway_keys.size(); ++i)
    out.emplace_back(auth.gateway_keys[i], i < auth.gateway_policies.size()
                                               ? auth.gateway_policies[i].name
                                               : "gateway#" + std::to_string(i + 1));
  if (!auth.admin_key.empty()) out.emplace_back(auth.admin_key, "admin");
  if (!cluster.redis_password.empty()) out.emplace_back(cluster.redis_password, "redis");
  if (!state.url_password.empty()) out.emplace_back(state.url_password, "postgres");
  return out;
}

std::string ConfigError::to_string() const {
  std::string s = source;
  if (line > 0) s += ":" + std::to_string(line) + ":" + std::to_string(column);
  s += ": ";
  if (!path.empty()) s += path + ": ";
  s += message;
  return s;
}

Environment Environment::from_process() {
  Environment e;
  for (char** p = environ; p && *p; ++p) {
    std::string kv(*p);
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    e.vars_.emplace(kv.substr(0, eq), kv.substr(eq + 1));
  }
  return e;
}

std::optional<std::string> Environment::get(const std::string& name) const {
  auto it = vars_.find(name);
  if (it == vars_.end()) return std::nullopt;
  return it->second;
}

std::string_view to_string(Tier t) {
  switch (t) {
    case Tier::kSpeed:
      return "speed";
    case Tier::kBalanced:
      return "balanced";
    case Tier::kFlagship:
      return "flagship";
  }
  return "?";
}

std::string_view to_string(Complexity c) {
  switch (c) {
    case Complexity::kSimple:
      return "simple";
    case Complexity::kModerate:
      return "moderate";
    case Complexity::kHigh:
      return "high";
    case Complexity::kCritical:
      return "critical";
  }
  return "?";
}

std::string_view to_string(ProviderKind k) {
  switch (k) {
    case ProviderKind::kOpenAI:
      return "openai";
    case ProviderKind::kAnthropic:
      return "anthropic";
    case ProviderKind::kMock:
      return "mock";
    case ProviderKind::kAzure:
      return "azure";
  }
  return "?";
}

std::string_view to_string(RouteStrategy s) {
  switch (s) {
    case RouteStrategy::kLearned:
      return "learned";
    case RouteStrategy::kOrdered:
      return "ordered";
    case RouteStrategy::kWeighted:
      return "weighted";
    case RouteStrategy::kCheapest:
      return "cheapest";
  }
  return "?";
}

std::optional<Tier> parse_tier(std::string_view s) {
  if (s == "speed") return Tier::kSpeed;
  if (s == "balanced") return Tier::kBalanced;
  if (s == "flagship") return Tier::kFlagship;
  return std::nullopt;
}

std::optional<Complexity> parse_complexity(std::string_view s) {
  if (s == "simple") return Complexity::kSimple;
  if (s == "moderate") return Complexity::kModerate;
  if (s == "high") return Complexity::kHigh;
  if (s == "critical") return Complexity::kCritical;
  return std::nullopt;
}

}  // namespace switchboard
