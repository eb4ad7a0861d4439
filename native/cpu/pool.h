// A fixed thread pool sized to the machine; ops split their rows across it.
#pragma once
#include <cstdint>
#include <functional>

namespace gk {
namespace cpu {

// Number of threads that run a parallel_for (pool workers + the calling thread).
// GK_NUM_THREADS overrides the machine's hardware concurrency.
int num_threads();

// Calls fn(begin, end, slot) over [0, n) in chunks of about `grain` items, on the pool and the
// calling thread, and returns when all are done. `slot` (0 .. num_threads()-1) is unique among
// the chunks running at the same time, for per-thread scratch. Calls from several threads are
// serialised.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

}  // namespace cpu
}  // namespace gk

// Function multi-versioning for the row loops: one clone per ISA level, picked at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define GK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GK_CLONES
#endif
