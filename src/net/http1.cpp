#include "net/http1.h"

#include <algorithm>
#include <cstring>

namespace switchboard::net::http1 {

namespace {

// RFC 9110 tchar.
struct TokenTable {
  bool is[256] = {};
  constexpr TokenTable() {
    for (int c = '0'; c <= '9'; ++c) is[c] = true;
    for (int c = 'a'; c <= 'z'; ++c) is[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) is[c] = true;
    for (char c : std::string_view("!#$%&'*+-.^_`|~")) is[static_cast<unsigned char>(c)] = true;
  }
};
constexpr TokenTable kToken;

bool is_token(unsigned char c) {
  return kToken.is[c];
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Calls f(token) for each element of a comma-separated list, trimmed, skipping empty ones.
template <typename F>
void for_each_token(std::string_view list, F&& f) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view t = trim(list.substr(0, comma));
    if (!t.empty()) f(t);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

// The version at the front of `s` ("HTTP/1.1"): 11, 10, or -1 when it is another version (or
// none at all: -2).
int parse_version(std::string_view s) {
  if (s.size() < 8 || s.substr(0, 5) != "HTTP/" || s[6] != '.') return -2;
  if (s[5] < '0' || s[5] > '9' || s[7] < '0' || s[7] > '9') return -2;
  if (s[5] == '1' && s[7] == '1') return 11;
  if (s[5] == '1' && s[7] == '0') return 10;
  return -1;
}

// Where the head ends (just past CRLF CRLF), or 0.
size_t find_head_end(std::string_view data, size_t max_head, size_t resume, Error& error) {
  const size_t limit = std::min(data.size(), max_head);
  const size_t from = resume > 3 ? resume - 3 : 0;
  std::string_view window = data.substr(0, limit);
  size_t at = from < limit ? window.find("\r\n\r\n", from) : std::string_view::npos;
  if (at != std::string_view::npos) return at + 4;
  if (data.size() >= max_head) error = Error::kHeadTooLarge;
  return 0;
}

// Parses the field lines of `block` (each ending CRLF, the blank line excluded) into out.fields
// and derives the framing-independent facts (keep-alive, expect).
Error parse_fields(std::string_view block, Head& out, bool& has_te, bool& has_cl,
                   std::string_view& last_te) {
  bool conn_close = false, conn_keep = false;
  while (!block.empty()) {
    size_t eol = block.find("\r\n");
    if (eol == std::string_view::npos) return Error::kBadField;
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    size_t colon = 0;
    while (colon < line.size() && is_token(static_cast<unsigned char>(line[colon]))) ++colon;
    // A name of token characters directly followed by ':' (this also refuses obsolete line
    // folding, whose continuation lines start with whitespace).
    if (colon == 0 || colon == line.size() || line[colon] != ':') return Error::kBadField;
    std::string_view name = line.substr(0, colon);
    std::string_view value = trim(line.substr(colon + 1));
    for (char ch : value) {
      auto c = static_cast<unsigned char>(ch);
      if ((c < 0x20 && c != '\t') || c == 0x7f) return Error::kBadField;
    }
    out.fields.push_back({name, value});
    if (iequals(name, "content-length")) {
      if (value.empty() || value.size() > 18) return Error::kBadContentLength;
      uint64_t n = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return Error::kBadContentLength;
        n = n * 10 + static_cast<uint64_t>(c - '0');
      }
      if (has_cl && n != out.content_length) return Error::kBadContentLength;
      has_cl = true;
      out.content_length = n;
    } else if (iequals(name, "transfer-encoding")) {
      has_te = true;
      for_each_token(value, [&](std::string_view t) { last_te = t; });
    } else if (iequals(name, "connection")) {
      for_each_token(value, [&](std::string_view t) {
        if (iequals(t, "close")) conn_close = true;
        if (iequals(t, "keep-alive")) conn_keep = true;
      });
    } else if (iequals(name, "expect")) {
      if (iequals(value, "100-continue")) out.expect_continue = true;
    }
  }
  out.keep_alive = !conn_close && (out.version == 11 || conn_keep);
  return Error::kNone;
}

void reset(Head& out) {
  out.method = out.target = out.reason = {};
  out.status = 0;
  out.version = 11;
  out.fields.clear();
  out.framing = Framing::kNone;
  out.content_length = 0;
  out.keep_alive = true;
  out.expect_continue = false;
}

}  // namespace

const char* to_string(Error e) {
  switch (e) {
    case Error::kNone:
      return "no error";
    case Error::kBadStartLine:
      return "bad start line";
    case Error::kBadVersion:
      return "unsupported HTTP version";
    case Error::kBadField:
      return "bad header field";
    case Error::kHeadTooLarge:
      return "header too large";
    case Error::kBadContentLength:
      return "bad Content-Length";
    case Error::kBadTransferEncoding:
      return "unsupported or conflicting Transfer-Encoding";
    case Error::kBadChunk:
      return "bad chunked encoding";
    case Error::kBodyTooLarge:
      return "body too large";
    case Error::kTruncated:
      return "connection closed inside the body";
  }
  return "unknown error";
}

std::string_view Head::field(std::string_view name) const {
  for (const Field& f : fields)
    if (iequals(f.name, name)) return f.value;
  return {};
}

namespace {
// Where a complete head ends (0: incomplete, or too large with `error` set), its start line and
// its field lines (each with its CRLF, the blank line excluded). Resets `out`.
size_t split_head(std::string_view data, size_t max_head, size_t resume, Head& out, Error& error,
                  std::string_view& start_line, std::string_view& field_lines) {
  error = Error::kNone;
  const size_t end = find_head_end(data, max_head, resume, error);
  if (end == 0) return 0;
  reset(out);
  std::string_view head = data.substr(0, end - 2);
  const size_t eol = head.find("\r\n");
  start_line = head.substr(0, eol);
  field_lines = head.substr(eol + 2);
  return end;
}
}  // namespace

size_t parse_request_head(std::string_view data, size_t max_head, Head& out, Error& error,
                          size_t resume) {
  // Empty lines before a request line are ignored (RFC 9112 2.2: some clients send a CRLF after
  // a body); they count as part of this head.
  size_t skip = 0;
  while (data.size() - skip >= 2 && data[skip] == '\r' && data[skip + 1] == '\n') skip += 2;
  std::string_view line, field_lines;
  size_t end = split_head(data.substr(skip), max_head, resume > skip ? resume - skip : 0, out,
                          error, line, field_lines);
  if (end == 0) return 0;
  end += skip;
  // method SP request-target SP HTTP-version
  size_t sp1 = 0;
  while (sp1 < line.size() && is_token(static_cast<unsigned char>(line[sp1]))) ++sp1;
  if (sp1 == 0 || sp1 >= line.size() || line[sp1] != ' ') {
    error = Error::kBadStartLine;
    return 0;
  }
  size_t sp2 = sp1 + 1;
  while (sp2 < line.size() && static_cast<unsigned char>(line[sp2]) > 0x20 &&
         static_cast<unsigned char>(line[sp2]) != 0x7f)
    ++sp2;
  if (sp2 == sp1 + 1 || sp2 >= line.size() || line[sp2] != ' ') {
    error = Error::kBadStartLine;
    return 0;
  }
  const std::string_view version = line.substr(sp2 + 1);
  const int v = parse_version(version);
  if (v < 0 || version.size() != 8) {
    error = v == -1 ? Error::kBadVersion : Error::kBadStartLine;
    return 0;
  }
  out.method = line.substr(0, sp1);
  out.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  out.version = v;
  bool has_te = false, has_cl = false;
  std::string_view last_te;
  if (Error e = parse_fields(field_lines, out, has_te, has_cl, last_te); e != Error::kNone) {
    error = e;
    return 0;
  }
  if (has_te) {
    // Only chunked is understood, and never together with a length (a smuggling vector).
    if (has_cl || out.version == 10 || !iequals(last_te, "chunked") ||
        !iequals(trim(out.field("transfer-encoding")), "chunked")) {
      error = Error::kBadTransferEncoding;
      return 0;
    }
    out.framing = Framing::kChunked;
  } else if (has_cl) {
    out.framing = Framing::kLength;
  }
  return end;
}

size_t parse_response_head(std::string_view data, size_t max_head, Head& out, Error& error,
                           size_t resume) {
  std::string_view line, field_lines;
  const size_t end = split_head(data, max_head, resume, out, error, line, field_lines);
  if (end == 0) return 0;
  // HTTP-version SP status-code [SP reason-phrase]
  const int v = parse_version(line);
  if (v < 0) {
    error = v == -1 ? Error::kBadVersion : Error::kBadStartLine;
    return 0;
  }
  if (line.size() < 12 || line[8] != ' ' || (line.size() > 12 && line[12] != ' ')) {
    error = Error::kBadStartLine;
    return 0;
  }
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') {
      error = Error::kBadStartLine;
      return 0;
    }
    status = status * 10 + (line[i] - '0');
  }
  if (status < 100) {
    error = Error::kBadStartLine;
    return 0;
  }
  out.version = v;
  out.status = status;
  out.reason = line.size() > 13 ? line.substr(13) : std::string_view();
  bool has_te = false, has_cl = false;
  std::string_view last_te;
  if (Error e = parse_fields(field_lines, out, has_te, has_cl, last_te); e != Error::kNone) {
    error = e;
    return 0;
  }
  // Framing that two parties could read differently leaves the connection unusable afterwards.
  if (has_te && (has_cl || out.version == 10)) out.keep_alive = false;
  if (status < 200 || status == 204 || status == 304) {
    out.framing = Framing::kNone;
  } else if (has_te) {
    // A final chunked coding frames the body; any other coding runs to the end of the connection.
    out.framing = iequals(last_te, "chunked") ? Framing::kChunked : Framing::kUntilClose;
  } else if (has_cl) {
    out.framing = Framing::kLength;
  } else {
    out.framing = Framing::kUntilClose;
  }
  if (out.framing == Framing::kUntilClose) out.keep_alive = false;
  return end;
}

// ---- body ------------------------------------------------------------------------------------

namespace {
constexpr size_t kMaxChunkLine = 4096;     // chunk size plus extensions
constexpr size_t kMaxTrailer = 16 * 1024;  // all trailer lines together
constexpr int kMaxSizeDigits = 15;         // < 2^60
}  // namespace

void BodyReader::start(const Head& head, uint64_t max_body) {
  framing_ = head.framing;
  max_body_ = max_body;
  total_ = 0;
  remaining_ = 0;
  size_digits_ = 0;
  line_bytes_ = 0;
  cr_ = false;
  switch (head.framing) {
    case Framing::kNone:
      state_ = State::kDone;
      break;
    case Framing::kLength:
      remaining_ = head.content_length;
      state_ = remaining_ == 0 ? State::kDone : State::kLength;
      break;
    case Framing::kChunked:
      state_ = State::kChunkSize;
      break;
    case Framing::kUntilClose:
      state_ = State::kUntilClose;
      break;
  }
}

Error BodyReader::size_line_done() {
  if (max_body_ != 0 && (remaining_ > max_body_ || total_ + remaining_ > max_body_))
    return Error::kBodyTooLarge;
  total_ += remaining_;
  if (remaining_ == 0) {
    state_ = State::kTrailer;
    line_bytes_ = 0;
    trailer_bytes_ = 0;
  } else {
    state_ = State::kChunkData;
  }
  return Error::kNone;
}

Error BodyReader::on_eof() {
  if (state_ == State::kDone) return Error::kNone;
  if (state_ == State::kUntilClose) {
    state_ = State::kDone;
    return Error::kNone;
  }
  return Error::kTruncated;
}

size_t BodyReader::feed(std::string_view in, std::string& out, Error& error) {
  error = Error::kNone;
  size_t i = 0;
  auto fail = [&](Error e) {
    error = e;
    return size_t{0};
  };
  while (i < in.size() && state_ != State::kDone) {
    switch (state_) {
      case State::kDone:
        break;
      case State::kLength: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - i));
        if (max_body_ != 0 && total_ + n > max_body_) return fail(Error::kBodyTooLarge);
        out.append(in.data() + i, n);
        i += n;
        total_ += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDone;
        break;
      }
      case State::kUntilClose: {
        const size_t n = in.size() - i;
        if (max_body_ != 0 && total_ + n > max_body_) return fail(Error::kBodyTooLarge);
        out.append(in.data() + i, n);
        i += n;
        total_ += n;
        break;
      }
      case State::kChunkSize: {
        const char c = in[i++];
        int digit = -1;
        if (c >= '0' && c <= '9')
          digit = c - '0';
        else if (c >= 'a' && c <= 'f')
          digit = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
          digit = c - 'A' + 10;
        if (digit >= 0 && !cr_) {
          if (++size_digits_ > kMaxSizeDigits) return fail(Error::kBadChunk);
          remaining_ = remaining_ * 16 + static_cast<uint64_t>(digit);
        } else if (size_digits_ == 0) {
          return fail(Error::kBadChunk);
        } else if (!cr_ && (c == ';' || c == ' ' || c == '\t')) {
          state_ = State::kChunkExt;
          line_bytes_ = static_cast<size_t>(size_digits_) + 1;
        } else if (!cr_ && c == '\r') {
          cr_ = true;
        } else if (cr_ && c == '\n') {
          cr_ = false;
          if (Error e = size_line_done(); e != Error::kNone) return fail(e);
        } else {
          return fail(Error::kBadChunk);
        }
        break;
      }
      case State::kChunkExt: {
        // Extensions are ignored; only where the line ends matters.
        const char c = in[i++];
        if (cr_) {
          if (c != '\n') return fail(Error::kBadChunk);
          cr_ = false;
          if (Error e = size_line_done(); e != Error::kNone) return fail(e);
        } else if (c == '\r') {
          cr_ = true;
        } else if (c == '\n' || ++line_bytes_ > kMaxChunkLine) {
          return fail(Error::kBadChunk);
        }
        break;
      }
      case State::kChunkData: {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - i));
        out.append(in.data() + i, n);
        i += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kChunkDataEnd;
        break;
      }
      case State::kChunkDataEnd: {
        const char c = in[i++];
        if (!cr_) {
          if (c != '\r') return fail(Error::kBadChunk);
          cr_ = true;
          break;
        }
        if (c != '\n') return fail(Error::kBadChunk);
        cr_ = false;
        state_ = State::kChunkSize;
        size_digits_ = 0;
        remaining_ = 0;
        break;
      }
      case State::kTrailer: {
        const char c = in[i++];
        if (c == '\r' && !cr_) {
          cr_ = true;
          break;
        }
        if (!cr_ &&
            (c == '\n' || (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f)) {
          return fail(Error::kBadChunk);  // a bare LF or a control character in a trailer
        }
        if (cr_) {
          if (c != '\n') return fail(Error::kBadChunk);
          cr_ = false;
          if (line_bytes_ == 0) {
            state_ = State::kDone;
          } else {
            trailer_bytes_ += line_bytes_;
            line_bytes_ = 0;
          }
          break;
        }
        if (++line_bytes_ + trailer_bytes_ > kMaxTrailer) return fail(Error::kBadChunk);
        break;
      }
    }
  }
  return i;
}

// ---- buffer ----------------------------------------------------------------------------------

void ReadBuffer::consume(size_t n) {
  begin_ += std::min(n, end_ - begin_);
  if (begin_ == end_) begin_ = end_ = 0;
}

std::span<char> ReadBuffer::prepare(size_t min, size_t limit) {
  if (cap_ - end_ >= min) return {buf_.get() + end_, cap_ - end_};
  const size_t unread = end_ - begin_;
  if (begin_ > 0 && cap_ - unread >= min) {
    std::memmove(buf_.get(), buf_.get() + begin_, unread);
  } else {
    size_t want = std::max(cap_ * 2, unread + min);
    want = std::min(want, std::max(limit, cap_));
    auto bigger = std::make_unique<char[]>(want);
    if (unread > 0) std::memcpy(bigger.get(), buf_.get() + begin_, unread);
    buf_ = std::move(bigger);
    cap_ = want;
  }
  begin_ = 0;
  end_ = unread;
  return {buf_.get() + end_, cap_ - end_};
}

void ReadBuffer::shrink_if_empty(size_t keep) {
  if (begin_ != end_ || cap_ <= keep) return;
  buf_ = std::make_unique<char[]>(keep);
  cap_ = keep;
  begin_ = end_ = 0;
}

}  // namespace switchboard::net::http1
