// Helpers shared by the standalone CUDA check programs in this folder (check_logprobs.cu,
// check_distill.cu, check_issue5_ops.cu). Header-only: each program is one translation unit that
// includes it, so its build line needs nothing more. NOT part of the addon.
//
// What it holds: the CK() error check; the PASS/FAIL report, the failure count and Status
// comparison; the command-line options, the device banner and the final summary line
// (start_check / finish); the counter-based random numbers (the device and the host draw the same
// values); the float32/bfloat16/float16 element helpers; DevBuf (an owned device allocation, with
// poison) and upload/download; the relative-error measure Err and the gradient tolerances; timing
// (an event pair, the median of timed runs, the nominal memory bandwidth). Helpers only one
// program needs stay in that program.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../backend.h"
#include "../../core/dtype.h"

#define CK(expr)                                                                                   \
  do {                                                                                             \
    cudaError_t e_ = (expr);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #expr); \
      exit(2);                                                                                     \
    }                                                                                              \
  } while (0)

// ------------------------------------------------------------------------------------------------
// Reporting.

inline int g_failures = 0;

// One line "PASS ..." or "FAIL ..." (a FAIL counts in g_failures).
inline void report(bool pass, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
inline void report(bool pass, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("%s ", pass ? "PASS" : "FAIL");
  vprintf(fmt, ap);
  printf("\n");
  fflush(stdout);
  va_end(ap);
  if (!pass) ++g_failures;
}

inline bool same_status(const gk::Status& a, const gk::Status& b) {
  return a.code == b.code && a.row == b.row && strcmp(a.message, b.message) == 0;
}

// " [GK_CUDA_EXACT_EXP]" when the program was built with -DGK_CUDA_EXACT_EXP, else "".
#ifdef GK_CUDA_EXACT_EXP
inline constexpr const char* kExactExpTag = " [GK_CUDA_EXACT_EXP]";
#else
inline constexpr const char* kExactExpTag = "";
#endif

// A program's options and its start time.
struct CheckRun {
  bool quick = false;       // --quick: small shapes only, no benchmark
  bool do_bench = true;     // --no-bench clears it
  bool bench_only = false;  // --bench-only
  std::chrono::steady_clock::time_point t0;
};

// Parses the options every check program takes (--quick, --no-bench, --bench-only, --seed=N into
// *seed); with fresh_seed, a run without --seed takes a seed from the clock. Then prints the device
// banner "device D: NAME (sm_XY, N SMs, M GiB)<tag>, seed S" (with fresh_seed followed by
// " (rerun with --seed=S)") and starts the clock finish() reads. False, after the usage line on
// stderr, for an unknown option (the program then exits with 2).
inline bool start_check(int argc, char** argv, uint64_t* seed, const char* tag, bool fresh_seed, CheckRun* run) {
  bool seed_given = false;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick")) run->quick = true, run->do_bench = false;
    else if (!strcmp(argv[i], "--no-bench")) run->do_bench = false;
    else if (!strcmp(argv[i], "--bench-only")) run->bench_only = true;
    else if (!strncmp(argv[i], "--seed=", 7)) *seed = strtoull(argv[i] + 7, nullptr, 10), seed_given = true;
    else {
      fprintf(stderr, "usage: %s [--quick] [--no-bench] [--bench-only] [--seed=N]\n", argv[0]);
      return false;
    }
  }
  if (fresh_seed && !seed_given)
    *seed = (uint64_t)std::chrono::system_clock::now().time_since_epoch().count() % 1000000007ull;
  int dev = 0;
  cudaDeviceProp prop;
  CK(cudaGetDevice(&dev));
  CK(cudaGetDeviceProperties(&prop, dev));
  printf("device %d: %s (sm_%d%d, %d SMs, %.1f GiB)%s, seed %llu", dev, prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, tag, (unsigned long long)*seed);
  if (fresh_seed) printf(" (rerun with --seed=%llu)", (unsigned long long)*seed);
  printf("\n");
  run->t0 = std::chrono::steady_clock::now();
  return true;
}

// The last line ("PASS: 0 failure(s), 12.3 s") and the exit code: 0 only when nothing failed.
inline int finish(const CheckRun& run) {
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - run.t0).count();
  printf("%s: %d failure(s), %.1f s\n", g_failures ? "FAIL" : "PASS", g_failures, secs);
  return g_failures ? 1 : 0;
}

// ------------------------------------------------------------------------------------------------
// Random numbers: a counter-based hash, so the device and the host draw the same values.

__host__ __device__ inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
__host__ __device__ inline double unit(uint64_t h) { return (double)(h >> 11) * (1.0 / 9007199254740992.0); }
// Approximately standard normal (Irwin-Hall of four 16-bit uniforms), never exactly 0 in practice.
__host__ __device__ inline float approx_normal(uint64_t h) {
  const float s = (float)(h & 0xFFFF) + (float)((h >> 16) & 0xFFFF) + (float)((h >> 32) & 0xFFFF) +
                  (float)((h >> 48) & 0xFFFF);
  return (s / 65536.0f - 2.0f) * 1.7320508f;
}

// Host stream: every draw is one step of mix64 (uniform, normal and below each take one).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(mix64(seed)) {}
  uint64_t next() { return s = mix64(s); }
  double uniform() { return unit(next()); }
  float normal() { return approx_normal(next()); }
  int64_t below(int64_t n) { return n <= 0 ? 0 : (int64_t)(next() % (uint64_t)n); }
};

// ------------------------------------------------------------------------------------------------
// Elements: float32, bfloat16 or float16.

inline size_t elem_size(int32_t dt) { return dt == gk::kF32 ? 4 : 2; }
inline const char* dtype_name(int32_t dt) { return dt == gk::kF32 ? "f32" : (dt == gk::kBF16 ? "bf16" : "f16"); }

__host__ __device__ inline float to_f32(const void* base, int32_t dt, int64_t i) {
  if (dt == gk::kF32) return static_cast<const float*>(base)[i];
  const uint16_t h = static_cast<const uint16_t*>(base)[i];
  return dt == gk::kBF16 ? gk::bf16_to_f32(h) : gk::f16_to_f32(h);
}
__host__ __device__ inline void from_f32(void* base, int32_t dt, int64_t i, float v) {
  if (dt == gk::kF32) static_cast<float*>(base)[i] = v;
  else if (dt == gk::kBF16) static_cast<uint16_t*>(base)[i] = gk::f32_to_bf16(v);
  else static_cast<uint16_t*>(base)[i] = gk::f32_to_f16(v);
}

// ------------------------------------------------------------------------------------------------
// Device buffers.

struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  DevBuf() = default;
  explicit DevBuf(size_t b) : bytes(b) { CK(cudaMalloc(&p, b > 0 ? b : 1)); }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <class T> T* as(size_t byte_off = 0) const { return reinterpret_cast<T*>((char*)p + byte_off); }
  // Fills the buffer with `byte` (0xFF: NaN bits in every float dtype), so that an element a kernel
  // leaves unwritten shows. A 0-byte buffer fills its 1-byte allocation.
  void poison(int byte = 0xFF) { CK(cudaMemset(p, byte, bytes > 0 ? bytes : 1)); }
};
template <class T>
inline void upload(void* d, const std::vector<T>& h) {
  if (!h.empty()) CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T>
inline void upload(DevBuf& d, const std::vector<T>& h) {
  upload(d.p, h);
}
template <class T>
inline std::vector<T> download(const void* d, size_t count) {
  std::vector<T> h(count);
  if (count) CK(cudaMemcpy(h.data(), d, count * sizeof(T), cudaMemcpyDeviceToHost));
  return h;
}

// ------------------------------------------------------------------------------------------------
// Error measures: ‖got − ref‖ / ‖ref‖ (absolute ‖got − ref‖ when ‖ref‖ = 0); NaN or inf in got
// must stand exactly where ref has it (each place where not counts in `bad`).

struct Err {
  double num = 0, den = 0;
  int64_t bad = 0;  // NaN/inf mismatches
  void add(double got, double ref) {
    const bool gn = std::isnan(got), rn = std::isnan(ref);
    if (gn || rn) {
      if (gn != rn) ++bad;
      return;
    }
    if (std::isinf(ref) || std::isinf(got)) {
      if (got != ref) ++bad;
      return;
    }
    num += (got - ref) * (got - ref);
    den += ref * ref;
  }
  double rel() const { return den > 0 ? std::sqrt(num / den) : std::sqrt(num); }
  bool ok(double tol) const { return bad == 0 && rel() <= tol; }
};

// "1.23e-06", or "1.23e-06(+N <bad_label>)" when there are mismatches.
inline std::string err_str(const Err& e, const char* bad_label) {
  char b[64];
  if (e.bad) snprintf(b, sizeof(b), "%.2e(+%lld %s)", e.rel(), (long long)e.bad, bad_label);
  else snprintf(b, sizeof(b), "%.2e", e.rel());
  return b;
}

// Gradient tolerances of docs/grpo-math.md, by dtype.
inline double grad_tol(int32_t dt) { return dt == gk::kF32 ? 1e-5 : (dt == gk::kF16 ? 1e-3 : 8e-3); }

// ------------------------------------------------------------------------------------------------
// Timing.

inline float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A start and a stop event, created together and destroyed with the object.
struct EventPair {
  cudaEvent_t e0, e1;
  EventPair() {
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
  }
  ~EventPair() {
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;
};

// Runs fn `warmup` times, synchronises, then times `reps` runs between ev.e0 and ev.e1 on the
// default stream; the median in milliseconds.
template <class Fn>
inline float time_median_ms(const EventPair& ev, int warmup, int reps, Fn&& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  CK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(ev.e0));
    fn();
    CK(cudaEventRecord(ev.e1));
    CK(cudaEventSynchronize(ev.e1));
    float t = 0;
    CK(cudaEventElapsedTime(&t, ev.e0, ev.e1));
    ms.push_back(t);
  }
  return median(ms);
}

// The device's nominal memory bandwidth in bytes/s: memory clock (DDR) x bus width.
inline double hbm_peak_bytes_per_s() {
  int dev = 0, mem_khz = 0, bus_bits = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  return 2.0 * mem_khz * 1e3 * (bus_bits / 8.0);
}
