// Which addresses a client-chosen request may reach (issue 17, finding 2).
#include "upstream/address_policy.h"

#include <gtest/gtest.h>

namespace switchboard::upstream {
namespace {

TEST(AddressPolicy, LoopbackPrivateLinkLocalAndReservedAreNotPublic) {
  for (const char* a : {"127.0.0.1",
                        "127.255.255.254",
                        "0.0.0.0",
                        "0.1.2.3",
                        "10.0.0.1",
                        "10.255.255.255",
                        "172.16.0.1",
                        "172.31.255.255",
                        "192.168.1.1",
                        "169.254.169.254",
                        "100.64.0.1",
                        "100.127.255.255",
                        "192.0.0.8",
                        "192.0.2.1",
                        "198.18.0.1",
                        "198.19.255.255",
                        "198.51.100.7",
                        "203.0.113.9",
                        "224.0.0.1",
                        "239.255.255.250",
                        "240.0.0.1",
                        "255.255.255.255",
                        "::",
                        "::1",
                        "[::1]",
                        "fe80::1",
                        "febf::1",
                        "fc00::1",
                        "fd12:3456::1",
                        "ff02::1",
                        "::ffff:127.0.0.1",
                        "::ffff:10.1.2.3",
                        "::ffff:169.254.169.254",
                        "::127.0.0.1",
                        "64:ff9b::7f00:1",
                        "64:ff9b::a00:1",
                        "64:ff9b:1::1",
                        "2002:7f00:1::",
                        "2002:a00:1::",
                        "2001::1",
                        "2001:db8::1",
                        "100::1",
                        "fec0::1"})
    EXPECT_FALSE(is_public_address(a)) << a;
}

TEST(AddressPolicy, PublicAddressesArePublic) {
  for (const char* a :
       {"8.8.8.8", "1.1.1.1", "172.15.255.255", "172.32.0.1", "100.63.255.255", "100.128.0.1",
        "169.253.0.1", "192.169.0.1", "2606:4700:4700::1111", "2a00:1450:4001::200e",
        "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"})
    EXPECT_TRUE(is_public_address(a)) << a;
}

TEST(AddressPolicy, WhatDoesNotParseIsNotPublic) {
  for (const char* a : {"", "localhost", "8.8.8", "8.8.8.8.8", "1::2::3", "example.com"})
    EXPECT_FALSE(is_public_address(a)) << a;
  const uint8_t five[5] = {8, 8, 8, 8, 8};
  EXPECT_FALSE(is_public_address(five, 5));
}

TEST(AddressPolicy, PrefixesMatchTheirWholeOrigin) {
  const std::vector<std::string> allow = {"http://10.0.0.5:8080/", "https://intranet.example/api/"};
  EXPECT_TRUE(url_allowed_by_prefix("http://10.0.0.5:8080/hook", allow));
  EXPECT_TRUE(url_allowed_by_prefix("https://intranet.example/api/v1/x", allow));
  EXPECT_FALSE(url_allowed_by_prefix("http://10.0.0.5:80801/hook", allow));
  EXPECT_FALSE(url_allowed_by_prefix("http://10.0.0.5:8080@evil.example/", allow));
  EXPECT_FALSE(url_allowed_by_prefix("https://intranet.example/admin", allow));
  EXPECT_FALSE(url_allowed_by_prefix("http://10.0.0.6:8080/hook", allow));
  EXPECT_FALSE(url_allowed_by_prefix("http://10.0.0.5:8080/", {}));
}

}  // namespace
}  // namespace switchboard::upstream
