// A fixed thread pool sized to the machine; ops split their rows across it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>

namespace gk {
namespace cpu {

// Number of threads that run a parallel_for (pool workers + the calling thread).
// GK_NUM_THREADS overrides the machine's hardware concurrency.
int num_threads();

// Calls fn(begin, end, slot) over [0, n) in chunks of about `grain` items, on the pool and the
// calling thread, and returns when all are done. `slot` (0 .. num_threads()-1) is unique among
// the chunks running at the same time, for per-thread scratch. Calls from several threads are
// serialised. An exception thrown by fn (std::bad_alloc from scratch_alloc) stops the remaining
// chunks and is rethrown here, on the calling thread, once every thread has stopped.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn);

// Host scratch of the CPU backend (buffers whose size follows V or the thread count, not the
// caller's arrays). Every byte of it is counted against one process-wide cap, read once from
// GK_MAX_SCRATCH_BYTES (default: the machine's physical memory), so that a request that cannot
// be met fails at once with ScratchOom (a std::bad_alloc: the binding's GK_OOM) instead of
// growing the process until the kernel kills it. The memory is not initialised.
struct ScratchOom : std::bad_alloc {
  char msg[160];
  explicit ScratchOom(size_t bytes, size_t in_use, size_t cap);
  const char* what() const noexcept override { return msg; }
};
void* scratch_alloc(size_t bytes);
void scratch_free(void* p, size_t bytes);
size_t scratch_cap();

// Asks the kernel to back a large output the op is about to write for the first time with
// transparent huge pages (Linux, THP in "madvise" mode): a fresh N x V gradient then costs a few
// hundred page faults instead of one per 4 KiB. Advice only; contents are untouched.
void huge_page_hint(void* p, size_t bytes);

}  // namespace cpu
}  // namespace gk

// Function multi-versioning for the row loops: one clone per ISA level, picked at load time.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define GK_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GK_CLONES
#endif
