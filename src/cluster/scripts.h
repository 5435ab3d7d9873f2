// Internal to src/cluster: the server-side Lua scripts that make the shared key limits exact.
//
// Every script reads the time from Redis (TIME), so all gateways count on one clock. A key's
// state lives under "<prefix>:{<provider>}:<key id>" (the braces keep a provider's keys in one
// hash slot):
//   :l   sorted set of leases in flight (member: lease token, score: expiry in ms)
//   :m   the rpm/tpm window: 600 buckets of 100 ms ("r<b>", "t<b>"), totals "r", "t", head "h"
//   :d   the rpd/tpd window: a fixed day ("d", "r", "t") or 1440 buckets of a minute (rolling)
//   :cd  cooldown deadlines in ms: "*" for the whole key, "m:<model>" per model (at most 4096
//        fields: past that, ended ones are dropped, else a new model's cooldown is not shared)
//   :off present while an operator disabled the key
// Provider quotas: "<prefix>:{#quota}:<provider>:<period id>" (quota_share).
// A client (gateway) key's monthly budget lives under "<prefix>:{#budget}:<name>" (no provider is
// named "#budget"): the hash holds the UTC month "mo" and its spend "s", ":l" the holds in flight
// (a lease set like a key's) and ":a" what each holds. Amounts are integer nano-USD.
// The windows count like the local ones (keys/rate_window.h): an entry stays counted for at
// least the window and less than one bucket more, so the shared count is never more permissive.
#pragma once

#include <string>

namespace switchboard::cluster::scripts {

// KEYS[1] = "<prefix>:{<provider>}"
// ARGV: token, ttl_ms, max_concurrent, rpm, tpm, rpd, tpd, daily_reset_hour (< 0: rolling 24 h),
//       estimated_tokens, model, then the candidate key ids in the order to try them.
// Reserves on the first candidate that is enabled, not cooling and under every limit:
//   {1, key_id, minute_ref, day_ref}
// or reports why none could and when the first may:
//   {0, reason, retry_in_ms}  reason: 1 concurrency (retry_in: the oldest lease's expiry),
//   2 cooling, 3 minute window, 4 day window, 5 too large for a window (never), 6 none enabled.
const std::string& admit();

// KEYS[1] = "<prefix>:{<provider>}"
// ARGV: key_id, token, keep_request (0/1), token_delta, minute_ref, day_ref, max_concurrent,
//       cooldown_ms (< 0: none), cooldown_model ("" = the whole key), daily_reset_hour, channel,
//       provider, minute_limited (0/1), day_limited (0/1)
// Ends a lease: frees its slot (publishing the provider on `channel` when the key was full),
// replaces the estimate with the real usage in the windows that still hold the reservation,
// and extends the cooldown (never shortens it). Returns 1 when the lease was still held.
const std::string& settle();

// ARGV: ttl_ms, then pairs (lease set key, token). Pushes each still-held lease's expiry to
// now + ttl. Returns how many were still held.
const std::string& renew();

// KEYS[1] = "<prefix>:{#budget}:<name>"
// ARGV: token, ttl_ms, estimate, budget, seed_spend (the spend to start from when Redis has none),
//       unsynced (spend this gateway could not report before; added within the same month)
// Starts the month over when Redis' clock entered a new one. Holds `estimate` under `token`
// when the spend and every live hold leave room for it: {1, spend, held}; else {0, spend, held}
// when the budget is spent, {2, spend, held} when this estimate does not fit.
const std::string& budget_admit();

// KEYS[1] = "<prefix>:{#budget}:<name>"; ARGV: token, cost. Ends the hold and adds the real cost
// to the month's spend. Returns 1 when the hold was still live.
const std::string& budget_settle();

// KEYS[i] = "<prefix>:{#quota}:<provider>:<period id>" (one hash: "r" requests, "t" tokens, "n"
// nano-USD; expires after its period). ARGV: 7 per key: ttl_ms, delta requests, delta tokens,
// delta nano-USD, base requests, base tokens, base nano-USD. Adds each delta to its period's
// totals (a period Redis does not hold, e.g. after a flush, starts from the base: what the
// gateway counted so far) and returns every total: {r1, t1, n1, r2, ...}.
const std::string& quota_share();

}  // namespace switchboard::cluster::scripts
