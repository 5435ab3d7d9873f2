// `switchboard keys|breakers|models`: readable tables (or JSON) from a running gateway's admin API.
#pragma once

#include <string>

namespace switchboard::cli {

// `what` is "keys", "breakers" or "models". The admin key, when the gateway needs one, is read
// from SWITCHBOARD_ADMIN_KEY. Returns the process exit code.
int run_admin_view(const std::string& what, const std::string& url, bool json);

}  // namespace switchboard::cli
