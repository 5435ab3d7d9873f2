// Server-Sent Events: an incremental, bounded parser and the writer. See translate.h.
#include <charconv>
#include <cstring>

#include "upstream/translate.h"

namespace switchboard::upstream {

namespace {
constexpr std::string_view kBom = "\xEF\xBB\xBF";

// The index of the first '\r' or '\n' at or after `pos`, or npos. Two vectorised memchr passes
// ('\r' only before the next '\n', and rare): string_view::find_first_of would call memchr
// over its two-character set once per byte of the payload.
size_t find_line_break(std::string_view s, size_t pos) {
  if (pos >= s.size()) return std::string_view::npos;
  const char* begin = s.data() + pos;
  const size_t len = s.size() - pos;
  const void* lf = std::memchr(begin, '\n', len);
  const size_t before_lf = lf ? size_t(static_cast<const char*>(lf) - begin) : len;
  const void* cr = std::memchr(begin, '\r', before_lf);
  if (cr) return pos + size_t(static_cast<const char*>(cr) - begin);
  return lf ? pos + before_lf : std::string_view::npos;
}
}  // namespace

Status SseParser::oversize() const {
  return Status::resource_exhausted("SSE event larger than " + std::to_string(max_event_bytes_) +
                                    " bytes");
}

bool SseParser::feed_plain(std::string_view chunk, std::vector<SseEventView>& out) {
  if (failed_ || skip_lf_ || !line_.empty() || seen_field_ || !data_.empty() || chunk.empty())
    return false;
  static constexpr std::string_view kData = "data: ";
  const size_t first = out.size();
  const char* p = chunk.data();
  const size_t n = chunk.size();
  size_t pos = 0;
  while (pos < n) {
    const void* lf = chunk.compare(pos, kData.size(), kData) == 0
                         ? std::memchr(p + pos + kData.size(), '\n', n - pos - kData.size())
                         : nullptr;
    const size_t end = lf ? size_t(static_cast<const char*>(lf) - p) : n;
    // One data line, then the blank line; no CR anywhere (CRLF ends go through feed), and no
    // payload over the budget (feed reports it).
    if (lf == nullptr || end + 1 >= n || p[end + 1] != '\n' ||
        std::memchr(p + pos, '\r', end - pos) != nullptr ||
        end - pos - kData.size() + 1 > max_event_bytes_) {
      out.resize(first);
      return false;
    }
    out.push_back({{},
                   chunk.substr(pos + kData.size(), end - pos - kData.size()),
                   chunk.substr(pos, end + 2 - pos)});
    pos = end + 2;
  }
  bom_checked_ = true;  // the stream has begun: a BOM further on is data
  return true;
}

bool SseParser::has_partial_event() const {
  return !line_.empty() || seen_field_;
}

Status SseParser::feed(std::string_view chunk, std::vector<SseEvent>& out) {
  if (failed_) return oversize();
  if (chunk.empty()) return Status::ok_status();

  // The BOM may itself arrive split, so the first bytes wait in line_ until they either complete
  // it or differ from it.
  std::string first;
  if (!bom_checked_) {
    line_.append(chunk);
    if (line_.size() < kBom.size() && kBom.substr(0, line_.size()) == line_) {
      return Status::ok_status();
    }
    bom_checked_ = true;
    first = std::move(line_);
    line_.clear();
    if (std::string_view(first).substr(0, kBom.size()) == kBom) first.erase(0, kBom.size());
    chunk = first;
  }

  size_t pos = 0;
  const size_t n = chunk.size();
  if (skip_lf_ && pos < n) {
    if (chunk[pos] == '\n') ++pos;
    skip_lf_ = false;
  }
  while (pos < n) {
    size_t end = find_line_break(chunk, pos);
    if (end == std::string_view::npos) {
      // An unfinished line: keep it, but never beyond the event budget.
      if (line_.size() + (n - pos) + data_.size() > max_event_bytes_) {
        failed_ = true;
        return oversize();
      }
      line_.append(chunk.substr(pos));
      return Status::ok_status();
    }
    Status s;
    if (line_.empty()) {
      // The common case: the whole line is in this chunk and is parsed without a copy.
      s = process_line(chunk.substr(pos, end - pos), out);
    } else {
      line_.append(chunk.substr(pos, end - pos));
      std::string line = std::move(line_);
      line_.clear();
      s = process_line(line, out);
    }
    if (!s.ok()) return s;
    if (chunk[end] == '\r') {
      if (end + 1 < n) {
        if (chunk[end + 1] == '\n') ++end;
      } else {
        skip_lf_ = true;  // a '\n' opening the next chunk completes this CRLF
      }
    }
    pos = end + 1;
  }
  return Status::ok_status();
}

Status SseParser::process_line(std::string_view line, std::vector<SseEvent>& out) {
  if (line.empty()) {
    seen_field_ = false;
    if (data_.empty()) {
      // No data: the spec drops the block (its id has already taken effect).
      event_.clear();
      retry_.reset();
      return Status::ok_status();
    }
    data_.pop_back();  // every data line appended a '\n'; the last one is not part of the data
    SseEvent ev;
    ev.event = std::move(event_);
    ev.data = std::move(data_);
    ev.id = last_event_id_;
    ev.retry = retry_;
    out.push_back(std::move(ev));
    event_.clear();
    data_.clear();
    retry_.reset();
    return Status::ok_status();
  }
  if (line.front() == ':') return Status::ok_status();  // comment (keep-alives use these)

  seen_field_ = true;
  std::string_view field = line;
  std::string_view value;
  if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (data_.size() + value.size() + 1 > max_event_bytes_) {
      failed_ = true;
      return oversize();
    }
    data_.append(value);
    data_.push_back('\n');
  } else if (field == "event") {
    event_.assign(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_event_id_.assign(value);
  } else if (field == "retry") {
    int64_t ms = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
    bool digits_only = !value.empty() && value.front() != '-' && value.front() != '+';
    if (digits_only && ec == std::errc() && p == value.data() + value.size()) retry_ = ms;
  }
  return Status::ok_status();
}

void append_sse_event(std::string& out, std::string_view data, std::string_view event) {
  if (!event.empty()) {
    out += "event: ";
    // A line break inside the name would end the field early and corrupt the stream.
    for (char c : event) {
      if (c != '\r' && c != '\n') out += c;
    }
    out += '\n';
  }
  // One data line per line of the payload, whatever its line endings: the reader joins them
  // with '\n' again.
  size_t pos = 0;
  while (true) {
    size_t end = find_line_break(data, pos);
    out += "data: ";
    if (end == std::string_view::npos) {
      out.append(data.substr(pos));
      out += '\n';
      break;
    }
    out.append(data.substr(pos, end - pos));
    out += '\n';
    if (data[end] == '\r' && end + 1 < data.size() && data[end + 1] == '\n') ++end;
    pos = end + 1;
  }
  out += '\n';
}

std::string format_sse_event(std::string_view data, std::string_view event) {
  std::string out;
  out.reserve(data.size() + event.size() + 16);
  append_sse_event(out, data, event);
  return out;
}

}  // namespace switchboard::upstream
