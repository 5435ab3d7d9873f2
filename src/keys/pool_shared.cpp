// detail::Core for limits shared with other gateways (keys.h, "shared limits"): the candidates a
// shared limiter may reserve on, and leases granted on its word. The local limits are not checked
// here: the limiter's reservation covers every gateway, and this pool's counts are only its part.
#include "keys/pool_core.h"

namespace switchboard::keys::detail {

std::vector<std::string_view> Core::shared_candidates(const AcquireRequest& request, NoKey* none) {
  if (handed_over_.load(std::memory_order_acquire)) {
    return successor_->shared_candidates(request, none);
  }
  const Now t = read_now();
  Shard& s = my_shard();
  int32_t model = -1;
  {
    auto sl = lock(s.mu);
    model = intern_cached(s, request.model);
  }
  std::vector<std::string_view> out;
  out.reserve(n_);
  int64_t first_free = kNever;
  bool any_alive = false;
  auto usable = [&](KeySlot& k) {
    auto kl = lock(k.mu);
    if (k.disabled || k.dead) return false;
    any_alive = true;
    const int64_t until = std::max(k.cd.until, model_until(k, model));
    if (t.mono < until) {
      first_free = std::min(first_free, until);
      return false;
    }
    return true;
  };
  int sticky = -1;
  if (!request.session_id.empty()) {
    sticky = sticky_key(request.session_id, t);
    if (sticky >= 0 && usable(keys_[static_cast<size_t>(sticky)]))
      out.emplace_back(keys_[static_cast<size_t>(sticky)].id);
  }
  const uint32_t start = shared_rotation_.fetch_add(1, std::memory_order_relaxed);
  for (size_t j = 0; j < n_; ++j) {
    const size_t i = (start + j) % n_;
    if (static_cast<int>(i) == sticky) continue;
    if (usable(keys_[i])) out.emplace_back(keys_[i].id);
  }
  if (out.empty() && none != nullptr) {
    *none = any_alive ? NoKey{NoKeyReason::kCooling, mono(first_free)}
                      : NoKey{NoKeyReason::kNoUsableKey, MonoTime::max()};
  }
  return out;
}

AcquireResult Core::acquire_on(std::string_view key_id, const AcquireRequest& request) {
  if (handed_over_.load(std::memory_order_acquire)) {
    return successor_->acquire_on(key_id, request);
  }
  KeySlot* k = find_key(key_id);
  if (k == nullptr) return NoKey{NoKeyReason::kNoUsableKey, MonoTime::max()};
  const Now t = read_now();
  Shard& s = my_shard();
  int32_t model = -1;
  {
    auto sl = lock(s.mu);
    model = intern_cached(s, request.model);
  }
  std::optional<AcquireResult> out;
  {
    auto kl = lock(k->mu);
    if (handed_over_.load(std::memory_order_relaxed)) {
      kl.unlock();
      return successor_->acquire_on(key_id, request);
    }
    const Now kt = k->at(t);
    const int64_t until = std::max(k->cd.until, model_until(*k, model));
    if (k->disabled || k->dead) {
      out.emplace(NoKey{NoKeyReason::kNoUsableKey, MonoTime::max()});
    } else if (kt.mono < until) {
      out.emplace(NoKey{NoKeyReason::kCooling, mono(until)});
    } else {
      out.emplace(grant(*k, model, std::max<int64_t>(0, request.estimated_tokens), kt));
    }
  }
  if (out->ok() && !request.session_id.empty()) remember_session(request.session_id, k->index, t);
  if (!out->ok()) rejected_.add();
  return std::move(*out);
}

}  // namespace switchboard::keys::detail
