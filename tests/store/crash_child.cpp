// Crash-test helper: writes outcomes as fast as it can into the store at argv[1] (a SQLite path,
// or a postgresql:// URL for the postgres backend, as node "crash") and, after each
// successful flush, prints on stdout how many outcomes it has seen acknowledged as durable.
// The parent kill -9s it at random moments.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "store/store.h"

using namespace switchboard;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: store_crash_child DB\n");
    return 2;
  }
  const std::string target = argv[1];
  Result<std::unique_ptr<store::Store>> opened = Status::internal("not opened");
  if (target.rfind("postgresql://", 0) == 0) {
    store::PostgresStoreOptions options;
    options.state.url = target;
    options.state.node = "crash";
    options.state.batch_ms = 2;
    options.state.retention_days = 0;
    opened = store::open_postgres_store(options);
  } else {
    store::SqliteStoreOptions options;
    options.state.path = target;
    options.state.batch_ms = 2;
    options.state.retention_days = 0;
    opened = store::open_sqlite_store(options);
  }
  if (!opened.ok()) {
    std::fprintf(stderr, "open: %s\n", opened.status().to_string().c_str());
    return 1;
  }
  store::Store& s = **opened;
  store::OutcomeEvent o;
  o.request_id = "crash";
  o.model = "m";
  o.status_class = store::kStatusOk;
  uint64_t acked = 0;
  for (;;) {
    constexpr int kBatch = 500;
    for (int i = 0; i < kBatch; ++i) {
      o.time = std::chrono::system_clock::now();
      if (s.enqueue(o) == 0) return 3;
    }
    if (!s.flush().ok()) return 4;
    // Nothing may have been dropped, or "acknowledged" would not mean "committed".
    if (s.counters().dropped != 0) return 5;
    acked += kBatch;
    std::string line = std::to_string(acked) + "\n";
    if (write(STDOUT_FILENO, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      return 6;
    }
  }
}
