// POST /v1/feedback: the caller's verdict on a request it made (DESIGN.md HTTP API).
#include <prometheus/counter.h>

#include <boost/json.hpp>
#include <optional>

#include "common/json.h"
#include "common/metrics.h"
#include "gateway/runtime.h"

namespace switchboard::gateway {

void handle_feedback(Runtime& rt, const Snapshot& snap, Exchange& ex, int gateway_key) {
  auto bad = [&](std::string_view message) {
    ex.response = error_response(http::status::bad_request, message, "invalid_request_error",
                                 "invalid_feedback");
  };
  boost::system::error_code ec;
  auto doc = boost::json::parse(ex.request.body(), ec);
  if (ec || !doc.is_object()) return bad("body must be a JSON object");
  const auto& o = doc.as_object();
  const auto* id = o.if_contains("request_id");
  if (!id || !id->is_string() || id->as_string().empty())
    return bad("'request_id' must be a non-empty string");
  const auto* success = o.if_contains("success");
  if (!success || !success->is_bool()) return bad("'success' must be a boolean");
  double reward = success->as_bool() ? 1.0 : 0.0;
  std::optional<double> score;
  if (const auto* sc = o.if_contains("score"); sc && !sc->is_null()) {
    if (!sc->is_number()) return bad("'score' must be a number between 0 and 1");
    double v = sc->to_number<double>();
    if (!(v >= 0 && v <= 1)) return bad("'score' must be a number between 0 and 1");
    score = v;
    reward = v;
  }
  const std::string request_id(id->as_string());
  routing::FeedbackLedger::Served served;
  // Only the client that made the request may judge it (its key's tag must match), and only
  // with the id it was given (the nonce must match): others get the same 404 as a wrong id.
  const auto parsed = rt.parse_request_id(request_id);
  const uint64_t owner = owner_tag(snap, gateway_key);
  // Not one of this instance's ids: perhaps served before a restart (restored from the store).
  auto claim = parsed.seq != 0 ? rt.ledger->claim(parsed.seq, served, {parsed.nonce, owner})
                               : rt.ledger->claim_restored(request_id, served, owner);
  if (claim == routing::FeedbackLedger::Claim::kUnknown) {
    ex.response = error_response(http::status::not_found,
                                 "unknown or expired request id '" + request_id + "'",
                                 "invalid_request_error", "unknown_request_id");
    return;
  }
  if (claim == routing::FeedbackLedger::Claim::kDuplicate) {
    ex.response =
        error_response(http::status::conflict, "request '" + request_id + "' already has a verdict",
                       "invalid_request_error", "duplicate_feedback");
    return;
  }
  if (served.learned)
    snap.router->record_feedback(served.category, served.model, served.transport_reward, reward,
                                 served.route, &served.features);
  if (rt.store) {
    store::FeedbackEvent e;
    e.time = rt.clock.wall_now();
    e.request_id = request_id;
    e.success = success->as_bool();
    e.score = score.value_or(reward);
    rt.store->enqueue(std::move(e));
  }
  static auto& feedback_total =
      metrics::counter_family("switchboard_routing_feedback_total", "Caller verdicts received")
          .Add({});
  feedback_total.Increment();
  ex.response = json_response(
      http::status::ok,
      "{\"request_id\":" + json::quote(request_id) + ",\"model\":" + json::quote(served.model) +
          ",\"category\":" + json::quote(served.category) + ",\"accepted\":true}");
}

}  // namespace switchboard::gateway
