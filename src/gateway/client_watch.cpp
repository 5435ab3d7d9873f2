// Waiting for a key inside a request's coroutine, and noticing a client that left (chat_call.h).
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <cerrno>

#include "gateway/chat_call.h"

namespace switchboard::gateway {

namespace {
constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);
}  // namespace

// Bridges KeyPool::wait_async (callback on any thread) into this coroutine (this thread).
asio::awaitable<keys::AcquireResult> wait_for_key(keys::KeyPool& pool,
                                                  keys::AcquireRequest request) {
  auto ex = co_await asio::this_coro::executor;
  struct State {
    explicit State(asio::any_io_executor e) : timer(e) {}
    asio::steady_timer timer;
    std::optional<keys::AcquireResult> result;
  };
  auto state = std::make_shared<State>(ex);
  state->timer.expires_at(MonoTime::max());
  auto id = pool.wait_async(std::move(request), [state, ex](keys::AcquireResult r) {
    auto shared = std::make_shared<keys::AcquireResult>(std::move(r));
    asio::post(ex, [state, shared] {
      state->result.emplace(std::move(*shared));
      state->timer.cancel();
    });
  });
  // Withdraws the waiter however this coroutine ends (the wait below throws once the client
  // has left). A no-op when it was served already.
  struct Withdraw {
    keys::KeyPool& pool;
    keys::WaitId id;
    ~Withdraw() { pool.cancel_wait(id); }
  } withdraw{pool, id};
  while (!state->result) {
    // Woken by the posted result (which cancels the timer) or by the client's cancellation:
    // the result, not the wait's error code, tells which.
    (void)co_await state->timer.async_wait(kNothrow);
    if (!state->result) {
      // Cancelled from outside (the client left): withdrawn on return. A lease already handed
      // over ends as `cancelled` when the posted handler drops it.
      co_return keys::AcquireResult(keys::NoKey{keys::NoKeyReason::kCancelled, MonoTime::max()});
    }
  }
  co_return std::move(*state->result);
}

// Notices a client that closes its connection while its request runs, and then cancels the
// request (Exchange::cancel), whose leases and permits end as `cancelled` and whose upstream
// connection is closed. Watching costs an epoll registration, so it starts only once a request
// has run for a while: the quick ones finish first, and a slow LLM call is still cancelled moments
// after its client leaves. Nothing per request but two pointer updates: calls wait in a per-thread
// list in start order, and one timer per thread starts watching those that reach the age.
constexpr auto kWatchClientAfter = std::chrono::milliseconds(20);

class ClientWatch;

// The calls of one server thread that are not watched yet, oldest first. Used only on its thread.
class WatchList {
 public:
  static WatchList& of_this_thread(const asio::any_io_executor& ex) {
    thread_local std::unique_ptr<WatchList> list;
    if (!list || &list->context_ != &asio::query(ex, asio::execution::context)) {
      list = std::make_unique<WatchList>(ex);
    }
    return *list;
  }

  explicit WatchList(const asio::any_io_executor& ex)
      : context_(asio::query(ex, asio::execution::context)), timer_(ex) {}
  WatchList(const WatchList&) = delete;
  WatchList& operator=(const WatchList&) = delete;
  // At thread exit; calls still listed (their frames die later, with the io_context) forget us.
  ~WatchList();

  void add(ClientWatch* w);
  void remove(ClientWatch* w);

 private:
  void arm();
  void sweep();

  asio::execution_context& context_;
  asio::steady_timer timer_;
  bool armed_ = false;
  ClientWatch* head_ = nullptr;
  ClientWatch* tail_ = nullptr;
};

struct ClientWatch::State : std::enable_shared_from_this<State> {
  explicit State(Exchange& x) : ex(x) {}
  Exchange& ex;  // valid while !done
  bool done = false;
  bool gone = false;

  void rearm() {
    ex.stream.socket().async_wait(
        asio::ip::tcp::socket::wait_read,
        [s = shared_from_this()](boost::system::error_code ec) { s->readable(ec); });
  }

  void readable(boost::system::error_code ec) {
    if (ec || done) return;
    char byte;
    ssize_t n = ::recv(ex.stream.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return;  // pipelined bytes of a next request: the client is still there
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      rearm();  // a spurious wake-up: keep watching
      return;
    }
    gone = true;
    if (ex.cancel) ex.cancel->emit(asio::cancellation_type::terminal);
  }
};

ClientWatch::ClientWatch(Exchange& ex)
    : ex_(ex),
      since_(MonoClock::now()),
      list_(WatchList::of_this_thread(ex.stream.socket().get_executor())) {
  list_.add(this);
}

ClientWatch::~ClientWatch() {
  if (listed_) list_.remove(this);
  if (state_) {
    state_->done = true;
    // Only our wait is pending on the socket now (the request is over).
    boost::system::error_code ignored;
    ex_.stream.socket().cancel(ignored);
  }
}

bool ClientWatch::client_left() const {
  return state_ && state_->gone;
}

void ClientWatch::start_watching() {
  state_ = std::make_shared<State>(ex_);
  state_->rearm();
}

WatchList::~WatchList() {
  for (ClientWatch* w = head_; w != nullptr; w = w->next_) w->listed_ = false;
}

void WatchList::add(ClientWatch* w) {
  w->listed_ = true;
  w->prev_ = tail_;
  w->next_ = nullptr;
  (tail_ ? tail_->next_ : head_) = w;
  tail_ = w;
  if (!armed_) arm();
}

void WatchList::remove(ClientWatch* w) {
  (w->prev_ ? w->prev_->next_ : head_) = w->next_;
  (w->next_ ? w->next_->prev_ : tail_) = w->prev_;
  w->listed_ = false;
  w->prev_ = w->next_ = nullptr;
}

void WatchList::arm() {
  if (head_ == nullptr) return;
  armed_ = true;
  timer_.expires_at(head_->since_ + kWatchClientAfter);
  timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;  // destroyed with the list (never re-armed while armed)
    armed_ = false;
    sweep();
  });
}

void WatchList::sweep() {
  const MonoTime now = MonoClock::now();
  while (head_ != nullptr && head_->since_ + kWatchClientAfter <= now) {
    ClientWatch* w = head_;
    remove(w);
    w->start_watching();
  }
  arm();
}

}  // namespace switchboard::gateway
