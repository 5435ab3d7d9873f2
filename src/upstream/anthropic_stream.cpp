// Anthropic Messages stream events -> OpenAI chat.completion.chunk events. See translate.h for the
// mapping rules.
#include <boost/json.hpp>

#include "common/json.h"
#include "upstream/anthropic_json.h"
#include "upstream/translate.h"

namespace switchboard::upstream {

namespace json = boost::json;
using anthropic_detail::as_int;
using anthropic_detail::finish_reason_for;
using anthropic_detail::lenient_depth;
using anthropic_detail::member;
using anthropic_detail::string_member;
using anthropic_detail::token_count;

AnthropicStreamTranslator::AnthropicStreamTranslator(std::string_view client_model,
                                                     std::string_view response_id,
                                                     int64_t created_unix, bool include_usage,
                                                     std::string_view json_tool)
    : json_tool_(json_tool), include_usage_(include_usage) {
  // Every chunk starts with the same bytes: build them once.
  prefix_ = "{\"id\":\"";
  switchboard::json::append_escaped(prefix_, response_id);
  prefix_ += "\",\"object\":\"chat.completion.chunk\",\"created\":";
  prefix_ += std::to_string(created_unix);
  prefix_ += ",\"model\":\"";
  switchboard::json::append_escaped(prefix_, client_model);
  prefix_ += "\",\"choices\":[";
}

std::string AnthropicStreamTranslator::chunk(std::string_view delta_json,
                                             std::string_view finish_reason) const {
  std::string c;
  c.reserve(prefix_.size() + delta_json.size() + 64);
  c += prefix_;
  c += "{\"index\":0,\"delta\":";
  c += delta_json;
  c += ",\"logprobs\":null,\"finish_reason\":";
  if (finish_reason.empty()) {
    c += "null";
  } else {
    c += '"';
    c += finish_reason;
    c += '"';
  }
  c += "}]}";
  return c;
}

void AnthropicStreamTranslator::ensure_role(std::vector<std::string>& out) {
  if (role_sent_) return;
  role_sent_ = true;
  out.push_back(chunk(R"({"role":"assistant","content":""})"));
}

AnthropicStreamTranslator::Block* AnthropicStreamTranslator::block_at(const json::object& ev) {
  const json::value* idx = ev.if_contains("index");
  std::optional<int64_t> i = idx ? as_int(*idx) : std::nullopt;
  if (!i || *i < 0 || static_cast<uint64_t>(*i) >= blocks_.size()) return nullptr;
  Block* b = &blocks_[static_cast<size_t>(*i)];
  return b->open ? b : nullptr;
}

Status AnthropicStreamTranslator::feed(std::string_view event_name, std::string_view data,
                                       std::vector<std::string>& out_chunks) {
  if (finished_) return Status::ok_status();
  // Events are small; parse them into a stack buffer so the common case allocates nothing.
  unsigned char buf[4096];
  json::monotonic_resource mr(buf, sizeof(buf));
  json::error_code ec;
  json::value v = json::parse(data, ec, &mr, lenient_depth());
  if (ec) {
    return Status::unavailable("anthropic stream: invalid JSON in '" + std::string(event_name) +
                               "' event: " + ec.message());
  }
  const json::object* ev = v.if_object();
  if (!ev) {
    return Status::unavailable("anthropic stream: '" + std::string(event_name) +
                               "' event is not a JSON object");
  }
  std::string_view type = string_member(*ev, "type");
  if (type.empty()) type = event_name;
  return on_event(type, *ev, out_chunks);
}

Status AnthropicStreamTranslator::on_event(std::string_view type, const json::object& ev,
                                           std::vector<std::string>& out) {
  auto update_usage = [this](const json::object* u) {
    if (!u) return;
    if (const json::value* v = member(*u, "input_tokens")) input_tokens_ = token_count(*v);
    if (const json::value* v = member(*u, "cache_read_input_tokens")) {
      cache_read_ = token_count(*v);
    }
    if (const json::value* v = member(*u, "cache_creation_input_tokens")) {
      cache_creation_ = token_count(*v);
    }
    if (const json::value* v = member(*u, "output_tokens")) {
      usage_.completion_tokens = token_count(*v);
    }
    usage_.prompt_tokens = input_tokens_ + cache_read_ + cache_creation_;
  };
  auto object_member = [](const json::object& o, std::string_view key) -> const json::object* {
    const json::value* v = o.if_contains(key);
    return v ? v->if_object() : nullptr;
  };

  if (type == "message_start") {
    const json::object* msg = object_member(ev, "message");
    if (!msg) return Status::unavailable("anthropic stream: message_start without a message");
    update_usage(object_member(*msg, "usage"));
    ensure_role(out);
    return Status::ok_status();
  }
  if (type == "content_block_start") {
    const json::value* idx = ev.if_contains("index");
    int64_t i = idx ? as_int(*idx).value_or(-1) : -1;
    const json::object* cb = object_member(ev, "content_block");
    // The bound keeps a hostile index from allocating a huge block table.
    if (i < 0 || i >= 4096 || !cb) {
      return Status::unavailable("anthropic stream: malformed content_block_start");
    }
    if (blocks_.size() <= static_cast<size_t>(i)) blocks_.resize(static_cast<size_t>(i) + 1);
    Block& b = blocks_[static_cast<size_t>(i)];
    b = Block{};
    b.open = true;
    std::string_view bt = string_member(*cb, "type");
    if (bt == "text") {
      b.kind = BlockKind::kText;
      std::string_view text = string_member(*cb, "text");
      if (!text.empty()) {
        ensure_role(out);
        std::string d = "{\"content\":\"";
        switchboard::json::append_escaped(d, text);
        d += "\"}";
        out.push_back(chunk(d));
        has_content_ = true;
      }
    } else if (bt == "tool_use" && !json_tool_.empty() &&
               string_member(*cb, "name") == json_tool_) {
      // The structured answer: its input streams as the message's content.
      b.kind = BlockKind::kJsonAnswer;
      if (const json::object* input = object_member(*cb, "input"); input && !input->empty()) {
        ensure_role(out);
        std::string d = "{\"content\":\"";
        switchboard::json::append_escaped(d, json::serialize(*input));
        d += "\"}";
        out.push_back(chunk(d));
        b.got_arguments = true;
        has_content_ = true;
      }
    } else if (bt == "tool_use") {
      b.kind = BlockKind::kToolUse;
      b.tool_index = next_tool_index_++;
      // Normally `input` is {} here and arrives through input_json_delta; if it is already
      // filled in, send it whole.
      std::string args;
      if (const json::object* input = object_member(*cb, "input"); input && !input->empty()) {
        args = json::serialize(*input);
        b.got_arguments = true;
      }
      ensure_role(out);
      std::string d = "{\"tool_calls\":[{\"index\":" + std::to_string(b.tool_index) + ",\"id\":\"";
      switchboard::json::append_escaped(d, string_member(*cb, "id"));
      d += "\",\"type\":\"function\",\"function\":{\"name\":\"";
      switchboard::json::append_escaped(d, string_member(*cb, "name"));
      d += "\",\"arguments\":\"";
      switchboard::json::append_escaped(d, args);
      d += "\"}}]}";
      out.push_back(chunk(d));
      has_content_ = true;
    }
    return Status::ok_status();
  }
  if (type == "content_block_delta") {
    Block* b = block_at(ev);
    const json::object* delta = object_member(ev, "delta");
    if (!b || !delta) {
      return Status::unavailable("anthropic stream: content_block_delta for a block not started");
    }
    std::string_view dt = string_member(*delta, "type");
    if (dt == "text_delta") {
      std::string_view text = string_member(*delta, "text");
      if (text.empty()) return Status::ok_status();
      ensure_role(out);
      std::string d = "{\"content\":\"";
      switchboard::json::append_escaped(d, text);
      d += "\"}";
      out.push_back(chunk(d));
      has_content_ = true;
    } else if (dt == "input_json_delta" && b->kind == BlockKind::kJsonAnswer) {
      std::string_view partial = string_member(*delta, "partial_json");
      if (partial.empty()) return Status::ok_status();
      b->got_arguments = true;
      ensure_role(out);
      std::string d = "{\"content\":\"";
      switchboard::json::append_escaped(d, partial);
      d += "\"}";
      out.push_back(chunk(d));
      has_content_ = true;
    } else if (dt == "input_json_delta") {
      if (b->kind != BlockKind::kToolUse) {
        return Status::unavailable("anthropic stream: input_json_delta outside a tool_use block");
      }
      std::string_view partial = string_member(*delta, "partial_json");
      if (partial.empty()) return Status::ok_status();
      b->got_arguments = true;
      std::string d = "{\"tool_calls\":[{\"index\":" + std::to_string(b->tool_index) +
                      ",\"function\":{\"arguments\":\"";
      switchboard::json::append_escaped(d, partial);
      d += "\"}}]}";
      out.push_back(chunk(d));
    }
    // thinking_delta, signature_delta, citations_delta: nothing to send.
    return Status::ok_status();
  }
  if (type == "content_block_stop") {
    Block* b = block_at(ev);
    if (!b)
      return Status::unavailable("anthropic stream: content_block_stop for a block not started");
    if (b->kind == BlockKind::kJsonAnswer && !b->got_arguments) {
      ensure_role(out);
      out.push_back(chunk("{\"content\":\"{}\"}"));
      has_content_ = true;
    }
    if (b->kind == BlockKind::kToolUse && !b->got_arguments) {
      out.push_back(chunk("{\"tool_calls\":[{\"index\":" + std::to_string(b->tool_index) +
                          ",\"function\":{\"arguments\":\"{}\"}}]}"));
    }
    b->open = false;
    return Status::ok_status();
  }
  if (type == "message_delta") {
    update_usage(object_member(ev, "usage"));
    const json::object* delta = object_member(ev, "delta");
    std::string_view stop = delta ? string_member(*delta, "stop_reason") : std::string_view();
    if (!stop.empty()) {
      // A structured answer ends its turn: no call for the client to make.
      if (stop == "tool_use" && !json_tool_.empty() && next_tool_index_ == 0) stop = "end_turn";
      ensure_role(out);
      out.push_back(chunk("{}", finish_reason_for(stop)));
      has_content_ = true;
    }
    return Status::ok_status();
  }
  if (type == "message_stop") {
    finished_ = true;
    if (include_usage_) {
      std::string c = prefix_;
      c += "],\"usage\":{\"prompt_tokens\":" + std::to_string(usage_.prompt_tokens) +
           ",\"completion_tokens\":" + std::to_string(usage_.completion_tokens) +
           ",\"total_tokens\":" + std::to_string(usage_.total()) + "}}";
      out.push_back(std::move(c));
    }
    return Status::ok_status();
  }
  if (type == "error") {
    const json::object* err = object_member(ev, "error");
    std::string_view etype = err ? string_member(*err, "type") : std::string_view("error");
    std::string_view msg = err ? string_member(*err, "message") : std::string_view();
    std::string text = "anthropic " + std::string(etype) + ": " + std::string(msg);
    switch (classify_anthropic_error_type(etype)) {
      case OutcomeClass::kRateLimited:
        return Status::resource_exhausted(std::move(text));
      case OutcomeClass::kClientError:
        return Status::invalid_argument(std::move(text));
      case OutcomeClass::kAuthFailed:
        return Status::permission_denied(std::move(text));
      default:
        return Status::unavailable(std::move(text));
    }
  }
  return Status::ok_status();  // ping and event types added after this was written
}

}  // namespace switchboard::upstream
