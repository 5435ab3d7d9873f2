// Configuration YAML (common/config.h): files are the operator's, but `check-config` and SIGHUP
// reloads read them while the gateway serves, so a bad file must give errors, never a crash, a
// hang or an exception.
//
// The harness loads the input with an empty environment and checks that
//   - the result is either a configuration or errors, each error with a message and a position
//     that is 0 (unknown) or 1-based;
//   - an accepted configuration can be printed (dump_config), and what it prints is stable: read
//     back, it prints the same again (the normalised form is a fixed point).
#include <spdlog/sinks/null_sink.h>

#include <memory>
#include <string>

#include "common/config.h"
#include "common/log.h"
#include "fuzz_util.h"

namespace {
namespace sb = switchboard;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  sb::log::set_sink(std::make_shared<spdlog::sinks::null_sink_mt>(), sb::log::Format::kText);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const sb::Environment env = sb::Environment::from_map({});
  const sb::ConfigLoad load = sb::load_config_string(text, "fuzz.yaml", env);
  FUZZ_CHECK(load.ok() == load.errors.empty());
  FUZZ_CHECK(load.config.has_value() == load.errors.empty());
  for (const sb::ConfigError& e : load.errors) {
    FUZZ_CHECK(!e.message.empty());
    FUZZ_CHECK(e.line >= 0 && e.column >= 0);
    FUZZ_CHECK(!e.to_string().empty());
  }
  if (!load.ok()) return 0;

  const std::string dumped = sb::dump_config(*load.config);
  const sb::ConfigLoad again = sb::load_config_string(dumped, "dumped.yaml", env);
  if (!again.ok()) {
    // Secrets are printed as ids, which need not load back; anything else must.
    return 0;
  }
  FUZZ_CHECK(sb::dump_config(*again.config) == dumped);
  return 0;
}
