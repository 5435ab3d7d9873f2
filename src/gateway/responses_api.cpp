// POST /v1/responses: OpenAI's Responses API (Codex CLI, the OpenAI Agents SDK). The request is
// translated into a chat request (upstream::responses_to_chat_request) and takes the chat path
// with everything it does (routing, keys, breakers, fallbacks, budgets, quotas, feedback,
// headers); providers with the Responses API of their own get the client's body instead. The
// answer goes back as a Responses object or event stream, and its conversation is remembered
// (memory, then the store, for state.responses_ttl_hours) so that previous_response_id continues
// it on any gateway sharing the store. A response is visible only to the gateway key that made it.
#include <boost/json.hpp>

#include "common/log.h"
#include "gateway/chat_call.h"
#include "gateway/runtime.h"
#include "upstream/translate.h"

namespace switchboard::gateway {

namespace {

// The conversation of a response may be long, but not without a bound: longer ones are answered
// and not remembered (a later previous_response_id naming them is refused).
constexpr size_t kMaxStoredConversation = size_t{16} << 20;
constexpr size_t kMaxResponseIdLength = 128;

// The chat translation of a request without what only the Responses API carries (tools other
// than functions, items other than messages, function calls and their outputs); nullopt when
// even that cannot be translated (then the request is wrong, not just untranslatable).
std::optional<Result<std::string>> routing_translation(const boost::json::object& request,
                                                       const boost::json::array& items) {
  boost::json::object reduced = request;
  if (auto* tools = reduced.if_contains("tools"); tools && tools->is_array()) {
    boost::json::array functions;
    for (const auto& t : tools->get_array()) {
      const auto* o = t.if_object();
      const auto* type = o ? o->if_contains("type") : nullptr;
      if (type && type->is_string() && type->get_string() == "function") functions.push_back(t);
    }
    *tools = std::move(functions);
  }
  boost::json::array kept;
  for (const auto& item : items) {
    const auto* o = item.if_object();
    const auto* type = o ? o->if_contains("type") : nullptr;
    const std::string_view t = type && type->is_string()  ? std::string_view(type->get_string())
                               : o && o->contains("role") ? "message"
                                                          : "";
    if (t == "message" || t == "function_call" || t == "function_call_output") kept.push_back(item);
  }
  auto chat = upstream::responses_to_chat_request(reduced, kept);
  if (!chat.ok()) return std::nullopt;
  return chat;
}

void bad_request(Exchange& ex, std::string_view message, std::string_view code) {
  ex.response = error_response(http::status::bad_request, message, "invalid_request_error", code,
                               ex.request.version());
}

// `[a...]` and `[b...]` as one array, without a parse.
std::string concat_arrays(std::string_view a, std::string_view b) {
  auto inner = [](std::string_view s) {
    while (!s.empty() && s.front() != '[') s.remove_prefix(1);
    while (!s.empty() && s.back() != ']') s.remove_suffix(1);
    return s.size() >= 2 ? s.substr(1, s.size() - 2) : std::string_view();
  };
  const auto x = inner(a), y = inner(b);
  const bool x_empty = x.find_first_not_of(" \t\r\n") == std::string_view::npos;
  const bool y_empty = y.find_first_not_of(" \t\r\n") == std::string_view::npos;
  std::string out;
  out.reserve(x.size() + y.size() + 3);
  out += '[';
  if (!x_empty) out += x;
  if (!x_empty && !y_empty) out += ',';
  if (!y_empty) out += y;
  out += ']';
  return out;
}

// The conversation a previous response left, if this client may continue it.
std::optional<std::string> previous_conversation(Runtime& rt, const Snapshot& snap,
                                                 std::string_view id, std::string_view owner) {
  const WallTime now = rt.clock.wall_now();
  if (auto e = rt.responses.get(id, now)) {
    if (e->owner != owner) return std::nullopt;
    return *e->items;
  }
  if (!rt.store || snap.config->state.responses_ttl_hours <= 0) return std::nullopt;
  // Another gateway's, or from before a restart: one read by primary key.
  auto found = rt.store->find_response(id, now);
  if (!found.ok()) {
    log::warn("previous_response_id lookup failed: {}", found.status().message());
    return std::nullopt;
  }
  if (!found.value() || found.value()->owner != owner) return std::nullopt;
  return std::move(found.value()->items);
}

}  // namespace

void ResponseMemory::put(std::string id, Entry e) {
  const size_t size = e.items ? e.items->size() + id.size() : id.size();
  std::lock_guard lock(mu_);
  if (auto it = entries_.find(id); it != entries_.end()) {
    bytes_ -= it->second.items ? it->second.items->size() + id.size() : id.size();
    it->second = std::move(e);
    bytes_ += size;
  } else {
    order_.push_back(id);
    entries_.emplace(std::move(id), std::move(e));
    bytes_ += size;
  }
  while (bytes_ > kMaxBytes && !order_.empty()) {
    if (auto it = entries_.find(order_.front()); it != entries_.end()) {
      bytes_ -= it->second.items ? it->second.items->size() + it->first.size() : it->first.size();
      entries_.erase(it);
    }
    order_.pop_front();
  }
}

std::optional<ResponseMemory::Entry> ResponseMemory::get(std::string_view id, WallTime now) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(id));
  if (it == entries_.end() || it->second.expires <= now) return std::nullopt;
  return it->second;
}

std::optional<std::string> finish_responses(Runtime& rt, const Snapshot& snap,
                                            ResponsesContext& ctx, Attempted& r,
                                            std::string_view owner) {
  std::string id = r.native_responses && !r.responses_id.empty() ? r.responses_id : ctx.id;
  std::string output = r.responses_output;
  if (!r.wrote_response && !r.native_responses) {
    boost::system::error_code ec;
    auto doc = boost::json::parse(r.body, ec);
    if (ec || !doc.is_object()) return "not a JSON object";
    boost::json::array items;
    auto translated = upstream::chat_to_responses_response(doc.as_object(), ctx.request, ctx.id,
                                                           std::time(nullptr), items);
    if (!translated.ok()) return translated.status().message();
    r.body = std::move(translated.value());
    output = boost::json::serialize(items);
  }
  const int64_t ttl_hours = snap.config->state.responses_ttl_hours;
  if (!ctx.store || ttl_hours <= 0 || output.empty() || id.empty() ||
      id.size() > kMaxResponseIdLength)
    return std::nullopt;
  auto items = std::make_shared<const std::string>(concat_arrays(ctx.conversation, output));
  if (items->size() > kMaxStoredConversation) {
    log::info("response {} not remembered: its conversation has {} bytes", id, items->size());
    return std::nullopt;
  }
  const WallTime now = rt.clock.wall_now();
  const WallTime expires = now + std::chrono::hours(ttl_hours);
  rt.responses.put(id, {std::string(owner), expires, items});
  if (rt.store) {
    store::StoredResponseEvent e;
    e.id = id;
    e.owner = std::string(owner);
    e.created = now;
    e.expires = expires;
    e.items = *items;
    rt.store->enqueue(std::move(e));
  }
  return std::nullopt;
}

asio::awaitable<void> handle_responses(Runtime& rt, std::shared_ptr<const Snapshot> snap,
                                       Exchange& ex, int gateway_key) {
  if (ex.request.method() != http::verb::post) {
    ex.response =
        error_response(http::status::method_not_allowed, "use POST", "invalid_request_error",
                       "method_not_allowed", ex.request.version());
    co_return;
  }
  boost::system::error_code ec;
  boost::json::parse_options opt;
  opt.max_depth = 256;  // tool schemas and inputs nest
  auto parsed = boost::json::parse(ex.request.body(), ec, {}, opt);
  if (ec || !parsed.is_object()) {
    bad_request(ex, "the body must be a JSON object", "invalid_json");
    co_return;
  }
  ResponsesContext ctx;
  ctx.request = std::move(parsed.as_object());
  if (auto* s = ctx.request.if_contains("store"); s && s->is_bool()) ctx.store = s->get_bool();
  auto input = upstream::responses_input_items(ctx.request);
  if (!input.ok()) {
    bad_request(ex, input.status().message(), "invalid_request");
    co_return;
  }
  const std::string owner = gateway_key >= 0
                                ? snap->config->auth.gateway_policies[size_t(gateway_key)].name
                                : std::string();
  std::string conversation = "[]";
  bool continued = false;
  if (auto* prev = ctx.request.if_contains("previous_response_id"); prev && !prev->is_null()) {
    if (!prev->is_string() || prev->get_string().empty() ||
        prev->get_string().size() > kMaxResponseIdLength) {
      bad_request(ex, "previous_response_id must be a response id", "invalid_request");
      co_return;
    }
    const std::string_view id = prev->get_string();
    auto found = previous_conversation(rt, *snap, id, owner);
    if (!found) {
      // Unknown, expired, another client's, or never remembered (store: false): the same answer
      // for each, so that ids cannot be probed.
      ex.response = error_response(
          http::status::bad_request,
          "Previous response with id '" + std::string(id) +
              "' not found (this gateway keeps responses it answered with store: true for "
              "state.responses_ttl_hours)",
          "invalid_request_error", "previous_response_not_found", ex.request.version());
      co_return;
    }
    conversation = std::move(*found);
    continued = true;
  }
  const std::string input_json = boost::json::serialize(input.value());
  ctx.conversation = concat_arrays(conversation, input_json);
  boost::json::value all = boost::json::parse(ctx.conversation, ec, {}, opt);
  if (ec || !all.is_array()) {
    bad_request(ex, "the previous response's conversation could not be read", "invalid_request");
    co_return;
  }
  auto chat = upstream::responses_to_chat_request(ctx.request, all.as_array());
  if (!chat.ok()) {
    // Built-in tools and items only the Responses API knows: a provider that speaks it can take
    // the request as it came; the rest of it, translated, still chooses the route.
    auto routing = routing_translation(ctx.request, all.as_array());
    if (!routing) {
      bad_request(ex, chat.status().message(), "invalid_request");
      co_return;
    }
    ctx.native_only = chat.status().message();
    chat = std::move(*routing);
  }
  // A provider with the Responses API gets the client's request with the conversation spelled
  // out (it may never have seen the previous response).
  boost::json::object native = ctx.request;
  if (continued) {
    native.erase("previous_response_id");
    native["input"] = std::move(all);
  }
  ctx.native_body = boost::json::serialize(native);
  ex.request.body() = std::move(chat.value());
  co_await handle_responses_call(rt, std::move(snap), ex, gateway_key, ctx);
}

}  // namespace switchboard::gateway
