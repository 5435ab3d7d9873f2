// acquire_shared (chat_call.h): a key lease under the limits shared through the cluster's Redis.
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "gateway/chat_call.h"

namespace switchboard::gateway {

namespace {
constexpr auto kNothrow = asio::as_tuple(asio::use_awaitable);

asio::awaitable<bool> cancelled() {
  auto state = co_await asio::this_coro::cancellation_state;
  co_return state.cancelled() != asio::cancellation_type::none;
}
}  // namespace

asio::awaitable<SharedAcquire> acquire_shared(Runtime& rt, ProviderRuntime& pr,
                                              const keys::AcquireRequest& request,
                                              MonoTime wait_until) {
  SharedAcquire out;
  cluster::Cluster& cl = *rt.cluster;
  // Every round but the first waits for something (a deadline or a release), so the deadline
  // ends the loop; the bound only guards against a flood of releases that all miss.
  for (int round = 0; round < 1000; ++round) {
    keys::NoKey none;
    std::vector<std::string_view> candidates = pr.pool->shared_candidates(request, &none);
    MonoTime retry_at = MonoTime::max();
    keys::NoKeyReason reason = none.reason;
    bool wake_on_release = false;
    if (candidates.empty()) {
      retry_at = none.earliest;
    } else {
      cluster::ReserveRequest rq;
      rq.provider = pr.config->name;
      rq.limits = &pr.config->limits;
      rq.candidates = std::move(candidates);
      rq.model = request.model;
      rq.estimated_tokens = request.estimated_tokens;
      cluster::ReserveResult res = co_await cl.reserve(rq);
      if (co_await cancelled()) {
        out.kind = SharedAcquire::Kind::kCancelled;
        co_return out;
      }
      if (res.status == cluster::ReserveResult::Status::kUnavailable) {
        out.kind = SharedAcquire::Kind::kUnavailable;
        co_return out;
      }
      if (res.status == cluster::ReserveResult::Status::kGranted) {
        keys::AcquireResult got = pr.pool->acquire_on(res.reservation.key_id(), request);
        if (got.ok()) {
          out.kind = SharedAcquire::Kind::kLease;
          out.result = std::move(got);
          out.reservation = std::move(res.reservation);
          co_return out;
        }
        // The key cooled locally since it was offered (an answer just came in): the
        // reservation goes back (its destructor) and the next round offers the others.
        continue;
      }
      reason = res.reason;
      if (res.retry_in) retry_at = rt.clock.now() + *res.retry_in;
      wake_on_release = reason == keys::NoKeyReason::kConcurrency;
    }
    if (reason == keys::NoKeyReason::kTooLarge || reason == keys::NoKeyReason::kNoUsableKey) {
      out.kind = SharedAcquire::Kind::kNoKey;
      out.result = keys::AcquireResult(keys::NoKey{reason, MonoTime::max()});
      co_return out;
    }
    const MonoTime now = rt.clock.now();
    // A slot held in flight may free at any moment (a release is published); anything else
    // frees at its time, and a time past the wait fails now, telling the client when.
    if (now >= wait_until || (!wake_on_release && retry_at > wait_until)) {
      out.kind = SharedAcquire::Kind::kNoKey;
      out.result = keys::AcquireResult(keys::NoKey{reason, std::max(retry_at, now)});
      co_return out;
    }
    out.waited = true;
    const MonoTime until = std::min(retry_at, wait_until);
    if (wake_on_release) {
      co_await cl.wait_release(std::string(pr.config->name), until);
    } else {
      asio::steady_timer timer(co_await asio::this_coro::executor);
      timer.expires_at(until);
      (void)co_await timer.async_wait(kNothrow);
    }
    if (co_await cancelled()) {
      out.kind = SharedAcquire::Kind::kCancelled;
      co_return out;
    }
  }
  out.kind = SharedAcquire::Kind::kNoKey;
  out.result = keys::AcquireResult(keys::NoKey{keys::NoKeyReason::kTimeout, MonoTime::max()});
  co_return out;
}

}  // namespace switchboard::gateway
