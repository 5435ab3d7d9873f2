// The build's identity: the release version and the git commit it was built from.
#pragma once

namespace switchboard {

// The version of the project (CMake's project version), e.g. "0.1.0".
inline constexpr const char* kVersion = SWITCHBOARD_VERSION;

// The git commit of the source tree, 12 hex digits, "-dirty" when tracked files had changes, or
// "unknown" outside a git checkout. Generated at build time (build_commit.cmake).
const char* build_commit();

}  // namespace switchboard
