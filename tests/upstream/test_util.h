// Shared helpers for the upstream tests: fixture loading and JSON comparison.
#pragma once

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <string>

namespace switchboard::upstream::testing {

inline std::string read_fixture(const std::string& name) {
  std::ifstream in(std::string(UPSTREAM_FIXTURES) + "/" + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << "missing fixture " << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline boost::json::value parse_or_fail(std::string_view text) {
  boost::json::error_code ec;
  boost::json::value v = boost::json::parse(text, ec);
  EXPECT_FALSE(ec) << "invalid JSON: " << text;
  return v;
}

inline boost::json::object parse_object(std::string_view text) {
  boost::json::value v = parse_or_fail(text);
  EXPECT_TRUE(v.is_object()) << text;
  return v.is_object() ? v.get_object() : boost::json::object();
}

}  // namespace switchboard::upstream::testing
