// The web console's files (console.h).
#include "gateway/console.h"

namespace switchboard::gateway {

namespace {

std::string_view content_type(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  if (name.ends_with(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

}  // namespace

void serve_console(Exchange& ex, std::string_view target, bool admin_key_required) {
  const auto method = ex.request.method();
  if (method != http::verb::get) {
    ex.response =
        error_response(http::status::method_not_allowed, "use GET", "invalid_request_error",
                       "method_not_allowed", ex.request.version());
    return;
  }
  if (target == "/ui/session") {
    ex.response = json_response(
        http::status::ok,
        std::string("{\"admin_key_required\":") + (admin_key_required ? "true" : "false") + "}",
        ex.request.version());
    ex.response.set(http::field::cache_control, "no-store");
    return;
  }
  std::string_view name = target == "/ui" || target == "/ui/" ? "index.html" : target.substr(4);
  const EmbeddedFile* file = nullptr;
  for (const auto& f : console_files())
    if (f.name == name) file = &f;
  if (!file) {
    ex.response =
        error_response(http::status::not_found, "no such console file: " + std::string(target),
                       "invalid_request_error", "not_found", ex.request.version());
    return;
  }
  Response res{http::status::ok, ex.request.version()};
  res.set(http::field::content_type, content_type(file->name));
  // The admin key lives in the page's session storage: no other origin's script, no frame around
  // it (clickjacking of the disable buttons), no referrer with the gateway's address.
  res.set("Content-Security-Policy",
          "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
          "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
  res.set("X-Frame-Options", "DENY");
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  res.set(http::field::cache_control, "no-cache");
  res.body() = std::string(file->bytes);
  ex.response = std::move(res);
}

}  // namespace switchboard::gateway
