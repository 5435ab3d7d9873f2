// Internal to src/cluster: one pipelined Redis connection on one io_context.
//
// Commands are written as they come and their replies matched in order (RESP2, parsed by
// hiredis' reader). The connection reconnects by itself with a growing pause (100 ms to 2 s); on
// every (re)connection it runs its handshake (AUTH, SELECT, the `on_connect` commands) before it
// reports itself up. A command that gets no reply within the command timeout closes the
// connection: a Redis that stopped answering is treated as down, and every pending command then
// fails at once rather than one timeout at a time.
//
// Thread-safety: every member but `up()` must be called on the io_context's thread.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

struct redisReader;

namespace switchboard::cluster {

namespace asio = boost::asio;

struct Reply {
  enum class Type { kNil, kInteger, kString, kStatus, kError, kArray, kFailed };
  Type type = Type::kFailed;
  int64_t integer = 0;
  std::string str;  // string, status and error replies; kFailed: why (not sent or no answer)
  std::vector<Reply> elements;

  bool ok() const { return type != Type::kError && type != Type::kFailed; }
  static Reply failed(std::string why) {
    Reply r;
    r.str = std::move(why);
    return r;
  }
};

using Command = std::vector<std::string>;

class RedisConnection : public std::enable_shared_from_this<RedisConnection> {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    int port = 6379;
    int db = 0;
    std::string password;  // secret: never logged
    std::chrono::milliseconds connect_timeout{1000};
    std::chrono::milliseconds command_timeout{1000};
    // Sent after AUTH/SELECT on every connection; the connection is up once all succeeded.
    // Their replies go to `on_handshake_reply` (e.g. the SHA1s of SCRIPT LOAD).
    std::vector<Command> on_connect;
    std::function<void(size_t index, const Reply&)> on_handshake_reply;
    // Subscriber connections: messages ("message", channel, payload) go here, not to a command.
    std::function<void(const Reply&)> on_message;
    // Every change between up and down.
    std::function<void(bool up)> on_state;
  };

  RedisConnection(asio::io_context& ctx, Options options);
  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Starts connecting (and reconnecting until stop()).
  void start();
  // Closes the connection; pending commands fail; no reconnection. Idempotent.
  void stop();
  bool up() const { return up_.load(std::memory_order_acquire); }

  // `done` runs exactly once on this thread, never inside send(): with the reply, or with
  // kFailed when the connection is down, drops, or the reply does not come within the timeout.
  void send(Command command, std::function<void(Reply)> done);

 private:
  struct Pending {
    std::function<void(Reply)> done;
    std::chrono::steady_clock::time_point deadline;
  };

  asio::awaitable<void> run();
  asio::awaitable<bool> connect_once();
  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  asio::awaitable<void> watchdog();
  void enqueue(const Command& command, std::function<void(Reply)> done);
  void fail_pending(const std::string& why);
  void set_up(bool up);
  void close();

  asio::io_context& ctx_;
  Options opt_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer pause_;     // between reconnections
  asio::steady_timer watch_;     // command timeouts
  asio::steady_timer writer_;    // wakes the writer
  std::string out_;              // formatted commands not yet written
  std::deque<Pending> pending_;  // sent or queued, in order
  redisReader* reader_ = nullptr;
  bool stopped_ = false;
  bool started_ = false;
  bool connected_ = false;   // the socket is open (the handshake may still run)
  uint64_t generation_ = 0;  // connections made; stale loops of an old one stop
  std::atomic<bool> up_{false};
};

// Runs `start` with a completion that must be called exactly once on `ctx`'s thread, and awaits
// its reply; a Reply::failed("cancelled") when the awaiting operation is cancelled from outside.
asio::awaitable<Reply> await_reply(asio::io_context& ctx,
                                   std::function<void(std::function<void(Reply)>)> start);

// RESP encoding of one command (appended to `out`).
void append_command(std::string& out, const Command& command);

}  // namespace switchboard::cluster
