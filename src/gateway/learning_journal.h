// LearningJournal: what the router learns, written behind the request path and read back at start.
//
// Every record the router applies (an outcome, a caller's verdict) goes to the store as a
// LearnEvent, from inside the router's lock, so the store's sequence numbers follow the order of
// application. A thread writes the posterior and statistics rows that changed every `interval`
// and then forgets the journal's records they hold (LearnCompactEvent), so a restart reads a
// snapshot plus a few seconds of journal however long the history; the rows' own last ids make a
// crash between the two harmless. `restore` is that restart (Router::restore over the store's
// LoadedState).
//
// Thread-safety: attach before the router takes traffic; start/stop from one controlling thread.
// The journal callback itself runs on request threads.
#pragma once

#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "common/clock.h"
#include "routing/routing.h"
#include "store/store.h"

namespace switchboard::gateway {

struct Runtime;

class LearningJournal {
 public:
  LearningJournal(Runtime& rt, Millis interval) : rt_(rt), interval_(interval) {}
  ~LearningJournal() { stop(); }

  // Makes `router` journal into the runtime's store (a no-op journal without one).
  void attach(routing::Router& router);
  // The state `loaded` describes, into `router`.
  static void restore(routing::Router& router, const store::LoadedState& loaded);
  // The rows `loaded` holds are in the store already: not written again until they change.
  void mark_written(const store::LoadedState& loaded);

  void start();
  // Stops the thread after one last snapshot (a clean stop leaves an empty journal).
  void stop();
  // Writes the rows that changed since the last snapshot, then compacts the journal.
  void snapshot_now();

 private:
  Runtime& rt_;
  const Millis interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
  std::mutex write_mu_;  // one snapshot at a time
  // The last id written per row: a row whose id has not moved is not written again.
  // (Rows restored at start count as written: they are what the store holds.)
  std::map<std::pair<std::string, std::string>, uint64_t> written_posteriors_;
  std::map<std::string, uint64_t> written_stats_;
  // (route, model) → the update count last written.
  std::map<std::pair<std::string, std::string>, uint64_t> written_contextual_;
  uint64_t compacted_through_ = 0;
};

}  // namespace switchboard::gateway
