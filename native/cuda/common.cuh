// Shared helpers of the CUDA backend: status/error checking, warp and block reductions,
// 16-byte vector loads and stores with a scalar path for the unaligned head and tail of a row
// (so any V works), the device error flags, and stream-ordered scratch.
//
// Everything here is header-only: host helpers are `inline`, device helpers `__device__
// __forceinline__`, so each .cu that includes this keeps its kernels file-local.
#pragma once
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdio.h>

#include <atomic>

#include "../backend.h"
#include "../core/dtype.h"
#include "../core/softmax.h"

// ---------------------------------------------------------------------------------------------
// The spellings that differ between nvcc and the CPU emulator (the GK_CUDA=emu build,
// native/emu/): every kernel source compiles under both, unchanged.
//   GK_LAUNCH(grid, block, smem, stream, kernel)(args)   kernel<<<grid, block, smem, stream>>>(args)
//   GK_SHARED(name, Type);                               __shared__ Type name;
//   GK_SHARED_ALIGNED(16, name, Type);                   __shared__ __align__(16) Type name;
//   GK_DYNAMIC_SHARED(16, name, T);                      extern __shared__ __align__(16) T name[];
// (Type may be an array type, T[n].) Under the emulator a launch runs to completion on the CPU,
// one fiber per CUDA thread, and shared variables live in a per-block arena filled with 0xFF.
#if defined(GK_EMU)
#define GK_LAUNCH(grid, block, smem, stream, ...) \
  ::emu::launch(__VA_ARGS__, #__VA_ARGS__, __FILE__, __LINE__, grid, block, smem, stream)
#define GK_SHARED(name, ...) EMU_SHARED(0, name, __VA_ARGS__)
#define GK_SHARED_ALIGNED(align, name, ...) EMU_SHARED(align, name, __VA_ARGS__)
#define GK_DYNAMIC_SHARED(align, name, T) EMU_EXTERN_SHARED(align, name, T)
// A 16-byte vector access must be 16-byte aligned: the GPU faults otherwise, a CPU does not.
#define GK_VEC_ALIGNED(p) ::emu::check_aligned(reinterpret_cast<const uint4*>(p), "16-byte vector access", __FILE__, __LINE__)
#else
namespace gk { namespace cuda { namespace detail {
template <class T> using SharedType = T;  // lets GK_SHARED take array types
}}}  // namespace gk::cuda::detail
#define GK_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define GK_SHARED(name, ...) __shared__ ::gk::cuda::detail::SharedType<__VA_ARGS__> name
#define GK_SHARED_ALIGNED(align, name, ...) __shared__ __align__(align) ::gk::cuda::detail::SharedType<__VA_ARGS__> name
#define GK_DYNAMIC_SHARED(align, name, T) extern __shared__ __align__(align) T name[]
#define GK_VEC_ALIGNED(p) ((void)0)
#endif

namespace gk {
namespace cuda {
namespace detail {

// ---------------------------------------------------------------------------------------------
// Status helpers (host).

inline Status make_status(int32_t code, const char* msg, int64_t row = -1) {
  Status st;
  st.code = code;
  st.row = row;
  snprintf(st.message, sizeof(st.message), "%s", msg);
  return st;
}

inline Status cuda_status(cudaError_t e, const char* what, const char* file, int line) {
  // Clear the thread's last error (a failed allocation is not sticky; a later launch check on
  // this thread must not report it again).
  cudaGetLastError();
  Status st;
  st.code = (e == cudaErrorMemoryAllocation) ? kOom : kCuda;
  const char* base = file;
  for (const char* p = file; *p; ++p)
    if (*p == '/' || *p == '\\') base = p + 1;
  snprintf(st.message, sizeof(st.message), "CUDA error %s (%s) in %s at %s:%d", cudaGetErrorName(e),
           cudaGetErrorString(e), what, base, line);
  return st;
}

}  // namespace detail
}  // namespace cuda
}  // namespace gk

// Evaluates a CUDA runtime call; on failure returns a gk::Status (kCuda, or kOom for an
// allocation failure) from the enclosing function, naming the call and the CUDA error.
#define GK_CUDA_CHECK(expr)                                                                  \
  do {                                                                                       \
    const cudaError_t gk_err_ = (expr);                                                      \
    if (gk_err_ != cudaSuccess) return ::gk::cuda::detail::cuda_status(gk_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports a launch failure (bad configuration, no device, ...).
#define GK_CUDA_CHECK_LAUNCH() GK_CUDA_CHECK(cudaGetLastError())

// Propagates a non-ok gk::Status.
#define GK_RETURN_IF_ERROR(expr)          \
  do {                                    \
    const ::gk::Status gk_st_ = (expr);   \
    if (!gk_st_.ok()) return gk_st_;      \
  } while (0)

namespace gk {
namespace cuda {
namespace detail {

// ---------------------------------------------------------------------------------------------
// Stream-ordered device scratch: cudaMallocAsync now, cudaFreeAsync on the same stream when the
// owner goes out of scope (so an early error return does not leak). Freed memory is reused by
// later work on the stream only after the kernels enqueued before the free have run.
class DeviceScratch {
 public:
  DeviceScratch() = default;
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  ~DeviceScratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  cudaError_t alloc(size_t bytes, cudaStream_t s) {
    stream_ = s;
    return cudaMallocAsync(&ptr_, bytes > 0 ? bytes : 1, s);
  }
  template <class T>
  T* as(size_t byte_offset = 0) const {
    return reinterpret_cast<T*>(static_cast<char*>(ptr_) + byte_offset);
  }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

// ---------------------------------------------------------------------------------------------
// Op timing for benchmarks: native/cuda/runtime.cu arms a start event on this thread before an
// op; every synchronisation of the op (finish_op / sync_stream) records the stop event again right
// before it, so the span ends after the op's last kernel, without the final copy of its scalars
// and the host round trip (an op that synchronises midway includes that gap: it is part of the
// op's latency).
struct OpTimer {
  cudaEvent_t start = nullptr, stop = nullptr;
  bool armed = false, stopped = false;
};
inline OpTimer& op_timer() {
  static thread_local OpTimer t;
  return t;
}

// An op's last step: the op timer's stop event (right after its last kernel), then the copy of
// its flags and scalars into `host` (pageable memory: the copy and the host's wake-up are not
// GPU time of the op, so they come after the stop event), then the synchronisation.
inline cudaError_t finish_op(void* host, const void* dev, size_t bytes, cudaStream_t s) {
  OpTimer& t = op_timer();
  if (t.armed) {
    const cudaError_t e = cudaEventRecord(t.stop, s);
    if (e != cudaSuccess) return e;
    t.stopped = true;
  }
  if (bytes > 0) {
    const cudaError_t e = cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, s);
    if (e != cudaSuccess) return e;
  }
  return cudaStreamSynchronize(s);
}
inline cudaError_t sync_stream(cudaStream_t s) { return finish_op(nullptr, nullptr, 0, s); }

// Rounds a byte count up to a multiple of 256 (keeps sub-allocations of one scratch aligned).
inline size_t align256(size_t b) { return (b + 255) & ~size_t(255); }

// Multiprocessor count of the current device, cached per device (grid sizes only).
inline int sm_count() {
  static std::atomic<int> cache[64];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 80;
  if (dev >= 0 && dev < 64) {
    const int c = cache[dev].load(std::memory_order_relaxed);
    if (c > 0) return c;
  }
  int n = 0;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) n = 80;
  if (dev >= 0 && dev < 64) cache[dev].store(n, std::memory_order_relaxed);
  return n;
}

// Grid for a grid-stride loop over `items` (>= 1): one block per item, capped at
// `per_sm` resident-ish blocks per multiprocessor (and far below the 2^31-1 limit of grid x).
inline unsigned grid_for(int64_t items, int per_sm) {
  const int64_t cap = (int64_t)sm_count() * per_sm;
  const int64_t g = items < cap ? items : cap;
  return (unsigned)(g < 1 ? 1 : g);
}

// ---------------------------------------------------------------------------------------------
// Device error flags. Each slot holds the smallest offending row (or sequence), recorded with
// atomicMin; "none" is all ones, so a flag block is initialised with cudaMemsetAsync(0xFF).
// (The brief's "int64 initialised to INT64_MAX" with unsigned 64-bit atomics: rows are >= 0,
// so the order is the same, and the initial value can be written by a byte memset.)
constexpr unsigned long long kNoRow = ~0ull;

struct DeviceFlags {
  unsigned long long bad_target;   // a target outside [0, V) that is not ignore_index
  unsigned long long bad_value;    // check_finite: a non-finite lse / log-prob
  unsigned long long seq_order;    // seq_offsets[s + 1] < seq_offsets[s] (or outside [0, N])
  unsigned long long seq_ends;     // seq_offsets[0] != 0 or seq_offsets[S] != N (value 0 when set)
};

__device__ __forceinline__ void flag_row(unsigned long long* slot, int64_t row) {
  atomicMin(slot, (unsigned long long)row);
}

// Copies the flags back (synchronising the stream) and turns them into a Status, in the order
// the CPU backend reports them: bad target, non-finite, then the sequence layout.
inline Status flags_to_status(const DeviceFlags& f, int64_t n) {
  char buf[160];
  if (f.bad_target != kNoRow) {
    snprintf(buf, sizeof(buf), "target id outside [0, V) at row %lld", (long long)f.bad_target);
    return make_status(kTargetRange, buf, (int64_t)f.bad_target);
  }
  if (f.bad_value != kNoRow) {
    snprintf(buf, sizeof(buf),
             "non-finite log-softmax (a NaN/inf logit, or a row that is entirely -inf) at row %lld",
             (long long)f.bad_value);
    return make_status(kNonFinite, buf, (int64_t)f.bad_value);
  }
  if (f.seq_ends != kNoRow) {
    snprintf(buf, sizeof(buf), "seqOffsets must start at 0 and end at N=%lld", (long long)n);
    return make_status(kShape, buf);
  }
  if (f.seq_order != kNoRow) {
    snprintf(buf, sizeof(buf), "seqOffsets must be non-decreasing (at sequence %lld)", (long long)f.seq_order);
    return make_status(kShape, buf);
  }
  return Status{};
}

// ---------------------------------------------------------------------------------------------
// Element conversions on the device. Same rounding as core/dtype.h (round to nearest even);
// the hardware conversions are used where they exist.

template <class T> struct DevElem;
template <> struct DevElem<float> {
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};
template <> struct DevElem<bf16_t> {
  static __device__ __forceinline__ float load(bf16_t v) { return __uint_as_float((uint32_t)v.bits << 16); }
  static __device__ __forceinline__ bf16_t store(float v) {
#if defined(GK_EMU)
    unsigned short h;
    ::emu::ptx::cvt_rn_bf16_f32(h, v);
    return bf16_t{h};
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return bf16_t{h};
#else
    return bf16_t{f32_to_bf16(v)};
#endif
  }
};
template <> struct DevElem<f16_t> {
  static __device__ __forceinline__ float load(f16_t v) {
    float f;
#if defined(GK_EMU)
    ::emu::ptx::cvt_f32_f16(f, v.bits);
#else
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
#endif
    return f;
  }
  static __device__ __forceinline__ f16_t store(float v) {
    unsigned short h;
#if defined(GK_EMU)
    ::emu::ptx::cvt_rn_f16_f32(h, v);
#else
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
#endif
    return f16_t{h};
  }
};

// ---------------------------------------------------------------------------------------------
// 16-byte vectors: float4 for float32 (4 elements), uint4 for the 16-bit types (8 elements).

template <class T> struct Vec {
  static constexpr int kWidth = 16 / (int)sizeof(T);
};

// The elements of 16 raw bytes as floats (for kernels that load or stage the raw vectors
// themselves), and the aligned 16-byte load + unpack.
template <class T>
__device__ __forceinline__ void unpack_vec(const uint4& r, float (&out)[Vec<T>::kWidth]);
template <>
__device__ __forceinline__ void unpack_vec<float>(const uint4& r, float (&out)[4]) {
  out[0] = __uint_as_float(r.x); out[1] = __uint_as_float(r.y); out[2] = __uint_as_float(r.z); out[3] = __uint_as_float(r.w);
}
template <class T>
__device__ __forceinline__ void unpack_vec16(const uint4& r, float (&out)[8]) {
  const uint32_t w[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    out[2 * k] = DevElem<T>::load(T{(uint16_t)(w[k] & 0xFFFFu)});
    out[2 * k + 1] = DevElem<T>::load(T{(uint16_t)(w[k] >> 16)});
  }
}
template <>
__device__ __forceinline__ void unpack_vec<bf16_t>(const uint4& r, float (&out)[8]) { unpack_vec16<bf16_t>(r, out); }
template <>
__device__ __forceinline__ void unpack_vec<f16_t>(const uint4& r, float (&out)[8]) { unpack_vec16<f16_t>(r, out); }

template <class T>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[Vec<T>::kWidth]) {
  GK_VEC_ALIGNED(p);
  unpack_vec<T>(*reinterpret_cast<const uint4*>(p), out);
}

template <class T>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[Vec<T>::kWidth]);
template <>
__device__ __forceinline__ void store_vec<float>(float* p, const float (&in)[4]) {
  GK_VEC_ALIGNED(p);
  *reinterpret_cast<float4*>(p) = make_float4(in[0], in[1], in[2], in[3]);
}
template <class T>
__device__ __forceinline__ void store_vec16(T* p, const float (&in)[8]) {
  uint32_t w[4];
#pragma unroll
  for (int k = 0; k < 4; ++k)
    w[k] = (uint32_t)DevElem<T>::store(in[2 * k]).bits | ((uint32_t)DevElem<T>::store(in[2 * k + 1]).bits << 16);
  GK_VEC_ALIGNED(p);
  *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
}
template <>
__device__ __forceinline__ void store_vec<bf16_t>(bf16_t* p, const float (&in)[8]) { store_vec16(p, in); }
template <>
__device__ __forceinline__ void store_vec<f16_t>(f16_t* p, const float (&in)[8]) { store_vec16(p, in); }

// How a row of v elements starting at `row` splits into a scalar head (elements before the first
// 16-byte boundary), whole 16-byte vectors, and a scalar tail. Works for any v and any
// element-aligned row start. (A start that is not element-aligned would put the whole row on the
// scalar path, whose element accesses then fault on the GPU: the binding rejects such pointers.)
struct RowSplit {
  int64_t head;        // elements [0, head) are scalar
  int64_t nvec;        // vectors cover [head, head + nvec * kWidth)
  int64_t tail_begin;  // elements [tail_begin, v) are scalar
};
template <class T>
__device__ __forceinline__ RowSplit row_split(const void* row, int64_t v) {
  constexpr int W = Vec<T>::kWidth;
  const uintptr_t a = reinterpret_cast<uintptr_t>(row);
  int64_t head = (a % sizeof(T)) != 0 ? v : (int64_t)(((16u - (unsigned)(a & 15u)) & 15u) / sizeof(T));
  if (head > v) head = v;
  const int64_t nvec = (v - head) / W;
  return RowSplit{head, nvec, head + nvec * W};
}

// ---------------------------------------------------------------------------------------------
// Shuffles and reductions. All are deterministic: a fixed butterfly inside a warp, then warp 0
// combines the per-warp values in warp order.

__device__ __forceinline__ float shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ double shfl_xor(double v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ long long shfl_xor(long long v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
// The reduced structs, field by field: one field list each, used by both shuffles.
template <class F>
__device__ __forceinline__ RowStats map_fields(const RowStats& v, F f) {
  return RowStats{f(v.m), f(v.s), f(v.t)};
}
// Structs made of doubles only (LossSums, CorrSums), element by element: no field list to keep
// in step with the struct (a field left out of one would reach the sums as garbage).
template <class T, class F>
__device__ __forceinline__ T map_doubles(const T& v, F f) {
  static_assert(sizeof(T) % sizeof(double) == 0, "a struct of doubles");
  constexpr int kCount = (int)(sizeof(T) / sizeof(double));
  double in[kCount], out[kCount];
  memcpy(in, &v, sizeof(T));
  for (int i = 0; i < kCount; ++i) out[i] = f(in[i]);
  T r;
  memcpy(&r, out, sizeof(T));
  return r;
}
template <class F>
__device__ __forceinline__ LossSums map_fields(const LossSums& v, F f) {
  return map_doubles(v, f);
}
template <class F>
__device__ __forceinline__ CorrSums map_fields(const CorrSums& v, F f) {
  return map_doubles(v, f);
}
__device__ __forceinline__ CorrSums shfl_xor(const CorrSums& v, int m) {
  return map_fields(v, [m](auto x) { return shfl_xor(x, m); });
}
__device__ __forceinline__ RowStats shfl_xor(const RowStats& v, int m) {
  return map_fields(v, [m](auto x) { return shfl_xor(x, m); });
}
__device__ __forceinline__ LossSums shfl_xor(const LossSums& v, int m) {
  return map_fields(v, [m](auto x) { return shfl_xor(x, m); });
}

__device__ __forceinline__ float shfl_idx(float v, int l) { return __shfl_sync(0xffffffffu, v, l); }
__device__ __forceinline__ double shfl_idx(double v, int l) { return __shfl_sync(0xffffffffu, v, l); }
__device__ __forceinline__ long long shfl_idx(long long v, int l) { return __shfl_sync(0xffffffffu, v, l); }
__device__ __forceinline__ RowStats shfl_idx(const RowStats& v, int l) {
  return map_fields(v, [l](auto x) { return shfl_idx(x, l); });
}
__device__ __forceinline__ LossSums shfl_idx(const LossSums& v, int l) {
  return map_fields(v, [l](auto x) { return shfl_idx(x, l); });
}
__device__ __forceinline__ CorrSums shfl_idx(const CorrSums& v, int l) {
  return map_fields(v, [l](auto x) { return shfl_idx(x, l); });
}

struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a + b; }
};
struct MaxOp {
  template <class T>
  __device__ __forceinline__ T operator()(const T& a, const T& b) const { return a > b ? a : b; }
};
struct StatsOp {
  __device__ __forceinline__ RowStats operator()(const RowStats& a, const RowStats& b) const { return merge_stats(a, b); }
};
struct LossSumsOp {
  __device__ __forceinline__ LossSums operator()(const LossSums& a, const LossSums& b) const { return loss_merge(a, b); }
};
struct CorrSumsOp {
  __device__ __forceinline__ CorrSums operator()(const CorrSums& a, const CorrSums& b) const { return corr_merge(a, b); }
};

// Butterfly over the 32 lanes, then lane 0's value to every lane (op(a, b) and op(b, a) may
// differ in the last bit once the compiler contracts a*x + b*y into an FMA, so the lanes are
// not trusted to agree on their own). The whole warp must call it.
template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) v = op(v, shfl_xor(v, m));
  return shfl_idx(v, 0);
}

// Shared storage for block_reduce: one slot per warp plus the broadcast slot.
template <class T>
struct ReduceSmem {
  T warp[32];
  T result;
};

// Reduces v over the kThreads threads of the block and returns the result to every thread.
// All threads of the block must call it (it contains __syncthreads). The same smem may be reused
// by consecutive calls: every thread reads `result` before it can reach the next call's barrier,
// and warp 0 finishes reading `warp[]` before the barrier that any writer of the next call passes.
template <int kThreads, class T, class Op>
__device__ __forceinline__ T block_reduce(T v, Op op, const T& identity, ReduceSmem<T>& sm) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size");
  constexpr int kWarps = kThreads / 32;
  v = warp_reduce(v, op);
  if (kWarps == 1) return v;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sm.warp[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T w = lane < kWarps ? sm.warp[lane] : identity;
    w = warp_reduce(w, op);
    if (lane == 0) sm.result = w;
  }
  __syncthreads();
  return sm.result;
}

// Convenience wrappers.
template <int kThreads, class T>
__device__ __forceinline__ T block_sum(T v, ReduceSmem<T>& sm) {
  return block_reduce<kThreads>(v, SumOp{}, T(0), sm);
}
template <int kThreads, class T>
__device__ __forceinline__ T block_max(T v, ReduceSmem<T>& sm, const T& lowest) {
  return block_reduce<kThreads>(v, MaxOp{}, lowest, sm);
}
__device__ __forceinline__ RowStats empty_stats() { return RowStats{-INFINITY, 0.0f, 0.0f}; }

// exp on the device for the per-element loops: the MUFU ex2 path (__expf, relative error ~2^-21
// for the arguments that matter), or with GK_CUDA_EXACT_EXP the CPU backend's exp_nonpos, so
// that the two backends can be compared formula for formula. Arguments are <= 0 or -inf/NaN.
__device__ __forceinline__ float dev_exp(float x) {
#ifdef GK_CUDA_EXACT_EXP
  return exp_nonpos(x);
#else
  return __expf(x);
#endif
}

}  // namespace detail
}  // namespace cuda
}  // namespace gk
