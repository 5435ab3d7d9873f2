// http1: HTTP/1.x message heads and body framing, parsed from bytes the caller owns.
//
// The gateway's server (client requests) and its upstream client (provider responses) read into a
// buffer reused for the whole connection and parse it here: no allocation per header, no copy of
// the head. Nothing here does I/O or knows Asio; the readers decide when to read more.
//
// - parse_request_head / parse_response_head parse a complete head (start line, fields, the blank
//   line) at the front of `data`. They return the head's size in bytes, or 0 when the head is not
//   complete yet (error kNone: read more) or is invalid (error set). Field names and values in
//   `Head` are views into `data`: valid while those bytes stay in place.
// - BodyReader decodes the body that follows (Content-Length, chunked, or until the connection
//   closes) from whatever slices of bytes arrive, appending the payload to a string.
//
// Strict where leniency invites request smuggling: CRLF line ends only, no obsolete line folding,
// no whitespace before a field's colon, Content-Length digits only (repeats must agree), a request
// with both Transfer-Encoding and Content-Length is refused, chunk sizes bounded.
//
// Thread-safety: plain values; use each from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::net::http1 {

enum class Error {
  kNone = 0,
  kBadStartLine,         // request line or status line
  kBadVersion,           // not HTTP/1.0 or HTTP/1.1
  kBadField,             // malformed header field
  kHeadTooLarge,         // no end of head within the limit
  kBadContentLength,     // not digits, too large, or repeated with different values
  kBadTransferEncoding,  // a request whose framing cannot be trusted
  kBadChunk,             // malformed chunked encoding
  kBodyTooLarge,         // beyond the reader's limit
  kTruncated,            // the connection closed inside a body that has a known end
};
const char* to_string(Error e);

struct Field {
  std::string_view name;
  std::string_view value;  // without surrounding whitespace
};

enum class Framing {
  kNone,        // no body
  kLength,      // Content-Length bytes
  kChunked,     // Transfer-Encoding: chunked
  kUntilClose,  // a response without length: the body ends when the connection does
};

struct Head {
  std::string_view method;  // requests
  std::string_view target;  // requests
  int status = 0;           // responses
  std::string_view reason;  // responses
  int version = 11;         // 10 or 11
  std::vector<Field> fields;
  Framing framing = Framing::kNone;
  uint64_t content_length = 0;  // with kLength
  bool keep_alive = true;       // the connection may carry another message after this one
  bool expect_continue = false;

  // The first field of that name (case-insensitive); empty when absent.
  std::string_view field(std::string_view name) const;
};

// `max_head`: the largest head accepted (start line, fields and blank line). `resume`: how many
// bytes of `data` an earlier call already found incomplete (the search for the head's end starts
// there, so a head arriving byte by byte is not rescanned from the start each time). `out` is
// reset first (its field vector keeps its capacity).
size_t parse_request_head(std::string_view data, size_t max_head, Head& out, Error& error,
                          size_t resume = 0);
size_t parse_response_head(std::string_view data, size_t max_head, Head& out, Error& error,
                           size_t resume = 0);

class BodyReader {
 public:
  // Starts reading the body `head` announces. `max_body`: payload beyond it fails kBodyTooLarge
  // (0: no limit).
  void start(const Head& head, uint64_t max_body = 0);
  // Consumes bytes from the front of `in`, appending payload to `out`; returns how many bytes it
  // used (it stops at the end of the body: the rest belongs to the next message). On an error,
  // returns 0 and sets `error`.
  size_t feed(std::string_view in, std::string& out, Error& error);
  // The connection closed: ends an until-close body, or reports kTruncated.
  Error on_eof();
  bool done() const { return state_ == State::kDone; }
  // Payload bytes still expected for a Content-Length body (0 for other framings).
  uint64_t remaining() const { return framing_ == Framing::kLength ? remaining_ : 0; }

 private:
  enum class State {
    kDone,
    kLength,
    kUntilClose,
    kChunkSize,
    kChunkExt,
    kChunkData,
    kChunkDataEnd,
    kTrailer,
  };
  Error size_line_done();

  State state_ = State::kDone;
  Framing framing_ = Framing::kNone;
  uint64_t remaining_ = 0;  // of the body (kLength) or of the current chunk
  uint64_t total_ = 0;
  uint64_t max_body_ = 0;
  int size_digits_ = 0;
  size_t line_bytes_ = 0;     // of the current chunk-size or trailer line (bounded)
  size_t trailer_bytes_ = 0;  // of the trailer lines before the current one (bounded)
  bool cr_ = false;           // a CR was the last byte of the current line so far
};

// A connection's read buffer: bytes read and not yet parsed, kept across messages (pipelined or
// early bytes of the next message stay). Grows only as far as the caller allows.
class ReadBuffer {
 public:
  std::string_view data() const { return {buf_.get() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  void consume(size_t n);
  // Room for at least `min` more bytes (unread bytes move to the front; the buffer grows up to
  // `limit` bytes). Smaller, possibly empty, when the unread bytes already fill `limit`.
  std::span<char> prepare(size_t min, size_t limit);
  void commit(size_t n) { end_ += n; }
  // Frees a grown buffer once it holds nothing (a large head should not pin its memory).
  void shrink_if_empty(size_t keep);
  size_t capacity() const { return cap_; }

 private:
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0, begin_ = 0, end_ = 0;
};

}  // namespace switchboard::net::http1
