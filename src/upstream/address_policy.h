// Which network addresses a request chosen by a client (a workflow `http` step submitted over
// HTTP) may reach: public unicast addresses only, unless the operator allows more
// (`workflows.http_allow`). Loopback would reach this gateway's admin API (open to loopback when
// no admin key is set) and local services; private, link-local (cloud metadata at
// 169.254.169.254) and reserved ranges reach the operator's network.
//
// Thread-safety: pure functions.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::upstream {

// An IPv4 (4 bytes) or IPv6 (16 bytes) address in network order.
// False for: unspecified, loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared
// (100.64/10), link-local (169.254/16, fe80::/10), multicast, documentation, benchmarking,
// reserved and broadcast ranges, the IETF protocol block (192.0.0/24, 2001::/23), and IPv6 forms
// that embed an IPv4 address (mapped, compatible, NAT64 64:ff9b::/96, 6to4 2002::/16) when that
// address is not public (6to4 and NAT64 are judged by the embedded address).
bool is_public_address(const uint8_t* bytes, size_t len);
// The same for an address in text form; false when it does not parse.
bool is_public_address(std::string_view text);

// Whether `url` starts with one of `prefixes` (the configured URL prefixes that may be reached
// whatever their addresses). Prefixes name a whole origin and a path ("http://10.0.0.5:8080/"),
// so a prefix cannot match another host that merely starts the same way.
bool url_allowed_by_prefix(std::string_view url, const std::vector<std::string>& prefixes);

}  // namespace switchboard::upstream
