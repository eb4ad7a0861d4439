// emu.h — runs the project's CUDA C++ kernels, as written, on the CPU with the host C++ compiler
// (the GK_CUDA=emu build). The sources compile unchanged under nvcc and here: the only spellings
// that differ are behind the launch and shared-memory macros of native/cuda/common.cuh
// (GK_LAUNCH, GK_SHARED, GK_SHARED_ALIGNED, GK_DYNAMIC_SHARED) and the three `cvt` conversions,
// which call emu::ptx here.
//
// Every CUDA thread of a block is a fiber (its own stack; emu.cc switches between them), so
// __syncthreads, __syncwarp, warp shuffles and votes have their real semantics: a thread that
// reaches a barrier waits there until every other (non-exited) thread of the block (or every lane
// named in the mask) arrives. Blocks run one after another on an OS thread (EMU_THREADS > 1: on a
// pool). Shared memory is a per-block arena, filled with 0xFF bytes at block start (NaN in every
// float type), so a read of a shared value nobody wrote shows. Device memory is host memory.
//
// Checks made while running (each an "EMU ERROR", the process exits non-zero):
//   * deadlock: no thread can run (a __syncthreads some threads never reach, a full-mask shuffle
//     a lane waits for elsewhere), with where each warp waits;
//   * divergent barrier: threads of a block at different __syncthreads() calls, or lanes of one
//     mask at different warp collectives;
//   * a shuffle that reads a lane that is not taking part (exited, or outside the mask): its
//     value is undefined on the GPU;
//   * the calling lane missing from its own mask;
//   * launch configuration limits (threads per block, grid y/z, shared memory sizes);
// and, with the sanitizer builds: data races on shared and global memory between threads with no
// barrier between them (ThreadSanitizer; a __syncthreads/__syncwarp is the only happens-before
// edge between threads of a block, shuffles are none), and out-of-bounds / use-after-free on
// device buffers and on each shared variable (AddressSanitizer).
//
// Not modelled: timing, the memory model beyond barriers (no reordering is simulated), real
// bandwidth, FMA contraction choices of nvcc, the exact bits of MUFU approximations.
#pragma once

// Headers that use __noinline__ etc. themselves must be seen before the macros below.
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <math.h>
#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------------------------------------
// Qualifiers.
#define __global__
#define __device__
#define __host__
#define __constant__ static
#define __managed__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

// Shared memory: common.cuh's GK_SHARED* macros expand to these here (a bare __shared__ does not
// compile: it is not defined).
#define EMU_SHARED(align, name, ...)          \
  static char emu_key_##name;                 \
  auto& name = ::emu::shared_var<__VA_ARGS__>(&emu_key_##name, (align))
#define EMU_EXTERN_SHARED(align, name, ...) \
  __VA_ARGS__* const name = reinterpret_cast<__VA_ARGS__*>(::emu::dynamic_smem(align))

// ---------------------------------------------------------------------------------------------
// Vector types (the subset of vector_types.h kernels use).
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct __attribute__((aligned(16))) double2 { double x, y; };
struct __attribute__((aligned(16))) longlong2 { long long x, y; };
struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline double2 make_double2(double x, double y) { return double2{x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }

namespace emu {

// ---------------------------------------------------------------------------------------------
// Built-in variables: the scheduler sets them on every switch to a thread.
struct Builtins {
  uint3 thread_idx{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim{1, 1, 1};
  dim3 grid_dim{1, 1, 1};
};
inline thread_local Builtins tl_builtins;

}  // namespace emu

#define threadIdx (::emu::tl_builtins.thread_idx)
#define blockIdx (::emu::tl_builtins.block_idx)
#define blockDim (::emu::tl_builtins.block_dim)
#define gridDim (::emu::tl_builtins.grid_dim)
constexpr int warpSize = 32;

namespace emu {

// ---------------------------------------------------------------------------------------------
// Scheduler entry points (emu.cc).
void syncthreads(const char* file, int line);
enum CollKind : int { kShfl = 1, kBallot = 2, kAny = 3, kAll = 4, kSyncWarp = 5, kMatchAny = 6 };
// A warp collective: every non-exited lane in `mask` must call it. `src` is the lane to read
// (kShfl), or -1 to keep the own value; returns the value read, or the vote result.
uint64_t warp_collective(int kind, unsigned mask, uint64_t value, int src, const char* what, const char* file,
                         int line);
unsigned lane_id();
unsigned active_mask();
void* shared_alloc(const void* key, size_t bytes, size_t align);
void* dynamic_smem(size_t align);
[[noreturn]] void trap(const char* file, int line);
const char* describe();  // the emulator's configuration (scheduling order, seed, ...), one line
void report(const char* kind, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

template <class T>
inline T& shared_var(const void* key, size_t align) {
  static_assert(std::is_trivially_destructible<T>::value, "__shared__ variables have no destructor");
  const size_t a = align > alignof(T) ? align : alignof(T);
  return *reinterpret_cast<T*>(shared_alloc(key, sizeof(T), a));
}

// ---------------------------------------------------------------------------------------------
// Launch. common.cuh's GK_LAUNCH(g, b, s, st, k)(args) is `k<<<g, b, s, st>>>(args)` under nvcc and
// `::emu::launch(k, "k", FILE, LINE, g, b, s, st)(args)` here; the launch runs to completion before
// it returns (streams are synchronous).
struct LaunchCfg {
  dim3 grid, block;
  size_t smem = 0;
  void* stream = nullptr;
  const char* name = "";
  const char* file = "";
  int line = 0;
  const void* func = nullptr;
};
// Runs invoke(data) for every thread of the grid; returns a cudaError_t value.
int run_grid(const LaunchCfg& cfg, void (*invoke)(void*), void* data);

template <class... P>
struct Launcher {
  void (*f)(P...);
  LaunchCfg cfg;
  template <class... A>
  void operator()(A&&... a) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with the wrong number of arguments");
    struct Data {
      void (*f)(P...);
      std::tuple<std::decay_t<P>...> args;
    } d{f, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)};
    run_grid(cfg, [](void* p) { auto* dd = static_cast<Data*>(p); std::apply(dd->f, dd->args); }, &d);
  }
};

template <class... P>
inline Launcher<P...> launch(void (*f)(P...), const char* name, const char* file, int line, dim3 grid, dim3 block,
                             size_t smem = 0, void* stream = nullptr) {
  Launcher<P...> l;
  l.f = f;
  l.cfg.grid = grid;
  l.cfg.block = block;
  l.cfg.smem = smem;
  l.cfg.stream = stream;
  l.cfg.name = name;
  l.cfg.file = file;
  l.cfg.line = line;
  l.cfg.func = reinterpret_cast<const void*>(f);
  return l;
}
template <class S, class... P>
inline Launcher<P...> launch(void (*f)(P...), const char* name, const char* file, int line, dim3 grid, dim3 block,
                             size_t smem, S* stream) {
  return launch(f, name, file, line, grid, block, smem, (void*)stream);
}

// ---------------------------------------------------------------------------------------------
// Inline PTX that the project uses, one function per mnemonic (common.cuh calls these where nvcc
// compiles `asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v))`).
namespace ptx {
inline void cvt_f32_f16(float& out, unsigned short in) {
  _Float16 h;
  memcpy(&h, &in, 2);
  out = (float)h;
}
inline void cvt_rn_f16_f32(unsigned short& out, float in) {
  const _Float16 h = (_Float16)in;  // IEEE round to nearest even (libgcc), NaN kept
  memcpy(&out, &h, 2);
}
inline void cvt_rn_bf16_f32(unsigned short& out, float in) {
  uint32_t u;
  memcpy(&u, &in, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
    out = 0x7FFF;  // canonical NaN, as the hardware writes it
    return;
  }
  out = (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
}  // namespace ptx

template <class To, class From>
inline To bits_as(From f) {
  static_assert(sizeof(To) == sizeof(From), "size");
  To t;
  memcpy(&t, &f, sizeof(To));
  return t;
}

// Flush-to-zero of the MUFU paths.
inline float ftz(float x) { return std::fabs(x) < FLT_MIN ? std::copysign(0.0f, x) : x; }

template <class T>
inline uint64_t to_u64(T v) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
  uint64_t u = 0;
  memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
inline T from_u64(uint64_t u) {
  T v;
  memcpy(&v, &u, sizeof(T));
  return v;
}

}  // namespace emu

// ---------------------------------------------------------------------------------------------
// Synchronisation, shuffles, votes.
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
#define __shfl_sync(...) ::emu::shfl_idx_impl(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::emu::shfl_xor_impl(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::emu::shfl_up_impl(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::emu::shfl_down_impl(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(m, p) ::emu::vote_impl(::emu::kBallot, (m), (p), "__ballot_sync", __FILE__, __LINE__)
#define __any_sync(m, p) ((int)::emu::vote_impl(::emu::kAny, (m), (p), "__any_sync", __FILE__, __LINE__))
#define __all_sync(m, p) ((int)::emu::vote_impl(::emu::kAll, (m), (p), "__all_sync", __FILE__, __LINE__))
#define __match_any_sync(m, v) ::emu::match_any_impl((m), (v), "__match_any_sync", __FILE__, __LINE__)
#define __activemask() ::emu::active_mask()
#define __trap() ::emu::trap(__FILE__, __LINE__)

inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::emu::warp_collective(::emu::kSyncWarp, mask, 0, -1, "__syncwarp", file, line);
}
namespace emu {
inline unsigned vote_impl(int kind, unsigned mask, bool pred, const char* what, const char* file, int line) {
  return (unsigned)warp_collective(kind, mask, pred ? 1 : 0, -1, what, file, line);
}
template <class T>
inline unsigned match_any_impl(unsigned mask, T v, const char* what, const char* file, int line) {
  static_assert(std::is_integral<T>::value && sizeof(T) <= 8, "__match_any_sync takes a 32- or 64-bit integer");
  return (unsigned)warp_collective(kMatchAny, mask, to_u64(v), -1, what, file, line);
}
// Source lane of each shuffle, as the CUDA programming guide defines it (-1: own value).
inline int seg_base(int width) { return (int)(lane_id() & ~(unsigned)(width - 1)); }
template <class T>
inline T shfl_idx_impl(const char* file, int line, unsigned mask, T v, int src, int width = 32) {
  const int s = seg_base(width) + (src & (width - 1));
  return from_u64<T>(warp_collective(kShfl, mask, to_u64(v), s, "__shfl_sync", file, line));
}
template <class T>
inline T shfl_xor_impl(const char* file, int line, unsigned mask, T v, int lane_mask, int width = 32) {
  const int l = (int)lane_id(), s = l ^ lane_mask;
  const int src = s >= seg_base(width) + width ? -1 : s;  // later groups: own value
  return from_u64<T>(warp_collective(kShfl, mask, to_u64(v), src, "__shfl_xor_sync", file, line));
}
template <class T>
inline T shfl_up_impl(const char* file, int line, unsigned mask, T v, unsigned delta, int width = 32) {
  const int l = (int)lane_id();
  const int src = (l & (width - 1)) < (int)delta ? -1 : l - (int)delta;
  return from_u64<T>(warp_collective(kShfl, mask, to_u64(v), src, "__shfl_up_sync", file, line));
}
template <class T>
inline T shfl_down_impl(const char* file, int line, unsigned mask, T v, unsigned delta, int width = 32) {
  const int l = (int)lane_id();
  const int src = (l & (width - 1)) + (int)delta >= width ? -1 : l + (int)delta;
  return from_u64<T>(warp_collective(kShfl, mask, to_u64(v), src, "__shfl_down_sync", file, line));
}
}  // namespace emu

// Memory fences: every access is already visible (no reordering is simulated).
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---------------------------------------------------------------------------------------------
// Atomics: real atomics (blocks may run on several OS threads), relaxed like the GPU's.
#define EMU_ATOMIC_INT(T)                                                                              \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }                \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED); }                \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_RELAXED); }                \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }                  \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_RELAXED); }                \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_RELAXED); }              \
  inline T atomicCAS(T* p, T cmp, T v) {                                                              \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);               \
    return cmp;                                                                                       \
  }                                                                                                   \
  inline T atomicMin(T* p, T v) {                                                                     \
    T cur = __atomic_load_n(p, __ATOMIC_RELAXED);                                                     \
    while (v < cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                                 \
    return cur;                                                                                       \
  }                                                                                                   \
  inline T atomicMax(T* p, T v) {                                                                     \
    T cur = __atomic_load_n(p, __ATOMIC_RELAXED);                                                     \
    while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) { \
    }                                                                                                 \
    return cur;                                                                                       \
  }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned int)
EMU_ATOMIC_INT(unsigned long long)
EMU_ATOMIC_INT(long long)
#undef EMU_ATOMIC_INT
template <class F, class U>
inline F emu_atomic_float_op(F* p, F v, F (*op)(F, F)) {
  U cur = __atomic_load_n(reinterpret_cast<U*>(p), __ATOMIC_RELAXED);
  for (;;) {
    const U next = emu::bits_as<U>(op(emu::bits_as<F>(cur), v));
    if (__atomic_compare_exchange_n(reinterpret_cast<U*>(p), &cur, next, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return emu::bits_as<F>(cur);
  }
}
inline float atomicAdd(float* p, float v) {
  return emu_atomic_float_op<float, uint32_t>(p, v, [](float a, float b) { return a + b; });
}
inline double atomicAdd(double* p, double v) {
  return emu_atomic_float_op<double, uint64_t>(p, v, [](double a, double b) { return a + b; });
}
inline float atomicExch(float* p, float v) {
  return emu::bits_as<float>(__atomic_exchange_n(reinterpret_cast<uint32_t*>(p), emu::bits_as<uint32_t>(v), __ATOMIC_RELAXED));
}
inline unsigned atomicInc(unsigned* p, unsigned lim) {
  unsigned cur = __atomic_load_n(p, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(p, &cur, cur >= lim ? 0u : cur + 1, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return cur;
}

// ---------------------------------------------------------------------------------------------
// Loads/stores with cache hints: plain accesses, each checked for the alignment of its type (a
// misaligned 8- or 16-byte access faults on the GPU, cudaErrorMisalignedAddress, and silently
// works on a CPU).
namespace emu {
void misaligned(const void* p, size_t align, const char* what, const char* file, int line);
template <class T>
inline void check_aligned(const T* p, const char* what, const char* file, int line) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) misaligned(p, alignof(T), what, file, line);
}
}  // namespace emu
#define EMU_LD(name)                                                                              \
  template <class T>                                                                              \
  inline T name(const T* p, const char* f = __builtin_FILE(), int l = __builtin_LINE()) {         \
    ::emu::check_aligned(p, #name, f, l);                                                         \
    return *p;                                                                                    \
  }
#define EMU_ST(name)                                                                              \
  template <class T>                                                                              \
  inline void name(T* p, T v, const char* f = __builtin_FILE(), int l = __builtin_LINE()) {      \
    ::emu::check_aligned(p, #name, f, l);                                                         \
    *p = v;                                                                                       \
  }
EMU_LD(__ldg) EMU_LD(__ldcs) EMU_LD(__ldcg) EMU_LD(__ldca) EMU_LD(__ldlu) EMU_LD(__ldcv)
EMU_ST(__stcs) EMU_ST(__stcg) EMU_ST(__stwb) EMU_ST(__stwt)
#undef EMU_LD
#undef EMU_ST

// ---------------------------------------------------------------------------------------------
// Bit reinterpretation, integer intrinsics.
inline float __uint_as_float(unsigned int u) { return emu::bits_as<float>(u); }
inline unsigned int __float_as_uint(float f) { return emu::bits_as<unsigned int>(f); }
inline float __int_as_float(int u) { return emu::bits_as<float>(u); }
inline int __float_as_int(float f) { return emu::bits_as<int>(f); }
inline double __longlong_as_double(long long u) { return emu::bits_as<double>(u); }
inline long long __double_as_longlong(double f) { return emu::bits_as<long long>(f); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ---------------------------------------------------------------------------------------------
// Float intrinsics. The _rn forms are single IEEE operations (the host build must not contract
// them: compile with -ffp-contract=off). The MUFU approximations (__expf, __logf, ...) are computed
// the way the hardware composes them (ex2.approx of x * log2(e), ...), with flush to zero, but
// from the correctly rounded exp2/log2: within ~2 ulp of the GPU, never bit-exact.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float __expf(float x) { return emu::ftz(exp2f(emu::ftz(x * 1.4426950408889634f))); }
inline float __exp10f(float x) { return emu::ftz(exp2f(emu::ftz(x * 3.3219280948873622f))); }
inline float __logf(float x) { return log2f(emu::ftz(x)) * 0.69314718055994531f; }
inline float __log2f(float x) { return log2f(emu::ftz(x)); }
inline float __log10f(float x) { return log2f(emu::ftz(x)) * 0.30102999566398120f; }
inline float __powf(float a, float b) { return emu::ftz(exp2f(b * log2f(emu::ftz(a)))); }
inline float __fdividef(float a, float b) { return std::fabs(b) > 8.507059e37f ? 0.0f : a * (1.0f / b); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline float __double2float_rn(double x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline double __ll2double_rn(long long x) { return (double)x; }
inline long long __double2ll_rn(double x) { return (long long)nearbyint(x); }
