// ClientLimits (client_limits.h): a client key's rpm and monthly budget, local or shared.
#include "gateway/client_limits.h"

#include <algorithm>
#include <cstdio>

namespace switchboard::gateway {

ClientLimits::ClientLimits(Runtime& rt, const Snapshot& snap, int gateway_key)
    : rt_(rt), snap_(snap), gateway_key_(gateway_key) {}

ClientLimits::~ClientLimits() {
  if (hold_.active()) hold_.settle(charged_usd_);
  // Admitted on the local share while Redis was away: the next admission tells Redis.
  if (unsynced_ && charged_usd_ > 0) rt_.cluster->add_unsynced_spend(policy()->name, charged_usd_);
  if (reserved_usd_ > 0 || held_charge_usd_ > 0) {
    auto& st = state();
    std::lock_guard lock(st.mu);
    st.reserved_usd = std::max(0.0, st.reserved_usd - reserved_usd_);
    st.in_hold_usd = std::max(0.0, st.in_hold_usd - held_charge_usd_);
  }
}

const GatewayKeyPolicy* ClientLimits::policy() const {
  if (gateway_key_ < 0) return nullptr;
  return &snap_.config->auth.gateway_policies[size_t(gateway_key_)];
}

GatewayKeyState& ClientLimits::state() const {
  return *snap_.gateway_keys[size_t(gateway_key_)];
}

std::optional<ClientRefusal> ClientLimits::redis_down_refusal() const {
  if (rt_.cluster->config().on_redis_down != RedisDownPolicy::kRefuse) return std::nullopt;
  return ClientRefusal{http::status::service_unavailable,
                       "the gateways' shared limits are unavailable (Redis unreachable)",
                       "api_error", "cluster_unavailable", std::nullopt};
}

// ---- rpm

ClientRefusal ClientLimits::rpm_refusal(Nanos retry_after) const {
  const auto& p = *policy();
  return ClientRefusal{http::status::too_many_requests,
                       "gateway key '" + p.name + "' is limited to " + std::to_string(p.rpm) +
                           " requests per minute",
                       "rate_limit_error", "rate_limit_exceeded", retry_after};
}

std::optional<ClientRefusal> ClientLimits::local_rpm(int64_t rpm) {
  auto& st = state();
  std::lock_guard lock(st.mu);
  const auto now = rt_.clock.now();
  while (!st.window.empty() && now - st.window.front() >= std::chrono::minutes(1))
    st.window.pop_front();
  if (int64_t(st.window.size()) >= rpm)
    return rpm_refusal(st.window.front() + std::chrono::minutes(1) - now);
  st.window.push_back(now);
  return std::nullopt;
}

asio::awaitable<std::optional<ClientRefusal>> ClientLimits::admit_rpm() {
  const GatewayKeyPolicy* p = policy();
  if (p == nullptr || p->rpm <= 0) co_return std::nullopt;
  if (!rt_.cluster) co_return local_rpm(p->rpm);
  // Counted in Redis like a provider key's rpm, under the "#clients" namespace (no provider's
  // name contains '#'), by the key's configured name: never the secret.
  RateLimits limits;
  limits.rpm = p->rpm;
  cluster::ReserveRequest rq;
  rq.provider = "#clients";
  rq.limits = &limits;
  rq.candidates.push_back(p->name);
  cluster::ReserveResult res = co_await rt_.cluster->reserve(std::move(rq));
  switch (res.status) {
    case cluster::ReserveResult::Status::kGranted:
      res.reservation.commit();
      co_return std::nullopt;
    case cluster::ReserveResult::Status::kUnavailable:
      if (auto refusal = redis_down_refusal()) co_return refusal;
      co_return local_rpm(std::max<int64_t>(1, p->rpm / rt_.cluster->config().expected_gateways));
    case cluster::ReserveResult::Status::kFull:
      break;
  }
  co_return rpm_refusal(res.retry_in.value_or(std::chrono::seconds(60)));
}

// ---- monthly budget

ClientRefusal ClientLimits::budget_refusal(bool spent, double estimate_usd) const {
  const auto& p = *policy();
  char msg[256];
  if (spent) {
    std::snprintf(msg, sizeof(msg), "gateway key '%s' has spent its monthly budget of $%.2f",
                  p.name.c_str(), p.monthly_budget_usd);
  } else {
    std::snprintf(msg, sizeof(msg),
                  "gateway key '%s': this request (up to $%.4f) does not fit in what is left of "
                  "its monthly budget of $%.2f",
                  p.name.c_str(), estimate_usd, p.monthly_budget_usd);
  }
  return ClientRefusal{http::status::too_many_requests, msg, "insufficient_quota",
                       "budget_exceeded", std::chrono::hours(1)};
}

namespace {
// A new UTC month starts this gateway's count (and what it last heard from Redis) over.
void roll_month(GatewayKeyState& st, int month) {
  if (st.month == month) return;
  st.month = month;
  st.spend_usd = 0;
  st.shared_seen_usd = -1;
  st.in_hold_usd = 0;
}
}  // namespace

std::optional<ClientRefusal> ClientLimits::local_budget(double estimate_usd,
                                                        std::optional<double> shared_room) {
  const double budget = policy()->monthly_budget_usd;
  auto& st = state();
  std::lock_guard lock(st.mu);
  roll_month(st, utc_month(rt_.clock.wall_now()));
  // This gateway's own spend is part of the month's, shared or not.
  if (st.spend_usd >= budget) return budget_refusal(true, estimate_usd);
  if (st.spend_usd + st.reserved_usd + estimate_usd > budget)
    return budget_refusal(false, estimate_usd);
  if (shared_room) {
    // Redis is away: what the gateways had spent and held when it last answered stands, and
    // this gateway adds at most its share of what was left then.
    const double seen = st.shared_seen_usd >= 0 ? st.shared_seen_usd : st.spend_usd;
    const double base = st.shared_seen_usd >= 0 ? st.local_at_seen_usd : st.spend_usd;
    if (seen >= budget) return budget_refusal(true, estimate_usd);
    const double added = st.spend_usd + st.reserved_usd - base;
    if (added + estimate_usd > (budget - seen) * *shared_room)
      return budget_refusal(false, estimate_usd);
  }
  st.reserved_usd += estimate_usd;
  reserved_usd_ = estimate_usd;
  return std::nullopt;
}

asio::awaitable<std::optional<ClientRefusal>> ClientLimits::reserve_budget(double estimate_usd) {
  const GatewayKeyPolicy* p = policy();
  if (p == nullptr || p->monthly_budget_usd <= 0) co_return std::nullopt;
  if (!rt_.cluster) co_return local_budget(estimate_usd, std::nullopt);
  auto& st = state();
  cluster::BudgetRequest rq;
  rq.name = p->name;
  rq.estimate_usd = estimate_usd;
  rq.budget_usd = p->monthly_budget_usd;
  {
    std::lock_guard lock(st.mu);
    roll_month(st, utc_month(rt_.clock.wall_now()));
    rq.seed_spend_usd = std::max(0.0, st.spend_usd - st.in_hold_usd);
  }
  cluster::BudgetResult res = co_await rt_.cluster->reserve_budget(rq);
  if (res.status == cluster::BudgetResult::Status::kUnavailable) {
    if (auto refusal = redis_down_refusal()) co_return refusal;
    auto refusal = local_budget(estimate_usd, 1.0 / rt_.cluster->config().expected_gateways);
    unsynced_ = !refusal.has_value();
    co_return refusal;
  }
  std::lock_guard lock(st.mu);
  const bool granted = res.status == cluster::BudgetResult::Status::kGranted;
  if (granted) {
    st.reserved_usd += estimate_usd;
    reserved_usd_ = estimate_usd;
    hold_ = std::move(res.hold);
  }
  st.shared_seen_usd = res.spend_usd + res.held_usd + (granted ? estimate_usd : 0);
  st.local_at_seen_usd = st.spend_usd + st.reserved_usd;
  if (granted) co_return std::nullopt;
  co_return budget_refusal(res.status == cluster::BudgetResult::Status::kSpent, estimate_usd);
}

void ClientLimits::charge(double cost_usd) {
  if (gateway_key_ < 0 || cost_usd <= 0) return;
  charged_usd_ += cost_usd;
  auto& st = state();
  std::lock_guard lock(st.mu);
  // Keys without a budget count their month's spend too (the console shows it).
  roll_month(st, utc_month(rt_.clock.wall_now()));
  st.spend_usd += cost_usd;
  if (hold_.active()) {
    st.in_hold_usd += cost_usd;
    held_charge_usd_ += cost_usd;
  }
}

}  // namespace switchboard::gateway
