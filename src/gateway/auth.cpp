// Authorization of requests by area, and the routes policy of client keys (auth.h).
#include "gateway/auth.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>

#include "upstream/translate.h"

namespace switchboard::gateway {

Area classify_path(std::string_view target, std::string_view& canonical) {
  canonical = target;
  if (target == "/v1/workflows" || target.rfind("/v1/workflows/", 0) == 0) return Area::kWorkflows;
  if (target.rfind("/v1/", 0) == 0) return Area::kClient;
  // OpenAI clients configured with a base URL without /v1 send these: the same endpoints,
  // under the same check.
  if (target == "/chat/completions") {
    canonical = "/v1/chat/completions";
    return Area::kClient;
  }
  if (target == "/responses") {
    canonical = "/v1/responses";
    return Area::kClient;
  }
  if (target == "/models") {
    canonical = "/v1/models";
    return Area::kClient;
  }
  if (target.rfind("/admin/", 0) == 0) return Area::kAdmin;
  if (target == "/ui" || target.rfind("/ui/", 0) == 0) return Area::kConsole;
  return Area::kOpen;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string_view bearer_token(const Request& req) {
  auto auth = req[http::field::authorization];
  std::string_view v(auth.data(), auth.size());
  if (v.size() > 7 && (v.substr(0, 7) == "Bearer " || v.substr(0, 7) == "bearer "))
    return v.substr(7);
  return {};
}

namespace {

// Anthropic's clients get Anthropic's error shape (their SDKs map it to typed errors).
bool anthropic_path(const Request& req) {
  std::string_view target(req.target().data(), req.target().size());
  return target.rfind("/v1/messages", 0) == 0;
}

Response unauthorized(const Request& req, std::string_view message) {
  if (anthropic_path(req))
    return json_response(http::status::unauthorized, upstream::anthropic_error_json(401, message),
                         req.version());
  return error_response(http::status::unauthorized, message, "invalid_request_error",
                        "invalid_api_key", req.version());
}

bool loopback(const asio::ip::tcp::socket& peer) {
  boost::system::error_code ec;
  auto ep = peer.remote_endpoint(ec);
  return !ec && ep.address().is_loopback();
}

}  // namespace

std::optional<Response> authorize(const Config& cfg, const Request& req, Area area,
                                  const asio::ip::tcp::socket& peer, Principal& who) {
  who = Principal{};
  std::string_view token = bearer_token(req);
  // Anthropic's SDKs (and Claude Code) send their key as x-api-key: a gateway key there counts
  // the same (never an admin key: the admin area takes Bearer only).
  if (token.empty() && area != Area::kAdmin) {
    auto k = req["x-api-key"];
    token = std::string_view(k.data(), k.size());
  }
  switch (area) {
    case Area::kOpen:
      return std::nullopt;
    case Area::kAdmin: {
      const bool ok = cfg.auth.admin_key.empty() ? loopback(peer)
                                                 : constant_time_equal(token, cfg.auth.admin_key);
      if (!ok) return unauthorized(req, "admin key required");
      who.admin = true;
      return std::nullopt;
    }
    case Area::kConsole:
      if (cfg.auth.admin_key.empty() && !loopback(peer))
        return unauthorized(req, "the console is open to loopback peers only (no admin key set)");
      return std::nullopt;
    case Area::kClient:
    case Area::kWorkflows: {
      // Every key is compared (no early exit), each in constant time.
      for (size_t i = 0; i < cfg.auth.gateway_keys.size(); ++i)
        if (constant_time_equal(token, cfg.auth.gateway_keys[i])) who.gateway_key = int(i);
      if (area == Area::kWorkflows && !cfg.auth.admin_key.empty() &&
          constant_time_equal(token, cfg.auth.admin_key)) {
        who.admin = true;
        return std::nullopt;
      }
      // A gateway without any key (loopback-only unless allow_open): its local callers are all
      // the same principal, the operator's own, and see every run as the admin would.
      if (area == Area::kWorkflows && cfg.auth.gateway_keys.empty() && cfg.auth.admin_key.empty() &&
          loopback(peer))
        who.admin = true;
      if (cfg.auth.gateway_keys.empty() || who.gateway_key >= 0) return std::nullopt;
      return unauthorized(req, token.empty()
                                   ? "missing gateway key (Authorization: Bearer ... or x-api-key)"
                                   : "invalid gateway key");
    }
  }
  return std::nullopt;
}

std::string_view policy_target(const Config& cfg, std::string_view model) {
  for (const auto& r : cfg.routes)
    if (r.name == model) return r.name;
  if (const ModelConfig* m = cfg.find_model(model)) return m->name;
  if (auto slash = model.find('/'); slash != std::string_view::npos && slash > 0) {
    const std::string_view provider = model.substr(0, slash), upstream = model.substr(slash + 1);
    for (const auto& m : cfg.models)
      if (m.provider == provider && m.upstream == upstream) return m.name;
  }
  return model;
}

bool key_may_use(const Config& cfg, int gateway_key, std::string_view model) {
  if (gateway_key < 0) return true;
  const auto& routes = cfg.auth.gateway_policies[size_t(gateway_key)].routes;
  if (routes.empty()) return true;
  const std::string_view target = policy_target(cfg, model);
  return std::find(routes.begin(), routes.end(), target) != routes.end();
}

std::string workflow_client(const Config& cfg, const Principal& who) {
  if (who.admin && !cfg.auth.admin_key.empty()) return "admin";
  if (who.gateway_key >= 0) return "key:" + cfg.auth.gateway_policies[size_t(who.gateway_key)].name;
  return "anonymous";
}

}  // namespace switchboard::gateway
