// Fallback plans: a direct request's plan, and how a plan explains itself (routing.h).
#include <cstdio>

#include "common/json.h"
#include "routing/routing.h"

namespace switchboard::routing {

namespace {
std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.4g", v);
  return buf;
}
}  // namespace

FallbackPlan FallbackPlan::direct(std::shared_ptr<const Config> config, std::string route,
                                  std::string category, std::string provider, std::string upstream,
                                  bool breaker_open) {
  auto owned = std::make_shared<Owned>();
  owned->model = provider + "/" + upstream;
  owned->provider = std::move(provider);
  owned->upstream = std::move(upstream);
  Attempt a;
  a.model = owned->model;
  a.provider = owned->provider;
  a.upstream = owned->upstream;
  a.breaker_open = breaker_open;
  a.placement = Placement::kDirect;
  FallbackPlan plan(std::move(config), std::move(route), std::move(category), "direct", {a});
  plan.owned_ = std::move(owned);
  return plan;
}

std::string Attempt::reason() const {
  switch (placement) {
    case Placement::kAsWritten:
      return "as written in the route";
    case Placement::kCheapest:
      return "estimated cost $" + fmt_double(estimated_cost_usd);
    case Placement::kWeightedDraw:
      return "weighted random draw";
    case Placement::kWithinTolerance:
      return std::string(score.contextual ? "contextual " : "") +
             "success sample within quality tolerance of the best; score " +
             fmt_double(score.total);
    case Placement::kOutsideTolerance:
      return std::string(score.contextual ? "contextual " : "") +
             "success sample below the best by more than the tolerance; score " +
             fmt_double(score.total);
    case Placement::kExplored:
      return "exploration: layer order drawn at random";
    case Placement::kBreakerOpen:
      return "breaker open: tried last";
    case Placement::kQuotaCritical:
      return "provider quota critical: behind the rest of its layer";
    case Placement::kQuotaExhausted:
      return "provider quota exhausted: skipped while it lasts";
    case Placement::kDirect:
      return "direct provider/model request";
  }
  return "";
}

std::string FallbackPlan::to_json() const {
  std::string out = "{\"route\":" + json::quote(route_) +
                    ",\"category\":" + json::quote(category_) +
                    ",\"strategy\":" + json::quote(strategy_) + ",\"attempts\":[";
  for (size_t i = 0; i < attempts_.size(); ++i) {
    const Attempt& a = attempts_[i];
    if (i) out += ",";
    out += "{\"position\":" + std::to_string(i) + ",\"model\":" + json::quote(a.model) +
           ",\"provider\":" + json::quote(a.provider) + ",\"upstream\":" + json::quote(a.upstream) +
           ",\"layer\":" + std::to_string(a.layer) +
           ",\"estimated_cost_usd\":" + json::number(a.estimated_cost_usd) +
           ",\"breaker_open\":" + (a.breaker_open ? "true" : "false") +
           ",\"quota\":" + json::quote(quota::to_string(a.quota)) +
           ",\"score\":{\"sample\":" + json::number(a.score.sample) +
           ",\"tier\":" + json::number(a.score.tier) + ",\"cost\":" + json::number(a.score.cost) +
           ",\"latency\":" + json::number(a.score.latency) +
           ",\"total\":" + json::number(a.score.total) +
           ",\"contextual\":" + (a.score.contextual ? "true" : "false") +
           "},\"reason\":" + json::quote(a.reason()) + "}";
  }
  out += "]}";
  return out;
}

}  // namespace switchboard::routing
