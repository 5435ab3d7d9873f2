// Small, dense numbers for the threads alive at one time, for per-thread shards of hot data
// (sharded counters, the key pool's selection state).
//
// A thread's first call takes the lowest number no live thread holds; the thread gives it back
// when it exits. So the threads alive together always have distinct numbers 0..live-1, however
// many threads came and went before (a counter that only grows would, modulo the shard count,
// sooner or later put two live threads on one shard). The first thread to ask (usually main)
// gets 0.
//
// Thread-safety: any thread; the first call of each thread takes a mutex, later calls read a
// thread_local.
#pragma once

#include <cstdint>

namespace switchboard {

uint32_t this_thread_slot();

}  // namespace switchboard
