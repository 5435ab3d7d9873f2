// JSON helpers for hand-written output on hot or simple paths (logs, plans, tables).
// Parsing and full documents use Boost.JSON in the modules that need it.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace switchboard::json {

// Appends `s` as the body of a JSON string (no quotes), escaping quotes, backslashes and
// control characters. Bytes >= 0x80 pass through unchanged (callers validate UTF-8 upstream).
void append_escaped(std::string& out, std::string_view s);

// `"s"` with escaping.
std::string quote(std::string_view s);

// Bytes as lowercase hex, and back (nullopt for an odd length or a non-hex character): binary
// state in the stores' text columns.
std::string hex_encode(std::string_view bytes);
std::optional<std::string> hex_decode(std::string_view hex);

// A finite double in shortest round-trip form; NaN and infinities become null.
std::string number(double v);

// `v` with exactly `decimals` digits after the point (0.000012500 for 1.25e-5, 9); NaN and
// infinities become 0. For amounts of money in headers and logs, without printf's locale.
void append_fixed(std::string& out, double v, int decimals);

}  // namespace switchboard::json
