// The web console, GET /ui: a page and its script and style sheet, embedded in the binary at build
// time (console/embed.cmake), so it works offline and loads nothing from elsewhere. The page reads
// GET /admin/overview once a second and the workflow runs (/admin/runs) every other second, with
// the admin key kept in the tab's session storage when the gateway has one.
//
// Access (auth.h, area "console"): without an admin key, loopback peers only, as /admin; with
// one, anyone may load the page, which holds no data: everything it shows comes from the admin
// API under that key. Responses forbid framing, inline script and any origin but the gateway's.
//
// Internal to the gateway module. Thread-safety: pure functions over constant data.
#pragma once

#include <span>
#include <string_view>

#include "gateway/http.h"

namespace switchboard::gateway {

struct EmbeddedFile {
  std::string_view name;  // relative to src/gateway/console, e.g. "console.js"
  std::string_view bytes;
};

// Every embedded file (generated).
std::span<const EmbeddedFile> console_files();

// Answers GET of /ui, /ui/ and /ui/<file>: the file with its type and security headers,
// 404 for a name that is not embedded, 405 for other methods. GET /ui/session tells the page
// whether to ask for the admin key ({"admin_key_required": bool}) before its first call, so that
// a locked gateway is not first met with a refused request.
void serve_console(Exchange& ex, std::string_view target, bool admin_key_required);

}  // namespace switchboard::gateway
