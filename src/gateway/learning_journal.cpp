#include "gateway/learning_journal.h"

#include "common/log.h"
#include "gateway/gateway.h"
#include "gateway/runtime.h"
#include "gateway/shared_learning.h"

namespace switchboard::gateway {

namespace {
// A row's "last written id" that no row has: it is written at the next snapshot.
constexpr uint64_t kNeverWritten = ~uint64_t(0);
}  // namespace

void LearningJournal::attach(routing::Router& router) {
  Runtime* rt = &rt_;
  router.set_journal([rt](const LearnRecord& record) -> uint64_t {
    if (rt->shared_learning) rt->shared_learning->offer(record);
    if (!rt->store) return 0;
    store::LearnEvent e;
    static_cast<LearnRecord&>(e) = record;
    e.time = rt->clock.wall_now();
    return rt->store->enqueue(std::move(e));
  });
}

routing::RouterState router_state_of(const store::LoadedState& loaded) {
  routing::RouterState state;
  state.posteriors.assign(loaded.posteriors.begin(), loaded.posteriors.end());
  state.stats.assign(loaded.model_stats.begin(), loaded.model_stats.end());
  for (const auto& c : loaded.contextual) {
    routing::ContextualBook::Snapshot s;
    s.route = c.route;
    s.model_name = c.model;
    s.means = c.means;
    s.variances = c.variances;
    s.updates = c.updates;
    s.last_id = c.last_outcome_id;
    state.contextual.push_back(std::move(s));
  }
  return state;
}

void LearningJournal::restore(routing::Router& router, const store::LoadedState& loaded) {
  router.restore(router_state_of(loaded), loaded.learning);
}

void LearningJournal::mark_written(const store::LoadedState& loaded) {
  std::lock_guard lock(write_mu_);
  for (const auto& p : loaded.posteriors)
    written_posteriors_[{p.category, p.model}] = p.last_outcome_id;
  for (const auto& s : loaded.model_stats) written_stats_[s.model] = s.last_outcome_id;
  for (const auto& c : loaded.contextual) written_contextual_[{c.route, c.model}] = c.updates;
}

void LearningJournal::start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      cv_.wait_for(lock, interval_, [this] { return stopping_; });
      if (stopping_) break;
      lock.unlock();
      snapshot_now();
      lock.lock();
    }
  });
}

void LearningJournal::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  snapshot_now();
}

void LearningJournal::snapshot_now() {
  if (!rt_.store) return;
  std::lock_guard lock(write_mu_);
  const auto state = rt_.snapshot()->router->export_state();
  const WallTime now = rt_.clock.wall_now();
  // Rows are essential events (never dropped once accepted), so when every row is accepted the
  // compaction that follows them in the queue cannot outrun them. A row refused (a dead disk)
  // is tried again next time and holds the compaction back.
  bool all_accepted = true;
  for (const auto& p : state.posteriors) {
    uint64_t& written = written_posteriors_[{p.category, p.model}];
    if (written == p.last_outcome_id) continue;
    store::BanditPosteriorEvent e;
    static_cast<Posterior&>(e) = p;
    e.updated = now;
    const bool accepted = rt_.store->enqueue(std::move(e)) != 0;
    written = accepted ? p.last_outcome_id : kNeverWritten;
    all_accepted = all_accepted && accepted;
  }
  for (const auto& s : state.stats) {
    uint64_t& written = written_stats_[s.model];
    if (written == s.last_outcome_id) continue;
    store::ModelStatsEvent e;
    static_cast<ModelStats&>(e) = s;
    e.updated = now;
    const bool accepted = rt_.store->enqueue(std::move(e)) != 0;
    written = accepted ? s.last_outcome_id : kNeverWritten;
    all_accepted = all_accepted && accepted;
  }
  for (const auto& c : state.contextual) {
    uint64_t& written = written_contextual_[{c.route, c.model_name}];
    if (written == c.updates) continue;
    store::ContextualModelEvent e;
    e.route = c.route;
    e.model = c.model_name;
    e.means = c.means;
    e.variances = c.variances;
    e.updates = c.updates;
    e.last_outcome_id = c.last_id;
    e.updated = now;
    const bool accepted = rt_.store->enqueue(std::move(e)) != 0;
    written = accepted ? c.updates : kNeverWritten;
    all_accepted = all_accepted && accepted;
  }
  // The rows hold every record up to learned_through: the journal may forget those.
  if (all_accepted && state.learned_through > compacted_through_ &&
      rt_.store->enqueue(store::LearnCompactEvent{state.learned_through}) != 0) {
    compacted_through_ = state.learned_through;
  }
}

}  // namespace switchboard::gateway
