// HTTP/1.1 heads and bodies (net/http1.h): the gateway parses client requests and provider
// responses with these, so every byte here may be hostile.
//
// The input is a byte stream as it would arrive on a connection, read twice: as requests (the
// server's side) and as responses (the client's side), each message followed by its body and then
// the next message (pipelining). Beyond "no crash", the harness checks
//   - sizes: a head never claims more bytes than it was given; a body reader never consumes more
//     than it was fed nor produces more payload than it consumed, and honours its limit;
//   - views: every field, method, target and reason points into the head's bytes, and field
//     names are tokens and values carry no line breaks (what request smuggling would need);
//   - incrementality: a head arriving byte by byte (with `resume`, as the server calls it) and a
//     body arriving in random slices give exactly what the whole input gives at once;
//   - ReadBuffer keeps the unread bytes intact through prepare/commit/consume.
#include <cctype>
#include <cstring>
#include <string>

#include "fuzz_util.h"
#include "net/http1.h"

namespace {

namespace h = switchboard::net::http1;
using switchboard::fuzz::Slicer;

constexpr size_t kMaxHead = 2048;  // below libFuzzer's default input size: the limit is reached
constexpr int kMaxMessages = 4;

using ParseFn = size_t (*)(std::string_view, size_t, h::Head&, h::Error&, size_t);

bool inside(std::string_view part, std::string_view whole) {
  if (part.empty()) return true;
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

bool is_token_char(unsigned char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

void check_head(const h::Head& head, std::string_view bytes, bool request) {
  FUZZ_CHECK(head.version == 10 || head.version == 11);
  if (request) {
    FUZZ_CHECK(!head.method.empty() && inside(head.method, bytes));
    for (unsigned char c : head.method) FUZZ_CHECK(c != 0 && is_token_char(c));
    FUZZ_CHECK(!head.target.empty() && inside(head.target, bytes));
    for (unsigned char c : head.target) FUZZ_CHECK(c > 0x20 && c != 0x7f);
    // A request body is framed by a length or chunked, never by the connection's end.
    FUZZ_CHECK(head.framing != h::Framing::kUntilClose);
  } else {
    FUZZ_CHECK(head.status >= 100 && head.status <= 999);
    FUZZ_CHECK(inside(head.reason, bytes));
    if (head.framing == h::Framing::kUntilClose) FUZZ_CHECK(!head.keep_alive);
    if (head.status < 200 || head.status == 204 || head.status == 304)
      FUZZ_CHECK(head.framing == h::Framing::kNone);
  }
  bool has_cl = false, has_te = false;
  for (const h::Field& f : head.fields) {
    FUZZ_CHECK(!f.name.empty() && inside(f.name, bytes) && inside(f.value, bytes));
    for (unsigned char c : f.name) FUZZ_CHECK(is_token_char(c));
    for (unsigned char c : f.value) FUZZ_CHECK(c != '\r' && c != '\n' && c != 0);
    if (!f.value.empty()) {
      FUZZ_CHECK(f.value.front() != ' ' && f.value.front() != '\t');
      FUZZ_CHECK(f.value.back() != ' ' && f.value.back() != '\t');
    }
    has_cl = has_cl || iequals(f.name, "content-length");
    has_te = has_te || iequals(f.name, "transfer-encoding");
  }
  if (head.framing == h::Framing::kLength) FUZZ_CHECK(has_cl);
  if (head.framing == h::Framing::kChunked) FUZZ_CHECK(has_te);
  // Both framings at once is the classic smuggling vector: a request carrying both is refused.
  if (request) FUZZ_CHECK(!(has_cl && has_te));
}

bool same_head(const h::Head& a, const h::Head& b) {
  if (a.method != b.method || a.target != b.target || a.status != b.status ||
      a.reason != b.reason || a.version != b.version || a.framing != b.framing ||
      a.content_length != b.content_length || a.keep_alive != b.keep_alive ||
      a.expect_continue != b.expect_continue || a.fields.size() != b.fields.size())
    return false;
  for (size_t i = 0; i < a.fields.size(); ++i)
    if (a.fields[i].name != b.fields[i].name || a.fields[i].value != b.fields[i].value)
      return false;
  return true;
}

// Parses the head at the front of `data` whole and byte by byte; returns the whole parse.
size_t parse_head(ParseFn parse, std::string_view data, bool request, h::Head& head,
                  h::Error& error) {
  const size_t n = parse(data, kMaxHead, head, error, 0);
  FUZZ_CHECK(n <= data.size());
  FUZZ_CHECK(n == 0 || error == h::Error::kNone);
  if (n > 0) {
    check_head(head, data.substr(0, n), request);
    // The head does not depend on what follows it.
    h::Head alone;
    h::Error alone_error;
    FUZZ_CHECK(parse(data.substr(0, n), kMaxHead, alone, alone_error, 0) == n);
    FUZZ_CHECK(same_head(head, alone));
  }

  h::Head inc;
  h::Error inc_error = h::Error::kNone;
  size_t got = 0;
  for (size_t k = 1; k <= data.size(); ++k) {
    got = parse(data.substr(0, k), kMaxHead, inc, inc_error, k - 1);
    if (got > 0 || inc_error != h::Error::kNone) break;
  }
  FUZZ_CHECK(got == n);
  FUZZ_CHECK(inc_error == error);
  if (n > 0) FUZZ_CHECK(same_head(head, inc));
  return n;
}

struct BodyResult {
  size_t used = 0;
  std::string payload;
  h::Error error = h::Error::kNone;
  bool done = false;
};

BodyResult read_body(const h::Head& head, uint64_t max_body, std::string_view in,
                     const std::vector<std::string_view>& slices) {
  BodyResult r;
  h::BodyReader reader;
  reader.start(head, max_body);
  for (std::string_view s : slices) {
    if (reader.done()) break;
    const size_t before = r.payload.size();
    const size_t used = reader.feed(s, r.payload, r.error);
    FUZZ_CHECK(used <= s.size());
    if (r.error != h::Error::kNone) {
      FUZZ_CHECK(used == 0);
      break;
    }
    FUZZ_CHECK(r.payload.size() - before <= used);
    // Short of its end, a body reader takes everything it is given.
    if (!reader.done()) FUZZ_CHECK(used == s.size());
    r.used += used;
  }
  if (r.error == h::Error::kNone && !reader.done()) r.error = reader.on_eof();
  r.done = reader.done();
  FUZZ_CHECK(r.used <= in.size());
  if (head.framing == h::Framing::kLength) {
    FUZZ_CHECK(reader.remaining() <= head.content_length);
    if (r.error == h::Error::kNone) FUZZ_CHECK(r.payload.size() == head.content_length);
  }
  if (r.error == h::Error::kNone && max_body != 0) FUZZ_CHECK(r.payload.size() <= max_body);
  if (r.error == h::Error::kNone) FUZZ_CHECK(r.done);
  return r;
}

// Reads messages from `stream` as the server or the client would.
void read_messages(std::string_view stream, bool request, uint64_t max_body, Slicer& slicer) {
  const ParseFn parse = request ? static_cast<ParseFn>(h::parse_request_head)
                                : static_cast<ParseFn>(h::parse_response_head);
  for (int m = 0; m < kMaxMessages && !stream.empty(); ++m) {
    h::Head head;
    h::Error error = h::Error::kNone;
    const size_t n = parse_head(parse, stream, request, head, error);
    if (n == 0) return;
    const std::string_view rest = stream.substr(n);
    const BodyResult whole = read_body(head, max_body, rest, {rest});
    const BodyResult sliced = read_body(head, max_body, rest, slicer.slices(rest, 17));
    FUZZ_CHECK(whole.error == sliced.error);
    FUZZ_CHECK(whole.done == sliced.done);
    if (whole.error != h::Error::kNone) return;
    // A limit is checked per slice, so the payload read before a failure may differ; a body
    // read to its end must not.
    FUZZ_CHECK(whole.payload == sliced.payload);
    FUZZ_CHECK(whole.used == sliced.used);
    if (head.framing == h::Framing::kUntilClose || !head.keep_alive) return;
    stream = rest.substr(whole.used);
  }
}

// Copies `data` through a ReadBuffer in slices, consuming as it goes, against a plain string.
void exercise_read_buffer(std::string_view data, Slicer& slicer) {
  h::ReadBuffer buf;
  std::string model;
  const size_t limit = 64 + slicer.size(512);
  while (!data.empty()) {
    const size_t want = slicer.size(64);
    auto room = buf.prepare(want, limit);
    // Room is short of `want` only when the unread bytes already fill the limit.
    if (room.size() < want) FUZZ_CHECK(buf.size() + room.size() >= limit);
    if (room.empty()) {
      buf.consume(buf.size());
      model.clear();
      buf.shrink_if_empty(64);
      continue;
    }
    const size_t n = std::min({room.size(), data.size(), want});
    std::memcpy(room.data(), data.data(), n);
    buf.commit(n);
    model.append(data.data(), n);
    data.remove_prefix(n);
    FUZZ_CHECK(buf.data() == model);
    const size_t eat = static_cast<size_t>(slicer.next() % (buf.size() + 1));
    buf.consume(eat);
    model.erase(0, eat);
    FUZZ_CHECK(buf.data() == model);
    FUZZ_CHECK(buf.size() <= buf.capacity());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = switchboard::fuzz::as_view(data, size);
  Slicer slicer(in);
  // Half of the inputs read requests with a body limit, as the server does.
  const uint64_t max_body = (slicer.next() & 1) ? 512 : 0;
  read_messages(in, /*request=*/true, max_body, slicer);
  read_messages(in, /*request=*/false, 0, slicer);
  exercise_read_buffer(in, slicer);
  return 0;
}
