#include "gateway/chat_request.h"

#include <algorithm>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <cmath>
#include <iterator>
#include <limits>

#include "routing/routing.h"

namespace switchboard::gateway {

namespace json = boost::json;

const json::object& ChatRequest::document(std::string_view body) {
  if (!arena_) {
    arena_ = std::make_unique<Arena>();
    boost::system::error_code ec;
    doc_ = json::parse(body, ec, &arena_->resource);
    if (ec || !doc_.is_object()) doc_ = json::object(&arena_->resource);  // not a validated body
  }
  return doc_.as_object();
}

namespace {

// What a value was, as far as validation cares.
enum class Kind : uint8_t { kAbsent, kNull, kString, kBool, kInt, kUint, kDouble, kObject, kArray };

bool is_number(Kind k) {
  return k == Kind::kInt || k == Kind::kUint || k == Kind::kDouble;
}

constexpr std::string_view kRoles[] = {"system",    "developer", "user",
                                       "assistant", "tool",      "function"};

// The fields read from the body, collected in document order and judged afterwards in a fixed
// order (so the same body always gets the same message).
struct Facts {
  Kind top = Kind::kAbsent;
  // A number beyond a double's range (1e400): Boost.JSON reads it as infinity and would write
  // it back as `Infinity`, which is not JSON, into a translated body.
  bool number_out_of_range = false;
  Kind model = Kind::kAbsent;
  int model_keys = 0;  // top-level "model" members (however their keys were escaped)
  std::string model_value;
  Kind messages = Kind::kAbsent;
  size_t message_count = 0;
  std::optional<std::string> message_error;  // the first message that fails
  int64_t prompt_tokens = 0;
  Kind stream = Kind::kAbsent;
  bool stream_value = false;
  Kind max_tokens[2] = {Kind::kAbsent, Kind::kAbsent};  // max_tokens, max_completion_tokens
  int64_t max_tokens_value[2] = {0, 0};
  Kind temperature = Kind::kAbsent;
  double temperature_value = 0;
  Kind top_p = Kind::kAbsent;
  double top_p_value = 0;
  Kind n = Kind::kAbsent;
  int64_t n_value = 0;
  Kind stream_options = Kind::kAbsent;
  Kind include_usage = Kind::kAbsent;
  bool include_usage_value = false;
};

// Where a container sits; decides what its members mean.
enum class Frame : uint8_t {
  kTop,            // the request object
  kMessages,       // the messages array
  kMessage,        // one message object
  kContent,        // a message's content array
  kPart,           // one content part object
  kStreamOptions,  // the stream_options object
  kOther,          // anything else: only its syntax matters
};

// The keys that mean something (the longest is max_completion_tokens).
enum class Key : uint8_t {
  kNone,
  kModel,
  kMessages,
  kStream,
  kMaxTokens,
  kMaxCompletionTokens,
  kTemperature,
  kTopP,
  kN,
  kStreamOptions,
  kRole,
  kContent,
  kText,
  kImageUrl,
  kIncludeUsage,
  kTools,
};

Key key_of(Frame f, std::string_view k) {
  switch (f) {
    case Frame::kTop:
      if (k == "model") return Key::kModel;
      if (k == "messages") return Key::kMessages;
      if (k == "stream") return Key::kStream;
      if (k == "max_tokens") return Key::kMaxTokens;
      if (k == "max_completion_tokens") return Key::kMaxCompletionTokens;
      if (k == "temperature") return Key::kTemperature;
      if (k == "top_p") return Key::kTopP;
      if (k == "n") return Key::kN;
      if (k == "stream_options") return Key::kStreamOptions;
      if (k == "tools") return Key::kTools;
      return Key::kNone;
    case Frame::kMessage:
      if (k == "role") return Key::kRole;
      if (k == "content") return Key::kContent;
      return Key::kNone;
    case Frame::kPart:
      if (k == "text") return Key::kText;
      if (k == "image_url") return Key::kImageUrl;
      return Key::kNone;
    case Frame::kStreamOptions:
      return k == "include_usage" ? Key::kIncludeUsage : Key::kNone;
    default:
      return Key::kNone;
  }
}

class Handler {
 public:
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);

  Facts facts;
  routing::TextScanner scanner;  // the messages' texts, for the routing features

  bool on_document_begin(boost::system::error_code&) { return true; }
  bool on_document_end(boost::system::error_code&) { return true; }

  bool on_object_begin(boost::system::error_code&) {
    Frame f = Frame::kOther;
    if (depth_ == 0) {
      facts.top = Kind::kObject;
      f = Frame::kTop;
    } else {
      value(Kind::kObject);
      const Frame parent = frames_[depth_ - 1];
      const Key k = keys_[depth_ - 1];
      if (parent == Frame::kMessages) {
        f = Frame::kMessage;
        message_ = {};
        message_.is_object = true;
        scanner.begin_message();
      } else if (parent == Frame::kContent) {
        f = Frame::kPart;
        part_ = {};
      } else if (parent == Frame::kTop && k == Key::kStreamOptions) {
        f = Frame::kStreamOptions;
        facts.include_usage = Kind::kAbsent;
      }
    }
    return push(f);
  }

  bool on_object_end(std::size_t, boost::system::error_code&) {
    const Frame f = pop();
    if (f == Frame::kMessage) {
      end_message();
      scanner.end_message();
    }
    if (f == Frame::kPart) {
      if (part_.text == Kind::kString) {
        content_tokens_ += routing::estimate_tokens(part_.text_length);
      } else if (part_.image) {
        content_tokens_ += 765;  // a high-detail image's typical cost
      }
    }
    return true;
  }

  bool on_array_begin(boost::system::error_code&) {
    Frame f = Frame::kOther;
    if (depth_ == 0) {
      facts.top = Kind::kArray;
    } else {
      value(Kind::kArray);
      const Frame parent = frames_[depth_ - 1];
      const Key k = keys_[depth_ - 1];
      if (parent == Frame::kTop && k == Key::kMessages) {
        f = Frame::kMessages;
        facts.message_count = 0;
        facts.message_error.reset();
        facts.prompt_tokens = 0;
      } else if (parent == Frame::kMessage && k == Key::kContent) {
        f = Frame::kContent;
        content_tokens_ = 0;
      }
    }
    return push(f);
  }

  bool on_array_end(std::size_t, boost::system::error_code&) {
    pop();
    return true;
  }

  bool on_key_part(std::string_view s, std::size_t, boost::system::error_code&) {
    append_key(s);
    return true;
  }

  bool on_key(std::string_view s, std::size_t, boost::system::error_code&) {
    append_key(s);
    const size_t d = depth_ - 1;
    keys_[d] = key_len_ <= sizeof(key_) ? key_of(frames_[d], std::string_view(key_, key_len_))
                                        : Key::kNone;
    key_len_ = 0;
    return true;
  }

  bool on_string_part(std::string_view s, std::size_t, boost::system::error_code&) {
    append_string(s);
    return true;
  }

  bool on_string(std::string_view s, std::size_t n, boost::system::error_code&) {
    append_string(s);
    value(Kind::kString, n);
    string_len_ = 0;
    role_len_ = 0;
    return true;
  }

  bool on_number_part(std::string_view, boost::system::error_code&) { return true; }

  bool on_int64(std::int64_t v, std::string_view, boost::system::error_code&) {
    int_ = v;
    double_ = static_cast<double>(v);
    value(Kind::kInt);
    return true;
  }
  bool on_uint64(std::uint64_t v, std::string_view, boost::system::error_code&) {
    int_ = std::numeric_limits<int64_t>::max();  // beyond int64: only "very large" matters
    double_ = static_cast<double>(v);
    value(Kind::kUint);
    return true;
  }
  bool on_double(double v, std::string_view, boost::system::error_code&) {
    if (!std::isfinite(v)) facts.number_out_of_range = true;
    double_ = v;
    value(Kind::kDouble);
    return true;
  }
  bool on_bool(bool v, boost::system::error_code&) {
    bool_ = v;
    value(Kind::kBool);
    return true;
  }
  bool on_null(boost::system::error_code&) {
    value(Kind::kNull);
    return true;
  }
  bool on_comment_part(std::string_view, boost::system::error_code&) { return true; }
  bool on_comment(std::string_view, boost::system::error_code&) { return true; }

 private:
  struct Message {
    bool is_object = false;
    Kind role = Kind::kAbsent;
    bool role_known = false;
    Kind content = Kind::kAbsent;
    int64_t content_tokens = 0;
  };
  struct Part {
    Kind text = Kind::kAbsent;
    size_t text_length = 0;
    bool image = false;
  };

  bool push(Frame f) {
    // The parser's max_depth (32) bounds nesting well below the frame stack's size.
    if (depth_ >= kMaxFrames) return false;
    frames_[depth_] = f;
    keys_[depth_] = Key::kNone;
    ++depth_;
    return true;
  }
  Frame pop() { return frames_[--depth_]; }

  void append_key(std::string_view s) {
    const size_t room = sizeof(key_) - std::min(key_len_, sizeof(key_));
    std::copy_n(s.data(), std::min(room, s.size()), key_ + std::min(key_len_, sizeof(key_)));
    key_len_ += s.size();
  }
  void append_string(std::string_view s) {
    // The role's text, the model's (kept in facts as it comes), and message texts for the
    // routing features (routing/features.h: bounded work per message).
    if (depth_ > 0 &&
        ((frames_[depth_ - 1] == Frame::kMessage && keys_[depth_ - 1] == Key::kContent) ||
         (frames_[depth_ - 1] == Frame::kPart && keys_[depth_ - 1] == Key::kText))) {
      scanner.text(s);
    } else if (depth_ > 0 && frames_[depth_ - 1] == Frame::kMessage &&
               keys_[depth_ - 1] == Key::kRole) {
      const size_t room = sizeof(role_) - std::min(role_len_, sizeof(role_));
      std::copy_n(s.data(), std::min(room, s.size()), role_ + std::min(role_len_, sizeof(role_)));
      role_len_ += s.size();
    } else if (depth_ == 1 && keys_[0] == Key::kModel) {
      if (string_len_ == 0) facts.model_value.clear();
      facts.model_value.append(s);
      string_len_ += s.size();
    }
  }

  // A value (scalar, or a container as it begins) in the current container.
  void value(Kind kind, size_t string_length = 0) {
    if (depth_ == 0) {
      facts.top = kind;
      return;
    }
    const Frame f = frames_[depth_ - 1];
    const Key k = keys_[depth_ - 1];
    switch (f) {
      case Frame::kTop:
        top_value(k, kind, string_length);
        break;
      case Frame::kMessages:
        if (kind != Kind::kObject) {  // an object is counted when it ends
          message_ = {};
          end_message();
        }
        break;
      case Frame::kMessage:
        if (k == Key::kRole) {
          message_.role = kind;
          message_.role_known = kind == Kind::kString && role_len_ <= sizeof(role_) &&
                                std::find(std::begin(kRoles), std::end(kRoles),
                                          std::string_view(role_, role_len_)) != std::end(kRoles);
          if (message_.role_known) scanner.set_role(std::string_view(role_, role_len_));
        } else if (k == Key::kContent) {
          message_.content = kind;
          message_.content_tokens =
              kind == Kind::kString ? routing::estimate_tokens(string_length) : 0;
        }
        break;
      case Frame::kPart:
        if (k == Key::kText) {
          part_.text = kind;
          part_.text_length = string_length;
        } else if (k == Key::kImageUrl) {
          part_.image = true;
        }
        break;
      case Frame::kStreamOptions:
        if (k == Key::kIncludeUsage) {
          facts.include_usage = kind;
          facts.include_usage_value = bool_;
        }
        break;
      default:
        break;
    }
  }

  void top_value(Key k, Kind kind, size_t string_length) {
    switch (k) {
      case Key::kModel:
        facts.model = kind;
        ++facts.model_keys;
        if (kind != Kind::kString) facts.model_value.clear();
        (void)string_length;
        break;
      case Key::kMessages:
        facts.messages = kind;
        if (kind != Kind::kArray) {
          facts.message_count = 0;
          facts.message_error.reset();
          facts.prompt_tokens = 0;
        }
        break;
      case Key::kStream:
        facts.stream = kind;
        facts.stream_value = bool_;
        break;
      case Key::kMaxTokens:
      case Key::kMaxCompletionTokens: {
        const int i = k == Key::kMaxTokens ? 0 : 1;
        facts.max_tokens[i] = kind;
        facts.max_tokens_value[i] = int_;
        break;
      }
      case Key::kTemperature:
        facts.temperature = kind;
        facts.temperature_value = double_;
        break;
      case Key::kTopP:
        facts.top_p = kind;
        facts.top_p_value = double_;
        break;
      case Key::kN:
        facts.n = kind;
        facts.n_value = int_;
        break;
      case Key::kStreamOptions:
        facts.stream_options = kind;
        facts.include_usage = Kind::kAbsent;
        break;
      case Key::kTools:
        if (kind == Kind::kArray) scanner.set_tools_defined();
        break;
      default:
        break;
    }
  }

  // The current message is complete: judge it (object, then role, then content) and count it.
  void end_message() {
    const size_t i = facts.message_count++;
    if (facts.message_error) return;
    auto at = [i] { return "messages[" + std::to_string(i) + "]"; };
    if (!message_.is_object) {
      facts.message_error = "'" + at() + "' must be an object";
    } else if (message_.role != Kind::kString) {
      facts.message_error = "'" + at() + ".role' must be a string";
    } else if (!message_.role_known) {
      facts.message_error =
          "'" + at() + ".role' must be one of system, developer, user, assistant, tool";
    } else if (message_.content != Kind::kAbsent && message_.content != Kind::kString &&
               message_.content != Kind::kArray && message_.content != Kind::kNull) {
      facts.message_error = "'" + at() + ".content' must be a string, an array of parts, or null";
    }
    if (message_.content != Kind::kAbsent) {
      const int64_t tokens =
          message_.content == Kind::kArray ? content_tokens_ : message_.content_tokens;
      facts.prompt_tokens += tokens + 4;
    }
  }

  static constexpr size_t kMaxFrames = 64;
  Frame frames_[kMaxFrames];
  Key keys_[kMaxFrames];
  size_t depth_ = 0;
  char key_[24];
  size_t key_len_ = 0;
  char role_[16];
  size_t role_len_ = 0;
  size_t string_len_ = 0;
  int64_t int_ = 0;
  double double_ = 0;
  bool bool_ = false;
  Message message_;
  Part part_;
  int64_t content_tokens_ = 0;
};

}  // namespace

std::optional<std::string> check_model_name(std::string_view model) {
  // The name reaches response headers, logs and the upstream's body: control characters
  // (CR/LF would split a header) are refused here, not only escaped where it is written.
  if (model.size() > kMaxModelNameBytes)
    return "'model' must be at most " + std::to_string(kMaxModelNameBytes) + " bytes";
  for (char c : model) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return "'model' must not contain control characters";
  }
  return std::nullopt;
}

std::optional<std::string> validate_chat_request(std::string_view body, ChatRequest& out) {
  json::basic_parser<Handler> parser(json::parse_options{});
  boost::system::error_code ec;
  size_t used = parser.write_some(false, body.data(), body.size(), ec);
  while (!ec && used < body.size() &&
         (body[used] == ' ' || body[used] == '\t' || body[used] == '\r' || body[used] == '\n'))
    ++used;
  if (!ec && used < body.size()) ec = json::error::extra_data;
  if (ec) return "request body is not valid JSON: " + ec.message();
  const Facts& f = parser.handler().facts;
  if (f.top != Kind::kObject) return "request body must be a JSON object";
  if (f.number_out_of_range) return "request body has a number out of range";
  if (f.model == Kind::kAbsent) return "'model' is required";
  // The gateway routes by the model and rewrites it for the upstream: two of them would leave
  // the upstream reading one the gateway did not choose.
  if (f.model_keys > 1) return "'model' must appear only once";
  if (f.model != Kind::kString || f.model_value.empty())
    return "'model' must be a non-empty string";
  if (auto err = check_model_name(f.model_value)) return err;
  out.model = f.model_value;
  if (f.messages == Kind::kAbsent) return "'messages' is required";
  if (f.messages != Kind::kArray || f.message_count == 0)
    return "'messages' must be a non-empty array";
  if (f.message_error) return *f.message_error;
  out.prompt_tokens = f.prompt_tokens;
  out.text = parser.handler().scanner.result();
  if (f.stream != Kind::kAbsent) {
    if (f.stream != Kind::kBool) return "'stream' must be a boolean";
    out.stream = f.stream_value;
  }
  static const char* kMaxNames[] = {"max_tokens", "max_completion_tokens"};
  for (int i = 0; i < 2; ++i) {
    const Kind k = f.max_tokens[i];
    if (k == Kind::kAbsent || k == Kind::kNull) continue;
    if (k != Kind::kInt && k != Kind::kUint)
      return std::string("'") + kMaxNames[i] + "' must be an integer";
    if (f.max_tokens_value[i] < 1) return std::string("'") + kMaxNames[i] + "' must be >= 1";
    // Bounded, so that sums with it cannot overflow (no model comes near).
    out.max_tokens = std::min<int64_t>(f.max_tokens_value[i], int64_t(1) << 40);
  }
  if (f.temperature != Kind::kAbsent && f.temperature != Kind::kNull) {
    if (!is_number(f.temperature)) return "'temperature' must be a number";
    if (f.temperature_value < 0 || f.temperature_value > 2)
      return "'temperature' must be between 0 and 2";
  }
  if (f.top_p != Kind::kAbsent && f.top_p != Kind::kNull) {
    if (!is_number(f.top_p)) return "'top_p' must be a number";
    if (f.top_p_value < 0 || f.top_p_value > 1) return "'top_p' must be between 0 and 1";
  }
  if (f.n != Kind::kAbsent && f.n != Kind::kNull) {
    if (f.n != Kind::kInt || f.n_value < 1) return "'n' must be an integer >= 1";
  }
  out.stream_options_present = f.stream_options != Kind::kAbsent;
  if (f.stream_options != Kind::kAbsent && f.stream_options != Kind::kNull) {
    if (f.stream_options != Kind::kObject) return "'stream_options' must be an object";
    if (f.include_usage == Kind::kBool) out.client_wants_usage = f.include_usage_value;
  }
  return std::nullopt;
}

std::optional<std::string> validate_embeddings_request(std::string_view body, ChatRequest& out) {
  json::parse_options opt;
  opt.max_depth = 4;  // {"input": [[1, 2]]}
  boost::system::error_code ec;
  const json::value doc = json::parse(body, ec, {}, opt);
  if (ec || !doc.is_object()) return "the body must be a JSON object";
  const json::object& o = doc.get_object();
  const json::value* model = o.if_contains("model");
  if (!model || !model->is_string() || model->get_string().empty())
    return "'model' is required and must be a string";
  if (auto err = check_model_name(model->get_string())) return err;
  out.model = std::string(model->get_string());
  out.stream = false;
  const json::value* input = o.if_contains("input");
  if (!input) return "'input' is required";
  auto text_tokens = [](std::string_view s) {
    return std::max<int64_t>(1, routing::estimate_tokens(s.size()));
  };
  if (input->is_string()) {
    if (input->get_string().empty()) return "'input' must not be empty";
    out.prompt_tokens = text_tokens(input->get_string());
    return std::nullopt;
  }
  if (!input->is_array() || input->get_array().empty())
    return "'input' must be a string or a non-empty array";
  const json::array& items = input->get_array();
  if (items.size() > kMaxEmbeddingInputs)
    return "'input' holds at most " + std::to_string(kMaxEmbeddingInputs) + " items";
  const json::kind kind = items[0].kind();
  int64_t tokens = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const json::value& v = items[i];
    const std::string at = "'input[" + std::to_string(i) + "]'";
    if (v.is_string()) {
      if (kind != json::kind::string) return at + ": the items must all be of one kind";
      if (v.get_string().empty()) return at + " must not be empty";
      tokens += text_tokens(v.get_string());
    } else if (v.is_int64() || v.is_uint64()) {
      if (kind != json::kind::int64 && kind != json::kind::uint64)
        return at + ": the items must all be of one kind";
      tokens += 1;
    } else if (v.is_array()) {
      if (kind != json::kind::array) return at + ": the items must all be of one kind";
      if (v.get_array().empty()) return at + " must not be empty";
      for (const json::value& t : v.get_array())
        if (!t.is_int64() && !t.is_uint64()) return at + " must hold token ids (integers)";
      tokens += int64_t(v.get_array().size());
    } else {
      return at + " must be a string, a token id or a list of token ids";
    }
  }
  out.prompt_tokens = tokens;
  return std::nullopt;
}

}  // namespace switchboard::gateway
