// Public and non-public address ranges (address_policy.h); ranges from the IANA special-purpose
// address registries (RFC 6890 and its updates).
#include "upstream/address_policy.h"

#include <arpa/inet.h>

#include <cstring>

namespace switchboard::upstream {

namespace {

bool in_v4(const uint8_t* a, uint32_t net, int bits) {
  const uint32_t v = (uint32_t(a[0]) << 24) | (uint32_t(a[1]) << 16) | (uint32_t(a[2]) << 8) | a[3];
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t(0) << (32 - bits);
  return (v & mask) == (net & mask);
}

constexpr uint32_t ip4(int a, int b, int c, int d) {
  return (uint32_t(a) << 24) | (uint32_t(b) << 16) | (uint32_t(c) << 8) | uint32_t(d);
}

bool public_v4(const uint8_t* a) {
  struct Range {
    uint32_t net;
    int bits;
  };
  static constexpr Range kNotPublic[] = {
      {ip4(0, 0, 0, 0), 8},        // "this network"
      {ip4(10, 0, 0, 0), 8},       // private
      {ip4(100, 64, 0, 0), 10},    // shared address space (carrier-grade NAT)
      {ip4(127, 0, 0, 0), 8},      // loopback
      {ip4(169, 254, 0, 0), 16},   // link-local (cloud metadata services)
      {ip4(172, 16, 0, 0), 12},    // private
      {ip4(192, 0, 0, 0), 24},     // IETF protocol assignments
      {ip4(192, 0, 2, 0), 24},     // documentation
      {ip4(192, 88, 99, 0), 24},   // 6to4 relay anycast (deprecated)
      {ip4(192, 168, 0, 0), 16},   // private
      {ip4(198, 18, 0, 0), 15},    // benchmarking
      {ip4(198, 51, 100, 0), 24},  // documentation
      {ip4(203, 0, 113, 0), 24},   // documentation
      {ip4(224, 0, 0, 0), 4},      // multicast
      {ip4(240, 0, 0, 0), 4},      // reserved, and the broadcast address
  };
  for (const auto& r : kNotPublic)
    if (in_v4(a, r.net, r.bits)) return false;
  return true;
}

bool starts_with_bytes(const uint8_t* a, std::initializer_list<uint8_t> prefix) {
  size_t i = 0;
  for (uint8_t b : prefix)
    if (a[i++] != b) return false;
  return true;
}

bool public_v6(const uint8_t* a) {
  static constexpr uint8_t kZero[10] = {};
  // ::/96 (unspecified, loopback, IPv4-compatible) and ::ffff:0:0/96 (IPv4-mapped).
  if (std::memcmp(a, kZero, 10) == 0) {
    if (a[10] == 0xff && a[11] == 0xff) return public_v4(a + 12);  // mapped: the IPv4 decides
    return false;                                                  // ::, ::1, compatible
  }
  if (starts_with_bytes(a, {0x00, 0x64, 0xff, 0x9b}) && std::memcmp(a + 4, kZero, 8) == 0)
    return public_v4(a + 12);  // NAT64 well-known prefix: the embedded IPv4 decides
  if (starts_with_bytes(a, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01})) return false;  // local NAT64
  if (starts_with_bytes(a, {0x20, 0x02})) return public_v4(a + 2);  // 6to4: embedded IPv4
  if (starts_with_bytes(a, {0x01, 0x00}) && std::memcmp(a + 2, kZero, 6) == 0)
    return false;                                                    // 100::/64 discard
  if (a[0] == 0x20 && a[1] == 0x01 && a[2] < 0x02) return false;     // 2001::/23 (Teredo, ...)
  if (starts_with_bytes(a, {0x20, 0x01, 0x0d, 0xb8})) return false;  // documentation
  if ((a[0] & 0xfe) == 0xfc) return false;                           // unique local fc00::/7
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) return false;           // link-local fe80::/10
  if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0) return false;           // site-local (deprecated)
  if (a[0] == 0xff) return false;                                    // multicast
  return true;
}

}  // namespace

bool is_public_address(const uint8_t* bytes, size_t len) {
  if (len == 4) return public_v4(bytes);
  if (len == 16) return public_v6(bytes);
  return false;
}

bool is_public_address(std::string_view text) {
  std::string s(text);
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  uint8_t buf[16];
  if (inet_pton(AF_INET, s.c_str(), buf) == 1) return public_v4(buf);
  if (inet_pton(AF_INET6, s.c_str(), buf) == 1) return public_v6(buf);
  return false;
}

bool url_allowed_by_prefix(std::string_view url, const std::vector<std::string>& prefixes) {
  for (const auto& p : prefixes)
    if (!p.empty() && url.substr(0, p.size()) == p) return true;
  return false;
}

}  // namespace switchboard::upstream
