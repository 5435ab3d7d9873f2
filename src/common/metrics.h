// Metrics: one process-wide Prometheus registry (prometheus-cpp core, no HTTP server).
//
// Names follow `switchboard_<module>_<what>_<unit>`. Resolve a family and its labelled child
// once (at construction of the owning object), never per request: `Add()` takes a lock and
// hashes labels, while `Counter::Increment()` on a resolved handle is a single atomic add.
//
// Thread-safety: all functions may be called from any thread.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <string>

namespace switchboard::metrics {

prometheus::Registry& registry();

// Registering the same name twice returns the same family.
prometheus::Family<prometheus::Counter>& counter_family(const std::string& name,
                                                        const std::string& help);
prometheus::Family<prometheus::Gauge>& gauge_family(const std::string& name,
                                                    const std::string& help);
prometheus::Family<prometheus::Histogram>& histogram_family(const std::string& name,
                                                            const std::string& help);

// Latency buckets in seconds, from 50 µs to 10 min, for request and upstream latencies.
const prometheus::Histogram::BucketBoundaries& latency_buckets_seconds();

// Everything in the registry, in the Prometheus text exposition format (version 0.0.4).
std::string serialize();

}  // namespace switchboard::metrics
