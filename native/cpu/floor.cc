// The machine's own floor for the CPU benchmark (bench/run.ts): read and copy bandwidth over
// buffers far larger than the caches, and the throughput of the row loops' exp, measured with
// the same thread pool and vector width the ops use.
#include <chrono>
#include <cstring>
#include <vector>

#include "../backend.h"
#include "../core/softmax.h"
#include "pool.h"
#include "simd.h"

namespace gk {
namespace cpu {
namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <int W>
GK_SIMD_INLINE float sum_isa_impl(const float* p, int64_t n) {
  typedef typename simd::Vec<W>::F F;
  constexpr int K = simd::Vec<W>::kK;
  F acc[K];
  for (int k = 0; k < K; ++k) acc[k] = F{};
  int64_t j = 0;
  for (; j + simd::kLanes <= n; j += simd::kLanes)
    for (int k = 0; k < K; ++k) acc[k] += simd::load<F>(p + j + k * W);
  float s = simd::hsum(acc);
  for (; j < n; ++j) s += p[j];
  return s;
}
GK_SIMD_DISPATCH(float, sum_isa, (const float* p, int64_t n), (p, n))

template <int W>
GK_SIMD_INLINE float exp_isa_impl(float* buf, int64_t n, int reps) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  constexpr int K = V::kK;
  F acc[K];
  for (int k = 0; k < K; ++k) acc[k] = F{};
  for (int r = 0; r < reps; ++r)
    for (int64_t j = 0; j + simd::kLanes <= n; j += simd::kLanes)
      for (int k = 0; k < K; ++k) acc[k] += simd::exp_nonpos<V>(simd::load<F>(buf + j + k * W));
  return simd::hsum(acc);
}
GK_SIMD_DISPATCH(float, exp_isa, (float* buf, int64_t n, int reps), (buf, n, reps))

volatile float g_sink;

}  // namespace

Floor measure_floor(size_t bytes) {
  Floor f;
  const int64_t n = (int64_t)(bytes / sizeof(float));
  float* src = (float*)scratch_alloc((size_t)n * sizeof(float));
  float* dst = nullptr;
  try {
    dst = (float*)scratch_alloc((size_t)n * sizeof(float));
  } catch (...) {
    scratch_free(src, (size_t)n * sizeof(float));
    throw;
  }
  const int64_t grain = 1 << 18;  // 1 MiB chunks
  parallel_for(n, grain, [&](int64_t b, int64_t e, int) {
    for (int64_t j = b; j < e; ++j) src[j] = (float)(j & 1023) * -0.01f;
    memset(dst + b, 0, (size_t)(e - b) * sizeof(float));
  });
  const int threads = num_threads();
  std::vector<float> sums((size_t)threads);
  double best_read = 1e30, best_copy = 1e30, best_exp = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    double t0 = now_s();
    parallel_for(n, grain, [&](int64_t b, int64_t e, int slot) { sums[(size_t)slot] += sum_isa(src + b, e - b); });
    best_read = std::min(best_read, now_s() - t0);
    t0 = now_s();
    parallel_for(n, grain, [&](int64_t b, int64_t e, int) { memcpy(dst + b, src + b, (size_t)(e - b) * sizeof(float)); });
    best_copy = std::min(best_copy, now_s() - t0);
  }
  // exp over an L1-resident block per thread: 2^26 elements in all.
  const int64_t block = 4096;
  const int reps = (int)((int64_t(1) << 26) / block / threads);
  for (int rep = 0; rep < 3; ++rep) {
    const double t0 = now_s();
    parallel_for(threads, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        alignas(64) float buf[block];
        for (int64_t j = 0; j < block; ++j) buf[j] = -(float)(j & 255) * 0.05f - (float)i;
        g_sink = exp_isa(buf, block, reps);
      }
    });
    best_exp = std::min(best_exp, now_s() - t0);
  }
  for (float s : sums) g_sink = s;
  scratch_free(src, (size_t)n * sizeof(float));
  scratch_free(dst, (size_t)n * sizeof(float));
  f.read_gbs = (double)n * sizeof(float) / best_read / 1e9;
  f.copy_gbs = 2.0 * (double)n * sizeof(float) / best_copy / 1e9;
  f.exp_gelems = (double)block * reps * threads / best_exp / 1e9;
  f.threads = threads;
  return f;
}

}  // namespace cpu
}  // namespace gk
