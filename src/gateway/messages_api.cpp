// POST /v1/messages and /v1/messages/count_tokens: Anthropic's Messages API for Claude Code and
// the Anthropic SDKs. The request is translated into an OpenAI chat request
// (upstream::anthropic_to_openai_request) and takes the chat path with everything it does
// (routing, keys, breakers, fallbacks, budgets, quotas, feedback, headers); the answer, its
// errors and its stream go back in Anthropic's shape (Dialect::kAnthropic).
#include <boost/json.hpp>

#include "gateway/auth.h"
#include "gateway/chat_request.h"
#include "gateway/runtime.h"
#include "upstream/translate.h"

namespace switchboard::gateway {

namespace {

void anthropic_error(Exchange& ex, http::status status, std::string_view message) {
  ex.response = json_response(status, upstream::anthropic_error_json(int(status), message),
                              ex.request.version());
}

// The request body as a JSON object, or an Anthropic error answered.
std::optional<boost::json::object> body_object(Exchange& ex) {
  boost::system::error_code ec;
  boost::json::parse_options opt;
  opt.max_depth = 256;  // tool schemas and inputs nest
  auto v = boost::json::parse(ex.request.body(), ec, {}, opt);
  if (ec || !v.is_object()) {
    anthropic_error(ex, http::status::bad_request, "the body must be a JSON object");
    return std::nullopt;
  }
  return std::move(v.as_object());
}

}  // namespace

asio::awaitable<void> handle_messages(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                      Exchange& ex, int gateway_key) {
  if (ex.request.method() != http::verb::post) {
    anthropic_error(ex, http::status::method_not_allowed, "use POST");
    co_return;
  }
  auto body = body_object(ex);
  if (!body) co_return;
  auto openai = upstream::anthropic_to_openai_request(*body);
  if (!openai.ok()) {
    anthropic_error(ex, http::status::bad_request, openai.status().message());
    co_return;
  }
  // From here the request is a chat request; only the shape of what goes back differs (and an
  // Anthropic provider gets the client's own body).
  std::string original = std::move(ex.request.body());
  ex.request.body() = std::move(openai.value());
  co_await handle_chat(rt, std::move(snap), ex, gateway_key, Dialect::kAnthropic,
                       std::move(original));
}

void handle_count_tokens(const Snapshot& snap, Exchange& ex, int gateway_key) {
  if (ex.request.method() != http::verb::post) {
    anthropic_error(ex, http::status::method_not_allowed, "use POST");
    return;
  }
  auto body = body_object(ex);
  if (!body) return;
  // count_tokens takes no max_tokens: any will do for the translation.
  if (!body->contains("max_tokens")) (*body)["max_tokens"] = 1;
  auto openai = upstream::anthropic_to_openai_request(*body);
  if (!openai.ok()) {
    anthropic_error(ex, http::status::bad_request, openai.status().message());
    return;
  }
  ChatRequest req;
  if (auto err = validate_chat_request(*openai, req)) {
    anthropic_error(ex, http::status::bad_request, *err);
    return;
  }
  if (!key_may_use(*snap.config, gateway_key, req.model)) {
    anthropic_error(ex, http::status::forbidden, "this key may not use '" + req.model + "'");
    return;
  }
  routing::RequestInfo info;
  info.model = req.model;
  if (auto plan = snap.router->plan(info);
      !plan.ok() && plan.status().code() == StatusCode::kNotFound) {
    anthropic_error(ex, http::status::not_found, "model '" + req.model + "' does not exist");
    return;
  }
  // The gateway's estimate (the same the router plans with): the provider that will serve the
  // request is not known before routing, and each counts with its own tokenizer.
  ex.response = json_response(http::status::ok,
                              "{\"input_tokens\":" + std::to_string(req.prompt_tokens) + "}",
                              ex.request.version());
}

}  // namespace switchboard::gateway
