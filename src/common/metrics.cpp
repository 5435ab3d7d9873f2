#include "common/metrics.h"

#include <prometheus/text_serializer.h>

#include <mutex>
#include <sstream>

namespace switchboard::metrics {

prometheus::Registry& registry() {
  static prometheus::Registry reg;
  return reg;
}

prometheus::Family<prometheus::Counter>& counter_family(const std::string& name,
                                                        const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry());
}

prometheus::Family<prometheus::Gauge>& gauge_family(const std::string& name,
                                                    const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry());
}

prometheus::Family<prometheus::Histogram>& histogram_family(const std::string& name,
                                                            const std::string& help) {
  return prometheus::BuildHistogram().Name(name).Help(help).Register(registry());
}

const prometheus::Histogram::BucketBoundaries& latency_buckets_seconds() {
  static const prometheus::Histogram::BucketBoundaries b = {
      0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
      0.25,    0.5,    1,       2.5,    5,     10,     30,    60,   120,   300,  600};
  return b;
}

std::string serialize() {
  std::ostringstream out;
  prometheus::TextSerializer serializer;
  serializer.Serialize(out, registry().Collect());
  return out.str();
}

}  // namespace switchboard::metrics
