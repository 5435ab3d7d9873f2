// KeyPool: the public face of a provider's key pool (keys.h). The state and logic behind it are
// detail::Core's (pool_core.h); Lease is defined in pool_core.cpp, beside the acquire and complete
// paths that create and end it, so that its moves and destructor inline there.
#include <future>

#include "keys/pool_core.h"

namespace switchboard::keys {

// -------------------------------------------------------------------- KeyPool

KeyPool::KeyPool(const ProviderConfig& config, Clock& clock, KeyPoolOptions options)
    : core_(std::make_shared<detail::Core>(config, clock, options)) {}

KeyPool::~KeyPool() {
  core_->shutdown();
}

std::unique_ptr<KeyPool> KeyPool::reconfigured(const ProviderConfig& config, Clock& clock,
                                               KeyPoolOptions options) {
  auto next = std::make_unique<KeyPool>(config, clock, options);
  // A reload that failed after handing this pool over left it forwarding to a successor that was
  // never published: the keys' live state is at the end of that chain.
  std::shared_ptr<detail::Core> live = core_;
  while (auto successor = live->handed_over_to()) live = std::move(successor);
  next->core_->adopt(*live);
  return next;
}

const std::string& KeyPool::provider() const {
  return core_->provider();
}
size_t KeyPool::size() const {
  return core_->size();
}

AcquireResult KeyPool::acquire(const AcquireRequest& request) {
  return core_->acquire(request.model, request.estimated_tokens, request.session_id);
}

AcquireResult KeyPool::acquire(std::string_view model, int64_t estimated_tokens,
                               MonoTime /*deadline*/, std::string_view session_id) {
  return core_->acquire(model, estimated_tokens, session_id);
}

WaitId KeyPool::wait_async(AcquireRequest request, WaitCallback callback) {
  return core_->wait_async(std::move(request), std::move(callback));
}

bool KeyPool::cancel_wait(WaitId id) {
  return core_->cancel_wait(id);
}
size_t KeyPool::waiting() const {
  return core_->waiting();
}

AcquireResult KeyPool::acquire_blocking(AcquireRequest request) {
  auto promise = std::make_shared<std::promise<AcquireResult>>();
  auto future = promise->get_future();
  wait_async(std::move(request), [promise](AcquireResult r) { promise->set_value(std::move(r)); });
  return future.get();
}

Status KeyPool::disable(std::string_view key_id) {
  return core_->set_enabled(key_id, false);
}
Status KeyPool::enable(std::string_view key_id) {
  return core_->set_enabled(key_id, true);
}

Status KeyPool::restore_cooldown(std::string_view key_id, std::string_view model, WallTime until,
                                 CooldownReason reason) {
  return core_->restore_cooldown(key_id, model, until, reason);
}

std::vector<KeySnapshot> KeyPool::snapshot() const {
  return core_->snapshot({});
}

std::optional<KeySnapshot> KeyPool::inspect(std::string_view key_id) const {
  if (key_id.empty()) return std::nullopt;
  auto v = core_->snapshot(key_id);
  if (v.empty()) return std::nullopt;
  return std::move(v.front());
}

std::vector<std::string_view> KeyPool::shared_candidates(const AcquireRequest& request,
                                                         NoKey* none) {
  return core_->shared_candidates(request, none);
}
AcquireResult KeyPool::acquire_on(std::string_view key_id, const AcquireRequest& request) {
  return core_->acquire_on(key_id, request);
}

std::vector<KeyUsage> KeyPool::export_usage() const {
  return core_->export_usage();
}
Status KeyPool::import_usage(const std::vector<KeyUsage>& usage) {
  return core_->import_usage(usage);
}

}  // namespace switchboard::keys
