// Authorization: who a request comes from and what it may reach (DESIGN.md invariants 11, 12).
//
// Every path belongs to one area, and each area has one check, applied twice: by the server to
// the request's head before any body byte is read (so a client without a key cannot make the
// gateway buffer a body), and by the handler, which learns the principal from it.
//   client     /v1/... and the aliases without /v1 (/chat/completions, /models): a gateway key
//              when keys are configured, else anyone.
//   workflows  /v1/workflows/...: as client, and the admin key too (it sees every run); on a
//              gateway with neither gateway keys nor an admin key, a loopback peer sees every
//              run (all its callers are the operator's own).
//   admin      /admin/...: the admin key, or a loopback peer when no admin key is set.
//   console    /ui and /ui/...: a loopback peer when no admin key is set, else anyone (the page
//              holds no data; it asks for the admin key and calls /admin with it: console.h).
//   open       /healthz, /readyz, /metrics, and unknown paths (404).
// A client key's `routes` list applies to every spelling of a model (route, model name,
// provider/upstream): the requested name is resolved to the route or catalog model it means.
//
// Internal to the gateway module. Thread-safety: pure functions of their arguments.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/config.h"
#include "gateway/http.h"

namespace switchboard::gateway {

enum class Area { kClient, kWorkflows, kAdmin, kConsole, kOpen };

// The area of a request target (query already stripped). `canonical` is the path handlers
// dispatch on: the /v1 form of an alias, else the target itself.
Area classify_path(std::string_view target, std::string_view& canonical);

struct Principal {
  int gateway_key = -1;  // index into the snapshot's auth.gateway_keys, or -1 (none configured)
  bool admin = false;    // presented the admin key (or a loopback peer on /admin without one)
};

// Checks the credentials `area` needs. Returns the refusal (401) or nothing, filling `who`.
std::optional<Response> authorize(const Config& cfg, const Request& req, Area area,
                                  const asio::ip::tcp::socket& peer, Principal& who);

bool constant_time_equal(std::string_view a, std::string_view b);
// The token of "Authorization: Bearer <token>", or "".
std::string_view bearer_token(const Request& req);

// What `model` names for a key's `routes` list: the route, or the catalog model it resolves to
// (a model name, or provider/upstream of a catalog model). Names outside the catalog resolve to
// themselves, which no routes list can contain (configuration checks the list's names).
std::string_view policy_target(const Config& cfg, std::string_view model);
// Whether gateway key `gateway_key` (-1: none) may request `model`, whatever its spelling.
bool key_may_use(const Config& cfg, int gateway_key, std::string_view model);

// The owner recorded on workflow runs a principal creates: "key:<name>", "admin", or
// "anonymous" (a gateway without keys). "" is the local user of the CLI.
std::string workflow_client(const Config& cfg, const Principal& who);

}  // namespace switchboard::gateway
