// RedisConnection (redis.h): connect, handshake, pipelined writes, in-order replies, timeouts.
#include "cluster/redis.h"

#include <hiredis/hiredis.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <optional>

#include "common/log.h"

namespace switchboard::cluster {
namespace {

constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);
using SteadyClock = std::chrono::steady_clock;

Reply convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::kError;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::kNil;
      break;
  }
  return out;
}

bool is_message(const Reply& r) {
  return r.type == Reply::Type::kArray && r.elements.size() == 3 &&
         r.elements[0].type == Reply::Type::kString && r.elements[0].str == "message";
}

}  // namespace

void append_command(std::string& out, const Command& command) {
  out += '*';
  out += std::to_string(command.size());
  out += "\r\n";
  for (const auto& arg : command) {
    out += '$';
    out += std::to_string(arg.size());
    out += "\r\n";
    out += arg;
    out += "\r\n";
  }
}

RedisConnection::RedisConnection(asio::io_context& ctx, Options options)
    : ctx_(ctx),
      opt_(std::move(options)),
      socket_(ctx),
      pause_(ctx),
      watch_(ctx),
      writer_(ctx),
      reader_(redisReaderCreate()) {}

RedisConnection::~RedisConnection() {
  if (reader_ != nullptr) redisReaderFree(reader_);
}

void RedisConnection::start() {
  if (started_) return;
  started_ = true;
  asio::co_spawn(ctx_, run(), asio::detached);
}

void RedisConnection::stop() {
  stopped_ = true;
  pause_.cancel();
  close();
}

void RedisConnection::set_up(bool up) {
  if (up_.exchange(up, std::memory_order_acq_rel) != up && opt_.on_state) opt_.on_state(up);
}

void RedisConnection::close() {
  if (connected_) {
    boost::system::error_code ec;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    socket_.close(ec);
    connected_ = false;
  }
  ++generation_;  // the old connection's writer and watchdog stop
  writer_.cancel();
  watch_.cancel();
  out_.clear();
  set_up(false);
  fail_pending("redis connection lost");
}

void RedisConnection::fail_pending(const std::string& why) {
  std::deque<Pending> failed;
  failed.swap(pending_);
  for (auto& p : failed) p.done(Reply::failed(why));
}

void RedisConnection::send(Command command, std::function<void(Reply)> done) {
  if (!up()) {
    asio::post(ctx_, [done = std::move(done)] { done(Reply::failed("redis is unreachable")); });
    return;
  }
  enqueue(command, std::move(done));
}

void RedisConnection::enqueue(const Command& command, std::function<void(Reply)> done) {
  append_command(out_, command);
  pending_.push_back(Pending{std::move(done), SteadyClock::now() + opt_.command_timeout});
  writer_.cancel();  // wakes the writer if it sleeps; it checks out_ after every write anyway
}

asio::awaitable<Reply> await_reply(asio::io_context& ctx,
                                   std::function<void(std::function<void(Reply)>)> start) {
  struct State {
    explicit State(asio::io_context& c) : timer(c) {}
    asio::steady_timer timer;
    std::optional<Reply> reply;
  };
  auto state = std::make_shared<State>(ctx);
  state->timer.expires_at(asio::steady_timer::time_point::max());
  start([state](Reply r) {
    state->reply.emplace(std::move(r));
    state->timer.cancel();
  });
  // The reply always comes (a connection fails a command past its timeout); the wait ends
  // early only when the awaiting operation is cancelled from outside.
  (void)co_await state->timer.async_wait(kNothrow);
  if (!state->reply) co_return Reply::failed("cancelled");
  co_return std::move(*state->reply);
}

asio::awaitable<void> RedisConnection::run() {
  auto self = shared_from_this();
  auto pause = std::chrono::milliseconds(100);
  while (!stopped_) {
    if (co_await connect_once()) {
      pause = std::chrono::milliseconds(100);
      co_await read_loop();
    }
    close();
    if (stopped_) break;
    pause_.expires_after(pause);
    (void)co_await pause_.async_wait(kNothrow);
    pause = std::min(pause * 2, std::chrono::milliseconds(2000));
  }
}

asio::awaitable<bool> RedisConnection::connect_once() {
  auto self = shared_from_this();
  asio::ip::tcp::resolver resolver(ctx_);
  auto [rec, endpoints] =
      co_await resolver.async_resolve(opt_.host, std::to_string(opt_.port), kNothrow);
  if (rec || stopped_) co_return false;
  // The connect gets the connect timeout: the timer closes the socket, which ends the attempt.
  socket_ = asio::ip::tcp::socket(ctx_);
  struct Attempt {
    bool done = false;
    bool timed_out = false;
  };
  auto attempt = std::make_shared<Attempt>();
  pause_.expires_after(opt_.connect_timeout);
  pause_.async_wait([this, self, attempt](boost::system::error_code ec) {
    if (!ec && !attempt->done) {
      attempt->timed_out = true;
      boost::system::error_code ignored;
      socket_.close(ignored);
    }
  });
  auto [cec, ep] = co_await asio::async_connect(socket_, endpoints, kNothrow);
  attempt->done = true;
  pause_.cancel();
  if (cec || attempt->timed_out || stopped_) {
    boost::system::error_code ignored;
    socket_.close(ignored);
    co_return false;
  }
  socket_.set_option(asio::ip::tcp::no_delay(true));
  connected_ = true;
  const uint64_t gen = ++generation_;
  redisReaderFree(reader_);
  reader_ = redisReaderCreate();
  asio::co_spawn(ctx_, write_loop(), asio::detached);
  asio::co_spawn(ctx_, watchdog(), asio::detached);

  std::vector<Command> handshake;
  if (!opt_.password.empty()) handshake.push_back({"AUTH", opt_.password});
  if (opt_.db != 0) handshake.push_back({"SELECT", std::to_string(opt_.db)});
  const size_t first_user = handshake.size();
  for (const auto& c : opt_.on_connect) handshake.push_back(c);
  if (handshake.empty()) {
    set_up(true);
    co_return true;
  }
  struct Progress {
    size_t left;
    bool ok = true;
  };
  auto progress = std::make_shared<Progress>(Progress{handshake.size()});
  for (size_t i = 0; i < handshake.size(); ++i) {
    const bool is_auth = i == 0 && !opt_.password.empty();
    enqueue(handshake[i], [this, self, i, gen, first_user, is_auth, progress](Reply r) {
      if (!r.ok()) {
        if (progress->ok && r.type == Reply::Type::kError) {
          // Redis' error texts never contain the password.
          log::warn("cluster: redis {}:{} refused the handshake{}: {}", opt_.host, opt_.port,
                    is_auth ? " (authentication)" : "", r.str);
        }
        progress->ok = false;
      } else if (i >= first_user && opt_.on_handshake_reply) {
        opt_.on_handshake_reply(i - first_user, r);
      }
      if (--progress->left == 0 && gen == generation_) {
        if (progress->ok) {
          set_up(true);
        } else {
          boost::system::error_code ignored;
          socket_.close(ignored);  // the read loop ends; run() pauses and retries
        }
      }
    });
  }
  co_return true;
}

asio::awaitable<void> RedisConnection::read_loop() {
  auto self = shared_from_this();
  char buf[16384];
  for (;;) {
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buf), kNothrow);
    if (ec) co_return;
    if (redisReaderFeed(reader_, buf, n) != REDIS_OK) co_return;
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
        log::warn("cluster: redis {}:{} sent a malformed reply; reconnecting", opt_.host,
                  opt_.port);
        co_return;
      }
      if (raw == nullptr) break;
      Reply r = convert(static_cast<redisReply*>(raw));
      freeReplyObject(raw);
      if (opt_.on_message && is_message(r)) {
        opt_.on_message(r);
        continue;
      }
      if (pending_.empty()) continue;  // nothing asked for it (cannot happen with RESP2)
      Pending p = std::move(pending_.front());
      pending_.pop_front();
      p.done(std::move(r));
    }
  }
}

asio::awaitable<void> RedisConnection::write_loop() {
  auto self = shared_from_this();
  const uint64_t gen = generation_;
  std::string buf;
  while (gen == generation_) {
    if (out_.empty()) {
      writer_.expires_at(asio::steady_timer::time_point::max());
      (void)co_await writer_.async_wait(kNothrow);
      continue;
    }
    buf.clear();
    buf.swap(out_);
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(buf), kNothrow);
    if (ec) {
      if (gen == generation_) {
        boost::system::error_code ignored;
        socket_.close(ignored);  // the read loop ends and run() reconnects
      }
      co_return;
    }
  }
}

asio::awaitable<void> RedisConnection::watchdog() {
  auto self = shared_from_this();
  const uint64_t gen = generation_;
  const auto period = std::max(opt_.command_timeout / 4, std::chrono::milliseconds(5));
  while (gen == generation_) {
    watch_.expires_after(period);
    (void)co_await watch_.async_wait(kNothrow);
    if (gen != generation_) break;
    if (!pending_.empty() && pending_.front().deadline < SteadyClock::now()) {
      log::warn("cluster: redis {}:{} did not answer within {} ms; reconnecting", opt_.host,
                opt_.port, opt_.command_timeout.count());
      boost::system::error_code ignored;
      socket_.close(ignored);
      break;
    }
  }
}

}  // namespace switchboard::cluster
