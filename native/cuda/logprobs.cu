// Spec §1 on the GPU: fused log-softmax + target gather (+ entropy), and its backward.
//
// Layout: a row (one token's V logits) is owned by a group of kRowThreads threads: a whole
// block (256 or 512 threads) when V is large, one warp (8 rows per 256-thread block) when V is
// small. Groups walk the rows with a grid-stride loop over grid x, so any N works (the grid is
// capped at a few waves of resident blocks). Each thread reads its part of the row with 16-byte
// loads (float4 for float32, 8 x 16-bit for bf16/f16), 16 elements in flight per step, plus
// scalar loads for the unaligned head and the tail, so any V and any row start work.
//
// Forward: one pass over the row; every thread keeps an online (max, Σexp, Σexp·(u-max)) and the
// group merges them with merge_stats (core/softmax.h) in a fixed butterfly/warp order, so the
// result is deterministic. The target logit is gathered by the group's first thread.
// Backward: the same statistics are taken from lse/entropy or recomputed (one extra read), then
// one read + one write of the row; each element is read and then written by the same thread, so
// grad may alias the logits.
#include "logprobs.cuh"

namespace gk {
namespace cuda {
namespace {

using detail::DevElem;
using detail::DeviceFlags;
using detail::ReduceSmem;
using detail::RowSplit;
using detail::Vec;
using detail::dev_exp;
using detail::kNoRow;

// ---------------------------------------------------------------------------------------------
// Per-thread online softmax statistics (relative to the running max m, as RowStats).

struct Online {
  float m, s, t, s2;  // s2 = Σ exp(2(u - m)) (spec §9.6) when kP2
};

// Adds N elements: one rescale when their max exceeds the running max, then N exps.
// -inf elements add 0 (never NaN, also while the running max is still -inf); a NaN element makes
// s NaN; a +inf element makes s NaN (inf - inf) — the CPU backend's "non-finite row" result.
template <bool kEntropy, bool kP2, int N>
__device__ __forceinline__ void online_add(Online& st, const float (&x)[N]) {
  float mc = x[0];
#pragma unroll
  for (int k = 1; k < N; ++k) mc = fmaxf(mc, x[k]);  // fmaxf skips NaN; exp(NaN) catches it below
  if (mc > st.m) {
    const float d = st.m - mc;  // -inf while st.m is -inf (then s == t == 0)
    const float e = dev_exp(d);
    if (kEntropy) st.t = st.s == 0.0f ? 0.0f : e * (st.t + d * st.s);
    st.s *= e;
    if (kP2) st.s2 *= e * e;
    st.m = mc;
  }
  const float ms = st.m == -INFINITY ? 0.0f : st.m;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    const float d = x[k] - ms;
    const float e = dev_exp(d);
    st.s += e;
    if (kEntropy) st.t += entropy_term(e, d);
    if (kP2) st.s2 += e * e;
  }
}

// Elements per step of the vector loop: 16 (4 float4 or 2 uint4 loads in flight per thread).
template <class T>
struct Step {
  static constexpr int kWidth = Vec<T>::kWidth;
  static constexpr int kUnroll = 16 / kWidth;
};

// Statistics of the part of a row that thread `tid` of `nth` sees.
template <class T, bool kEntropy, bool kP2 = false>
__device__ __forceinline__ Online thread_online(const T* row, int64_t v, float inv_t, int tid, int nth) {
  constexpr int W = Step<T>::kWidth, U = Step<T>::kUnroll;
  Online st{-INFINITY, 0.0f, 0.0f, 0.0f};
  const RowSplit sp = detail::row_split<T>(row, v);
  for (int64_t j = tid; j < sp.head; j += nth) {
    const float x[1] = {DevElem<T>::load(row[j]) * inv_t};
    online_add<kEntropy, kP2>(st, x);
  }
  const T* body = row + sp.head;
  int64_t i = tid;
  for (; i + (int64_t)(U - 1) * nth < sp.nvec; i += (int64_t)U * nth) {
    float x[U * W];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float y[W];
      detail::load_vec<T>(body + (i + (int64_t)u * nth) * W, y);
#pragma unroll
      for (int k = 0; k < W; ++k) x[u * W + k] = y[k] * inv_t;
    }
    online_add<kEntropy, kP2>(st, x);
  }
  for (; i < sp.nvec; i += nth) {
    float x[W];
    detail::load_vec<T>(body + i * W, x);
#pragma unroll
    for (int k = 0; k < W; ++k) x[k] *= inv_t;
    online_add<kEntropy, kP2>(st, x);
  }
  for (int64_t j = sp.tail_begin + tid; j < v; j += nth) {
    const float x[1] = {DevElem<T>::load(row[j]) * inv_t};
    online_add<kEntropy, kP2>(st, x);
  }
  return st;
}
template <class T, bool kEntropy>
__device__ __forceinline__ RowStats thread_stats(const T* row, int64_t v, float inv_t, int tid, int nth) {
  const Online st = thread_online<T, kEntropy>(row, v, inv_t, tid, nth);
  return RowStats{st.m, st.s, st.t};
}

// Merges the statistics of the row's thread group; every thread of the group gets the result.
// A row with no finite maximum (entirely -inf, or NaN only) gets s = t = NaN like the CPU.
template <int kBlock, int kRowThreads>
__device__ __forceinline__ RowStats group_stats(RowStats st, ReduceSmem<RowStats>& sm) {
  if constexpr (kRowThreads == 32) {
    st = detail::warp_reduce(st, detail::StatsOp{});
  } else {
    static_assert(kRowThreads == kBlock, "a row is owned by a warp or by the whole block");
    st = detail::block_reduce<kBlock>(st, detail::StatsOp{}, detail::empty_stats(), sm);
  }
  if (st.m == -INFINITY) st.s = st.t = NAN;
  return st;
}

__device__ __forceinline__ int64_t load_target(const void* t, bool i32, int64_t r) {
  return i32 ? (int64_t)(static_cast<const int32_t*>(t)[r]) : static_cast<const int64_t*>(t)[r];
}

// Spec §1's ∂L/∂z for one element: core/softmax.h grad_elem with the device exp.
__device__ __forceinline__ float grad_value(float u, float lse, float h, float gl, float gh, bool is_target,
                                            float inv_t) {
#ifdef GK_CUDA_EXACT_EXP
  return grad_elem(u, lse, h, gl, gh, is_target, inv_t);
#else
  const float lp = u - lse;
  const float p = __expf(lp > 0.0f ? 0.0f : lp);  // NaN stays NaN
  const float lpc = lp < -104.0f ? -104.0f : lp;
  const float g = gl * ((is_target ? 1.0f : 0.0f) - p) - gh * p * (lpc + h);
  return g * inv_t;
#endif
}

// g[j] = grad of z[j] over the row. The vector partition follows z's alignment; stores are
// vectors when g has the same alignment (always when g aliases z), else scalars.
template <class T>
__device__ __forceinline__ void write_grad(const T* z, T* g, int64_t v, int64_t y, float lse, float h, float gl,
                                           float gh, float inv_t, int tid, int nth) {
  constexpr int W = Step<T>::kWidth, U = Step<T>::kUnroll;
  const RowSplit sp = detail::row_split<T>(z, v);
  const bool vec_store = (reinterpret_cast<uintptr_t>(g) & 15u) == (reinterpret_cast<uintptr_t>(z) & 15u);
  for (int64_t j = tid; j < sp.head; j += nth)
    g[j] = DevElem<T>::store(grad_value(DevElem<T>::load(z[j]) * inv_t, lse, h, gl, gh, j == y, inv_t));
  const T* zb = z + sp.head;
  T* gb = g + sp.head;
  const int64_t yb = y - sp.head;  // target index relative to the body
  int64_t i = tid;
  for (; i + (int64_t)(U - 1) * nth < sp.nvec; i += (int64_t)U * nth) {
    float x[U][W];
#pragma unroll
    for (int u = 0; u < U; ++u) detail::load_vec<T>(zb + (i + (int64_t)u * nth) * W, x[u]);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t j0 = (i + (int64_t)u * nth) * W;
      float o[W];
#pragma unroll
      for (int k = 0; k < W; ++k) o[k] = grad_value(x[u][k] * inv_t, lse, h, gl, gh, j0 + k == yb, inv_t);
      if (vec_store) {
        detail::store_vec<T>(gb + j0, o);
      } else {
#pragma unroll
        for (int k = 0; k < W; ++k) gb[j0 + k] = DevElem<T>::store(o[k]);
      }
    }
  }
  for (; i < sp.nvec; i += nth) {
    const int64_t j0 = i * W;
    float x[W], o[W];
    detail::load_vec<T>(zb + j0, x);
#pragma unroll
    for (int k = 0; k < W; ++k) o[k] = grad_value(x[k] * inv_t, lse, h, gl, gh, j0 + k == yb, inv_t);
    if (vec_store) {
      detail::store_vec<T>(gb + j0, o);
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) gb[j0 + k] = DevElem<T>::store(o[k]);
    }
  }
  for (int64_t j = sp.tail_begin + tid; j < v; j += nth)
    g[j] = DevElem<T>::store(grad_value(DevElem<T>::load(z[j]) * inv_t, lse, h, gl, gh, j == y, inv_t));
}

template <class T>
__device__ __forceinline__ void zero_row(T* g, int64_t v, int tid, int nth) {
  constexpr int W = Vec<T>::kWidth;
  const RowSplit sp = detail::row_split<T>(g, v);
  const T zero = DevElem<T>::store(0.0f);
  for (int64_t j = tid; j < sp.head; j += nth) g[j] = zero;
  T* gb = g + sp.head;
  float o[W];
#pragma unroll
  for (int k = 0; k < W; ++k) o[k] = 0.0f;
  for (int64_t i = tid; i < sp.nvec; i += nth) detail::store_vec<T>(gb + i * W, o);
  for (int64_t j = sp.tail_begin + tid; j < v; j += nth) g[j] = zero;
}

// ---------------------------------------------------------------------------------------------
// Kernels.

// The logits rows and targets both kernels read, taken from a LogitsView.
struct RowParams {
  const void* logits;
  const void* targets;
  int64_t n, v;
  int64_t ignore_index;
  float inv_t;
  bool target_i32;
};

RowParams row_params(const LogitsView& x) {
  return RowParams{x.logits, x.targets, x.n, x.v, x.ignore_index, 1.0f / x.temperature, x.target_dtype == kI32};
}

struct FwdParams : RowParams {
  bool check_finite;
  float* logp;
  double* logp64;  // optional: the log-probs before rounding (the fused op's loss step reads them)
  float* entropy;  // null: not computed (kEntropy false)
  float* lse;
  float* sum_p2;   // null: not computed (kP2 false)
  unsigned long long* bad_target;
  unsigned long long* bad_value;
};

template <class T, int kBlock, int kRowThreads, bool kEntropy, bool kP2>
__global__ void __launch_bounds__(kBlock) fwd_kernel(const FwdParams p) {
  constexpr int kRows = kBlock / kRowThreads;
  GK_SHARED(sm, ReduceSmem<RowStats>);
  GK_SHARED(sm2, ReduceSmem<float>);
  const int sub = (int)threadIdx.x / kRowThreads, tid = (int)threadIdx.x % kRowThreads;
  const bool lead = tid == 0;
  // Every thread of a group has the same r and y, so the branches below are group-uniform.
  for (int64_t r = (int64_t)blockIdx.x * kRows + sub; r < p.n; r += (int64_t)gridDim.x * kRows) {
    const int64_t y = load_target(p.targets, p.target_i32, r);
    if (y == p.ignore_index) {
      if (lead) {
        p.logp[r] = 0.0f;
        if (p.logp64) p.logp64[r] = 0.0;
        if (kEntropy) p.entropy[r] = 0.0f;
        if (p.lse) p.lse[r] = 0.0f;
        if (kP2) p.sum_p2[r] = 0.0f;
      }
      continue;
    }
    if (y < 0 || y >= p.v) {  // never read: report the row and write NaN
      if (lead) {
        p.logp[r] = NAN;
        if (p.logp64) p.logp64[r] = NAN;
        if (kEntropy) p.entropy[r] = NAN;
        if (p.lse) p.lse[r] = NAN;
        if (kP2) p.sum_p2[r] = NAN;
        detail::flag_row(p.bad_target, r);
      }
      continue;
    }
    const T* row = static_cast<const T*>(p.logits) + r * p.v;
    const Online o = thread_online<T, kEntropy, kP2>(row, p.v, p.inv_t, tid, kRowThreads);
    RowStats st = group_stats<kBlock, kRowThreads>(RowStats{o.m, o.s, o.t}, sm);
    float s2 = 0.0f;
    if (kP2) {
      // Each thread's Σ exp(2(u - m_thread)) moved to the row's max, then summed over the group.
      s2 = o.m == -INFINITY ? 0.0f : o.s2 * dev_exp(2.0f * (o.m - st.m));
      if constexpr (kRowThreads == 32) s2 = detail::warp_reduce(s2, detail::SumOp{});
      else s2 = detail::block_reduce<kBlock>(s2, detail::SumOp{}, 0.0f, sm2);
    }
    if (lead) {
      if (kP2) p.sum_p2[r] = (float)((double)s2 / ((double)st.s * (double)st.s));
      const float ut = DevElem<T>::load(row[y]) * p.inv_t;
      const RowResult res = finalize_row(st, ut);
      p.logp[r] = res.logp;
      if (p.logp64) p.logp64[r] = res.logp64;
      if (kEntropy) p.entropy[r] = res.entropy;
      if (p.lse) p.lse[r] = res.lse;
      if (p.check_finite && !(isfinite(res.lse) && isfinite(res.logp))) detail::flag_row(p.bad_value, r);
    }
  }
}

struct BwdParams : RowParams {
  void* grad;
  const float* gl;
  const float* gh;
  const float* lse;
  const float* entropy;
  const DeviceFlags* abort_if;
  unsigned long long* bad_target;
};

template <class T, int kBlock, int kRowThreads>
__global__ void __launch_bounds__(kBlock) bwd_kernel(const BwdParams p) {
  if (p.abort_if) {  // written by earlier kernels on the stream, never by this one
    const DeviceFlags f = *p.abort_if;
    if (f.bad_target != kNoRow || f.bad_value != kNoRow || f.seq_order != kNoRow || f.seq_ends != kNoRow) return;
  }
  constexpr int kRows = kBlock / kRowThreads;
  GK_SHARED(sm, ReduceSmem<RowStats>);
  const int sub = (int)threadIdx.x / kRowThreads, tid = (int)threadIdx.x % kRowThreads;
  for (int64_t r = (int64_t)blockIdx.x * kRows + sub; r < p.n; r += (int64_t)gridDim.x * kRows) {
    T* g = static_cast<T*>(p.grad) + r * p.v;
    const T* z = static_cast<const T*>(p.logits) + r * p.v;
    const int64_t y = load_target(p.targets, p.target_i32, r);
    const float gl = p.gl ? p.gl[r] : 0.0f;
    const float gh = p.gh ? p.gh[r] : 0.0f;
    // As the CPU: a bad target is reported whatever gl/gh are; its row, ignored rows and rows
    // with gl = gh = 0 are zeros.
    if (y != p.ignore_index && (y < 0 || y >= p.v)) {
      if (tid == 0 && p.bad_target) detail::flag_row(p.bad_target, r);
      zero_row<T>(g, p.v, tid, kRowThreads);
      continue;
    }
    if (y == p.ignore_index || (gl == 0.0f && gh == 0.0f)) {
      zero_row<T>(g, p.v, tid, kRowThreads);
      continue;
    }
    float lse, h = 0.0f;
    if (p.lse && (p.entropy || gh == 0.0f)) {
      lse = p.lse[r];
      h = p.entropy ? p.entropy[r] : 0.0f;
    } else {
      RowStats st = gh != 0.0f ? thread_stats<T, true>(z, p.v, p.inv_t, tid, kRowThreads)
                               : thread_stats<T, false>(z, p.v, p.inv_t, tid, kRowThreads);
      st = group_stats<kBlock, kRowThreads>(st, sm);
      const RowResult res = finalize_row(st, 0.0f);
      lse = res.lse;
      h = res.entropy;
    }
    write_grad<T>(z, g, p.v, y, lse, h, gl, gh, p.inv_t, tid, kRowThreads);
  }
}

// ---------------------------------------------------------------------------------------------
// Launch configuration. Rows of up to kWarpRowMaxV elements go one per warp; longer rows one per
// block, 256 threads up to kBlock256MaxV, else 512. The grid is one group of rows per block,
// capped at 4 waves of resident blocks (grid-stride beyond that).

// Before an in-place backward: flags the smallest bad target, so that the backward kernel (its
// abort_if) writes nothing over the logits of a call that fails.
__global__ void __launch_bounds__(256) check_targets_kernel(const RowParams p, unsigned long long* bad_target) {
  for (int64_t r = (int64_t)blockIdx.x * 256 + threadIdx.x; r < p.n; r += (int64_t)gridDim.x * 256) {
    const int64_t y = load_target(p.targets, p.target_i32, r);
    if (y != p.ignore_index && (y < 0 || y >= p.v)) detail::flag_row(bad_target, r);
  }
}

constexpr int64_t kWarpRowMaxV = 2048;
constexpr int64_t kBlock256MaxV = 32768;

template <class Kernel>
int resident_blocks(Kernel k, int threads) {
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, threads, 0) != cudaSuccess || n < 1) {
    cudaGetLastError();
    n = 1;
  }
  return n;
}

template <class T, int kBlock, int kRowThreads, bool kEntropy, bool kP2>
Status launch_fwd_cfg(const FwdParams& p, cudaStream_t s) {
  constexpr int kRows = kBlock / kRowThreads;
  static const int per_sm = resident_blocks(fwd_kernel<T, kBlock, kRowThreads, kEntropy, kP2>, kBlock);
  const unsigned grid = detail::grid_for((p.n + kRows - 1) / kRows, per_sm * 4);
  GK_LAUNCH(grid, kBlock, 0, s, fwd_kernel<T, kBlock, kRowThreads, kEntropy, kP2>)(p);
  GK_CUDA_CHECK_LAUNCH();
  return Status{};
}

template <class T, bool kEntropy, bool kP2>
Status launch_fwd_t(const FwdParams& p, cudaStream_t s) {
  if (p.v <= kWarpRowMaxV) return launch_fwd_cfg<T, 256, 32, kEntropy, kP2>(p, s);
  if (p.v <= kBlock256MaxV) return launch_fwd_cfg<T, 256, 256, kEntropy, kP2>(p, s);
  return launch_fwd_cfg<T, 512, 512, kEntropy, kP2>(p, s);
}

template <class T>
Status launch_fwd(const FwdParams& p, cudaStream_t s) {
  if (p.sum_p2) return p.entropy ? launch_fwd_t<T, true, true>(p, s) : launch_fwd_t<T, false, true>(p, s);
  return p.entropy ? launch_fwd_t<T, true, false>(p, s) : launch_fwd_t<T, false, false>(p, s);
}

template <class T, int kBlock, int kRowThreads>
Status launch_bwd_cfg(const BwdParams& p, cudaStream_t s) {
  constexpr int kRows = kBlock / kRowThreads;
  static const int per_sm = resident_blocks(bwd_kernel<T, kBlock, kRowThreads>, kBlock);
  const unsigned grid = detail::grid_for((p.n + kRows - 1) / kRows, per_sm * 4);
  GK_LAUNCH(grid, kBlock, 0, s, bwd_kernel<T, kBlock, kRowThreads>)(p);
  GK_CUDA_CHECK_LAUNCH();
  return Status{};
}

template <class T>
Status launch_bwd(const BwdParams& p, cudaStream_t s) {
  if (p.v <= kWarpRowMaxV) return launch_bwd_cfg<T, 256, 32>(p, s);
  if (p.v <= kBlock256MaxV) return launch_bwd_cfg<T, 256, 256>(p, s);
  return launch_bwd_cfg<T, 512, 512>(p, s);
}

Status check_view(const LogitsView& x) {
  if (x.dtype != kF32 && x.dtype != kBF16 && x.dtype != kF16)
    return detail::make_status(kDtype, "logits must be float32, bfloat16 or float16");
  if (x.target_dtype != kI32 && x.target_dtype != kI64)
    return detail::make_status(kDtype, "targets must be int32 or int64");
  if (x.n < 0 || x.v < 0) return detail::make_status(kShape, "negative logits shape");
  if (x.n > 0 && (!x.logits || !x.targets)) return detail::make_status(kInvalid, "logits and targets are required");
  return Status{};
}

// Allocates and clears a flag block, runs `enqueue`, reads the flags back (synchronising).
template <class Fn>
Status run_with_flags(int64_t n, cudaStream_t s, Fn enqueue) {
  detail::DeviceScratch fl;
  GK_CUDA_CHECK(fl.alloc(sizeof(DeviceFlags), s));
  GK_CUDA_CHECK(cudaMemsetAsync(fl.as<void>(), 0xFF, sizeof(DeviceFlags), s));
  GK_RETURN_IF_ERROR(enqueue(fl.as<DeviceFlags>()));
  DeviceFlags h;
  GK_CUDA_CHECK(detail::finish_op(&h, fl.as<void>(), sizeof(h), s));
  return detail::flags_to_status(h, n);
}

}  // namespace

namespace detail {

Status enqueue_token_logprobs(const LogProbArgs& a, DeviceFlags* flags, cudaStream_t s) {
  const LogitsView& x = a.in;
  GK_RETURN_IF_ERROR(check_view(x));
  if (!a.logp && x.n > 0) return make_status(kInvalid, "logp output is required");
  if (x.n == 0) return Status{};
  FwdParams p;
  static_cast<RowParams&>(p) = row_params(x);
  p.check_finite = a.check_finite;
  p.logp = a.logp;
  p.logp64 = a.logp64;
  p.entropy = a.entropy;
  p.lse = a.lse;
  p.sum_p2 = a.sum_p2;
  p.bad_target = &flags->bad_target;
  p.bad_value = &flags->bad_value;
  if (x.dtype == kBF16) return launch_fwd<bf16_t>(p, s);
  if (x.dtype == kF16) return launch_fwd<f16_t>(p, s);
  return launch_fwd<float>(p, s);
}

Status enqueue_token_logprobs_backward(const LogProbBackwardArgs& a, const DeviceFlags* abort_if,
                                       unsigned long long* bad_target_out, cudaStream_t s) {
  const LogitsView& x = a.in;
  GK_RETURN_IF_ERROR(check_view(x));
  if (!a.grad && x.n > 0) return make_status(kInvalid, "grad output is required");
  if (x.n == 0) return Status{};
  BwdParams p;
  static_cast<RowParams&>(p) = row_params(x);
  p.grad = a.grad;
  p.gl = a.gl;
  p.gh = a.gh;
  p.lse = a.lse;
  p.entropy = a.entropy;
  p.abort_if = abort_if;
  p.bad_target = bad_target_out;
  if (x.dtype == kBF16) return launch_bwd<bf16_t>(p, s);
  if (x.dtype == kF16) return launch_bwd<f16_t>(p, s);
  return launch_bwd<float>(p, s);
}

}  // namespace detail

Status token_logprobs(const LogProbArgs& a, cudaStream_t stream) {
  GK_RETURN_IF_ERROR(check_view(a.in));
  if (a.in.n == 0) return Status{};
  return run_with_flags(a.in.n, stream,
                        [&](DeviceFlags* f) { return detail::enqueue_token_logprobs(a, f, stream); });
}

Status token_logprobs_backward(const LogProbBackwardArgs& a, cudaStream_t stream) {
  GK_RETURN_IF_ERROR(check_view(a.in));
  if (a.in.n == 0) return Status{};
  return run_with_flags(a.in.n, stream, [&](DeviceFlags* f) {
    // In place, a failed call must leave the logits as they were (the CPU does the same).
    const bool in_place = a.grad == a.in.logits;
    if (in_place) {
      GK_LAUNCH(detail::grid_for((a.in.n + 255) / 256, 8), 256, 0, stream, check_targets_kernel)(row_params(a.in), &f->bad_target);
      GK_CUDA_CHECK_LAUNCH();
    }
    return detail::enqueue_token_logprobs_backward(a, in_place ? f : nullptr, &f->bad_target, stream);
  });
}

}  // namespace cuda
}  // namespace gk
