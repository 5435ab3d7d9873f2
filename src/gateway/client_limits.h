// ClientLimits: a client (gateway) key's rpm and monthly budget for one request (internal to the
// gateway module). Counted in this gateway alone, or with a cluster across every gateway through
// Redis: exactly while Redis answers, and on this gateway's share while it does not
// (`cluster.expected_gateways`), or refused by `cluster.on_redis_down: refuse`.
//
// The budget is reserved once the request's plan is known (its worst-case cost) and held until
// the request ends, so requests in flight together, in any gateway, cannot spend past what each
// saw unspent (DESIGN.md invariant 11); the real cost replaces the estimate at the end.
//
// Thread-safety: one per request, used on its thread. The per-key state it shares with other
// requests (GatewayKeyState) is locked.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>

#include "gateway/runtime.h"

namespace switchboard::gateway {

// Why a client key's request is refused before any attempt.
struct ClientRefusal {
  http::status status = http::status::too_many_requests;
  std::string message;
  std::string type;
  std::string code;
  std::optional<Nanos> retry_after;
};

class ClientLimits {
 public:
  // gateway_key < 0: no client key (everything is admitted).
  ClientLimits(Runtime& rt, const Snapshot& snap, int gateway_key);
  ClientLimits(const ClientLimits&) = delete;
  ClientLimits& operator=(const ClientLimits&) = delete;
  // Ends the budget held: what was charged replaces the estimate.
  ~ClientLimits();

  // Counts the request in the key's rpm, or says why not and when to retry.
  asio::awaitable<std::optional<ClientRefusal>> admit_rpm();
  // Holds `estimate_usd` of the key's monthly budget for this request.
  asio::awaitable<std::optional<ClientRefusal>> reserve_budget(double estimate_usd);
  // Adds an attempt's real cost to the key's spend (this gateway's count at once; the shared
  // month's when the request ends).
  void charge(double cost_usd);

 private:
  const GatewayKeyPolicy* policy() const;
  GatewayKeyState& state() const;
  std::optional<ClientRefusal> local_rpm(int64_t rpm);
  ClientRefusal rpm_refusal(Nanos retry_after) const;
  // The local budget check; `shared_room` caps what this gateway may add while Redis is away.
  std::optional<ClientRefusal> local_budget(double estimate_usd, std::optional<double> shared_room);
  ClientRefusal budget_refusal(bool spent, double estimate_usd) const;
  std::optional<ClientRefusal> redis_down_refusal() const;

  Runtime& rt_;
  const Snapshot& snap_;
  const int gateway_key_;
  double reserved_usd_ = 0;  // this request's share of the key's reserved budget (local count)
  double charged_usd_ = 0;
  double held_charge_usd_ = 0;  // charged while the shared hold was active (in_hold_usd's share)
  bool unsynced_ = false;       // admitted on the local share: Redis has not heard of it
  cluster::BudgetHold hold_;
};

}  // namespace switchboard::gateway
