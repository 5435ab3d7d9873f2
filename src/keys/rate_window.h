// Internal to src/keys: the bucketed sliding window and the daily window behind a key's limits.
// Not thread-safe; the owning key's mutex guards every instance.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

namespace switchboard::keys::detail {

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

inline int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

// Counts requests and tokens over the last `span_buckets * width` nanoseconds. An entry added at
// time t lands in bucket floor(t / width) and stays counted until the end of bucket
// floor(t / width) + span_buckets, i.e. for at least the span and less than span + width: never
// under-counted. Amortised O(1) per call; memory (span_buckets + 1) cells.
class SlidingWindow {
 public:
  SlidingWindow() = default;
  SlidingWindow(int64_t width_ns, int64_t span_buckets) : width_(width_ns), n_(span_buckets) {
    // A power-of-two ring (>= span + 1 cells) so that indexing is a mask, not a division.
    size_t size = 1;
    while (size < static_cast<size_t>(span_buckets + 1)) size <<= 1;
    ring_.resize(size);
    mask_ = static_cast<int64_t>(size - 1);
  }

  bool enabled() const { return width_ > 0; }
  int64_t requests() const { return req_; }
  int64_t tokens() const { return tok_; }

  // Expires buckets that left the window at `now`. Time going backwards is ignored.
  void advance(int64_t now) { advance_bucket(bucket_of(now)); }
  int64_t bucket_of(int64_t t) const { return floor_div(t, width_); }
  // advance() with the bucket index already computed (one division per request, not per key).
  void advance_bucket(int64_t cur) {
    if (cur <= head_) return;
    if (head_ == kUnset || cur - head_ > n_) {
      for (auto& c : ring_) c = Cell{};
      req_ = tok_ = 0;
    } else {
      // Bucket b entering the window pushes bucket b - n - 1 out.
      for (int64_t b = head_ + 1; b <= cur; ++b) {
        Cell& c = cell(b - n_ - 1);
        req_ -= c.req;
        tok_ -= c.tok;
        c = Cell{};
      }
    }
    head_ = cur;
  }

  // Adds to the newest bucket (call advance first). Returns a reference for adjust().
  int64_t add(int64_t req, int64_t tok) {
    Cell& c = cell(head_);
    c.req += req;
    c.tok += tok;
    req_ += req;
    tok_ += tok;
    return head_;
  }

  // Changes an earlier add() if its bucket is still in the window (else it no longer counts).
  void adjust(int64_t ref, int64_t dreq, int64_t dtok) {
    if (ref > head_ || ref < head_ - n_ || head_ == kUnset) return;
    Cell& c = cell(ref);
    c.req += dreq;
    c.tok += dtok;
    req_ += dreq;
    tok_ += dtok;
  }

  // Adds at an absolute time, if it is still inside the window (for imports).
  void add_at(int64_t t, int64_t req, int64_t tok) {
    if (head_ == kUnset) return;
    int64_t b = floor_div(t, width_);
    if (b > head_) b = head_;
    if (b < head_ - n_) return;
    Cell& c = cell(b);
    c.req += req;
    c.tok += tok;
    req_ += req;
    tok_ += tok;
  }

  static bool fits(int64_t used, int64_t add, int64_t limit) {
    return limit <= 0 || used + add <= limit;
  }
  bool fits(int64_t req, int64_t tok, int64_t req_limit, int64_t tok_limit) const {
    return fits(req_, req, req_limit) && fits(tok_, tok, tok_limit);
  }

  // Earliest time (ns) at which `req`/`tok` fit under the limits (0 = none); kNever if they
  // exceed a limit on their own. Call advance(now) first.
  int64_t earliest_fit(int64_t now, int64_t req, int64_t tok, int64_t req_limit,
                       int64_t tok_limit) const {
    if ((req_limit > 0 && req > req_limit) || (tok_limit > 0 && tok > tok_limit)) return kNever;
    int64_t over_r = req_limit > 0 ? req_ + req - req_limit : 0;
    int64_t over_t = tok_limit > 0 ? tok_ + tok - tok_limit : 0;
    if (over_r <= 0 && over_t <= 0) return now;
    int64_t freed_r = 0, freed_t = 0;
    for (int64_t b = head_ - n_; b <= head_; ++b) {
      const Cell& c = cell(b);
      freed_r += c.req;
      freed_t += c.tok;
      if (freed_r >= over_r && freed_t >= over_t) return (b + n_ + 1) * width_;
    }
    return kNever;  // unreachable when the totals are consistent
  }

  // Calls f(bucket_start_ns, requests, tokens) for every non-empty bucket, oldest first.
  template <typename F>
  void for_each(F&& f) const {
    if (head_ == kUnset) return;
    for (int64_t b = head_ - n_; b <= head_; ++b) {
      const Cell& c = cell(b);
      if (c.req != 0 || c.tok != 0) f(b * width_, c.req, c.tok);
    }
  }

 private:
  struct Cell {
    int64_t req = 0;
    int64_t tok = 0;
  };
  static constexpr int64_t kUnset = std::numeric_limits<int64_t>::min() / 2;
  Cell& cell(int64_t b) { return ring_[static_cast<size_t>(b & mask_)]; }
  const Cell& cell(int64_t b) const { return ring_[static_cast<size_t>(b & mask_)]; }

  int64_t width_ = 0;
  int64_t n_ = 0;
  int64_t mask_ = 0;
  std::vector<Cell> ring_;
  int64_t head_ = kUnset;
  int64_t req_ = 0;
  int64_t tok_ = 0;
};

// rpd/tpd: a fixed day starting at a UTC hour, or a rolling 24 h of minute buckets, on wall time.
class DailyWindow {
 public:
  static constexpr int64_t kDayNs = 86'400'000'000'000;
  static constexpr int64_t kMinuteNs = 60'000'000'000;

  DailyWindow() = default;
  explicit DailyWindow(int reset_hour_utc) : hour_(reset_hour_utc) {
    if (rolling()) sliding_ = SlidingWindow(kMinuteNs, 24 * 60);
  }
  bool rolling() const { return hour_ < 0; }

  void advance(int64_t wall) { advance_key(key_of(wall)); }
  // The minute bucket (rolling) or period start (fixed) of a wall time: the argument of
  // advance_key, computed once per request.
  int64_t key_of(int64_t wall) const {
    return rolling() ? floor_div(wall, kMinuteNs) : period_start(wall);
  }
  void advance_key(int64_t key) {
    if (rolling()) return sliding_.advance_bucket(key);
    int64_t start = key;
    if (start > start_) {
      start_ = start;
      req_ = tok_ = 0;
    }
  }
  int64_t requests() const { return rolling() ? sliding_.requests() : req_; }
  int64_t tokens() const { return rolling() ? sliding_.tokens() : tok_; }
  bool fits(int64_t req, int64_t tok, int64_t rl, int64_t tl) const {
    return SlidingWindow::fits(requests(), req, rl) && SlidingWindow::fits(tokens(), tok, tl);
  }
  int64_t add(int64_t req, int64_t tok) {
    if (rolling()) return sliding_.add(req, tok);
    req_ += req;
    tok_ += tok;
    return start_;
  }
  void adjust(int64_t ref, int64_t dreq, int64_t dtok) {
    if (rolling()) return sliding_.adjust(ref, dreq, dtok);
    if (ref != start_) return;
    req_ += dreq;
    tok_ += dtok;
  }
  // Wall time (ns) when the request fits; kNever if it exceeds a limit on its own.
  int64_t earliest_fit(int64_t wall, int64_t req, int64_t tok, int64_t rl, int64_t tl) const {
    if (rolling()) return sliding_.earliest_fit(wall, req, tok, rl, tl);
    if ((rl > 0 && req > rl) || (tl > 0 && tok > tl)) return kNever;
    if (fits(req, tok, rl, tl)) return wall;
    return start_ + kDayNs;
  }
  void add_at(int64_t wall_t, int64_t req, int64_t tok) {
    if (rolling()) return sliding_.add_at(wall_t, req, tok);
    if (wall_t >= start_ && wall_t < start_ + kDayNs) {
      req_ += req;
      tok_ += tok;
    }
  }
  template <typename F>
  void for_each(F&& f) const {
    if (rolling()) return sliding_.for_each(f);
    if (req_ != 0 || tok_ != 0) f(start_, req_, tok_);
  }

 private:
  int64_t period_start(int64_t wall) const {
    int64_t off = static_cast<int64_t>(hour_) * 3'600'000'000'000;
    return floor_div(wall - off, kDayNs) * kDayNs + off;
  }
  int hour_ = 0;
  SlidingWindow sliding_;
  int64_t start_ = std::numeric_limits<int64_t>::min();
  int64_t req_ = 0;
  int64_t tok_ = 0;
};

}  // namespace switchboard::keys::detail
