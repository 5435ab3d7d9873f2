// Gateway: the OpenAI-compatible proxy (DESIGN.md "HTTP API") and the `serve` command.
//
// A Gateway owns everything a running switchboard needs: the HTTP server (one io_context per
// thread), a key pool per provider, the breaker registry, the router, the store, and in-process
// mock upstreams for `kind: mock` providers, and the durable workflow service (workflow_api.h).
// `start()` binds and serves, then resumes interrupted workflow runs in the background; `stop()`
// first interrupts and releases running workflows (they resume at the next start) and joins their
// threads, then stops accepting, lets in-flight requests finish up to the grace period, drains
// the store and joins every thread.
//
// Thread-safety: create, start and stop from one controlling thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/clock.h"
#include "common/config.h"
#include "common/status.h"

namespace switchboard::store {
struct LoadedState;
}
namespace switchboard::routing {
struct RouterState;
}

namespace switchboard::gateway {

struct GatewayOptions {
  std::string listen;       // overrides config.listen when non-empty
  std::string config_path;  // re-read by SIGHUP and POST /admin/reload ("" = reload refused)
  // Serve the workflow API and resume interrupted runs of the state database at start. Off for
  // the in-process gateway of `switchboard workflow`, which must not take over other runs.
  bool workflows = true;
};

class Gateway {
 public:
  // Opens the store and loads its state; fails on a store that cannot be opened.
  static Result<std::unique_ptr<Gateway>> create(std::shared_ptr<const Config> config,
                                                 GatewayOptions options = {});
  ~Gateway();
  Status start();
  void stop(Millis grace);
  // Hot reload: a valid configuration replaces the running one atomically. Keys that stay keep
  // their state and in-flight leases, removed keys finish their in-flight requests, learned
  // routing state carries over; `listen`, `server` and `state` changes need a restart. On any
  // error the running configuration keeps serving.
  Status reload(std::shared_ptr<const Config> config);
  Status reload_from_file();
  uint16_t port() const;
  std::string base_url() const;  // http://127.0.0.1:PORT

 private:
  struct Impl;
  explicit Gateway(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `switchboard serve`: loads the configuration (file, ./switchboard.yaml, or built-in defaults),
// serves until SIGTERM/SIGINT, then shuts down gracefully (a second signal exits at once).
int run_serve(const std::string& config_path, const std::string& listen_override);

// The learned rows a store loaded, as the router takes them (Router::restore with
// `loaded.learning`): what a restart restores, and what `switchboard route --db` plans with.
routing::RouterState router_state_of(const store::LoadedState& loaded);

}  // namespace switchboard::gateway
