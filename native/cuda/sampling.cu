// Spec §8 on the GPU: sampling with log-probs, a version of native/cpu/sampling.cc that draws the
// same tokens.
//
// What "the same token" takes. The CPU draws u = Philox(seed; row, step) in [0, 1) and returns
// the first kept token j (index order) whose running sum Σ_{i<=j} e_i exceeds u · Σ_kept e_i,
// where e_i = exp_nonpos(z_i / T - max) (core/softmax.h) and the sums are float64. To agree, the
// GPU must (a) compute every e_i bit for bit — core/softmax.h's exp_nonpos with each product and
// sum rounded separately (__fmul_rn/__fadd_rn; nvcc would otherwise fuse them into FMAs, which the
// CPU build never does) and with the row's final max, so a row is read at least twice: once for
// the max, once for the e_i — and (b) sum them as accurately as float64. The e_i are summed in
// float64 per chunk; chunk sums are then converted exactly to 2^-90 fixed point (unsigned
// __int128), in which every prefix, comparison and in-chunk scan is exact, associative and
// monotone. The drawn token can therefore differ from the CPU's only when u · Σ e falls within a
// few float64 ulps of a CDF boundary (the CPU's sequential float64 sums round differently); the
// same holds for topP's cut (below). Everything is deterministic: no float atomics, fixed
// reduction orders, integer atomics only.
//
// Layout. One block per row (128 threads for V <= 8192, else 512), grid-stride over the rows.
// A row is a scalar head (before the first 16-byte boundary), 16-byte vectors, and a scalar tail
// (detail::row_split, so any V and any alignment work). The vectors are cut into 2 KB segments
// (32 lanes x 4 vectors); warp w owns a contiguous range of segments, grouped into at most 32
// chunks per warp (one segment per chunk up to V = 512K bf16 / 256K f32 with 512 threads). Chunk 0
// is the head, the last chunk the tail. The first pass also stages the first segments of every
// warp in shared memory (as much of the row as fits next to a second block on the SM, in steps of
// 32 KB: 96 KB on an H100, i.e. the whole row for V <= 48K bf16 / 24K f32), so later passes
// re-read those from shared memory and only the rest from global memory (partly from L2).
//
// Passes (each "pass" reads the row once; the re-scan reads one chunk, 1-2 K elements):
//   plain (no topK/topP/minP):  A: max (+ NaN/+inf check); B: e_i and float64 chunk sums;
//                               pick the crossing chunk (warp 0, fixed point), re-scan it.
//                               = 2 passes + 1 chunk.
//   greedy:                     A with the first index of the max; B: Σ e_i (for the log-prob).
//                               = 2 passes.
//   filtered:                   A (+ count of kept tokens);
//     topK (0 < K < kept):      4 radix passes on the order-preserving key of u (8-bit digits,
//                               count histograms, integer shared atomics) give the K-th largest
//                               value; if only some of its ties fit, 1 pass + 1 chunk finds the
//                               index of the last tie kept (ties go to the lower index);
//     topP (< 1):               4 radix passes with mass histograms (e_i in 2^-90 fixed point,
//                               128-bit sums by two 64-bit shared atomics with carry: exact, so
//                               order-independent) find the largest value K such that the mass of
//                               the tokens with u >= K reaches topP · Z (Z = the top-K mass), then
//                               how many of K's ties are needed (1 pass + 1 chunk when not all);
//     minP:                     a per-element test (u >= max + log(minP), log taken on the host
//                               with the CPU's std::log), no pass;
//     final:                    1 pass (chunk sums of the kept mass and Σ e_i of the whole row)
//                               + 1 chunk.
//                               = 2 passes + up to 10 more with topK and topP.
// Pass B of the plain path is compute-bound on bf16: exp_nonpos in separately rounded float ops
// is ~25 instructions per element, more than the ~20 an H100 can issue per bf16 element at full
// HBM bandwidth, so the plain path cannot reach one-read speed while matching the CPU's draws
// (the check program's BENCH lines print the measured fraction).
//
// Outputs. logp = finalize_row({max, (float)Σ_all e_i}, u_tok).logp — the CPU's formula on the
// same statistics (Σ e_i accurate to float64, so the float s equals the CPU's up to its float32
// lane rounding); logp_truncated = (u_tok - max) - log(Σ_kept e_i) in float64 rounded once, as
// the CPU. Not bit-identical to cuda::token_logprobs, which sums __expf terms.
#include "sampling.cuh"

#include <climits>
#include <cmath>

#include "../core/fixedpoint.h"
#include "../core/philox.h"

namespace gk {
namespace cuda {
namespace {

using detail::DevElem;
using detail::ReduceSmem;
using detail::RowSplit;
using detail::Vec;

constexpr int kU = 4;                       // 16-byte vectors per lane per segment
constexpr int kSegVecs = 32 * kU;           // vectors per segment
constexpr int kSegBytes = kSegVecs * 16;    // 2 KB
constexpr int kChunksPerWarp = 32;
constexpr unsigned kFull = 0xffffffffu;

enum Mode { kPlain = 0, kGreedy = 1, kFiltered = 2 };

// ---------------------------------------------------------------------------------------------
// Per-element math, bit-identical to the CPU backend.

// u = z / T as the CPU: one rounded product (never fused with what follows).
__device__ __forceinline__ float scaled(float z, float inv_t) { return __fmul_rn(z, inv_t); }

// core/softmax.h exp_nonpos, bit for bit, for x <= 0 or x = -inf (x is never NaN here: rows with a
// NaN are rejected before any e_i is needed). The clamp is a max (equal to the CPU's select for
// non-NaN x), and the CPU's two final selects are implied: for x below the clamp or an underflowing
// result e <= 0, the scale is +0 and so is p * scale (p is in [0.7, 1.5]). Every product and sum is
// rounded on its own, as in the CPU build (no FMA), except c - n * ln2_hi, whose product is exact.
// (Checked exhaustively against exp_nonpos for every float in [-inf, 0]: identical bits.)
__device__ __forceinline__ float exp_np(float x) {
  const float c = fmaxf(x, -103.9f);
  const float t = __fmul_rn(c, 1.44269504088896341f);
  const float shift = 12582912.0f;
  const float ts = __fadd_rn(t, shift);
  const float n = __fsub_rn(ts, shift);
  const int32_t ni = (int32_t)(__float_as_uint(ts) - __float_as_uint(shift));
  float r = __fmaf_rn(-n, 0.693145751953125f, c);  // n * ln2_hi is exact (|n| <= 150): one rounding either way
  r = __fsub_rn(r, __fmul_rn(n, 1.428606765330187045e-06f));
  float p = 1.98412698e-4f;
  p = __fadd_rn(__fmul_rn(p, r), 1.38888889e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 8.33333333e-3f);
  p = __fadd_rn(__fmul_rn(p, r), 4.16666667e-2f);
  p = __fadd_rn(__fmul_rn(p, r), 1.66666667e-1f);
  p = __fadd_rn(__fmul_rn(p, r), 0.5f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  p = __fadd_rn(__fmul_rn(p, r), 1.0f);
  const int32_t e = ni + 127;
  return __fmul_rn(p, __uint_as_float((uint32_t)(e > 0 ? e : 0) << 23));
}

// Fixed point (core/fixedpoint.h): fx_of_float, fx_of_double, fx_to_double.

__device__ __forceinline__ u128 make_u128(unsigned long long lo, unsigned long long hi) {
  return ((u128)hi << 64) | (u128)lo;
}
__device__ __forceinline__ u128 shfl_u128(u128 x, int src) {
  return make_u128(__shfl_sync(kFull, (unsigned long long)x, src), __shfl_sync(kFull, (unsigned long long)(x >> 64), src));
}
__device__ __forceinline__ u128 shfl_up_u128(u128 x, int d) {
  return make_u128(__shfl_up_sync(kFull, (unsigned long long)x, d),
                   __shfl_up_sync(kFull, (unsigned long long)(x >> 64), d));
}
__device__ __forceinline__ u128 shfl_down_u128(u128 x, int d) {
  return make_u128(__shfl_down_sync(kFull, (unsigned long long)x, d),
                   __shfl_down_sync(kFull, (unsigned long long)(x >> 64), d));
}
// Inclusive prefix sum over the warp (exact: integers).
__device__ __forceinline__ u128 warp_incl_scan(u128 x, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const u128 y = shfl_up_u128(x, d);
    if (lane >= d) x += y;
  }
  return x;
}
// Σ over the lanes at or above this one (exact).
__device__ __forceinline__ u128 warp_suffix_scan(u128 x, int lane) {
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const u128 y = shfl_down_u128(x, d);
    if (lane + d < 32) x += y;
  }
  return x;
}

// 128-bit sum in shared memory with two 64-bit atomics (the carry of the low word is counted
// exactly once, by the add that wraps it): the final value does not depend on the order.
__device__ __forceinline__ void atomic_add_u128(unsigned long long* lo, unsigned long long* hi, u128 x) {
  const unsigned long long xl = (unsigned long long)x, xh = (unsigned long long)(x >> 64);
  unsigned long long carry = 0;
  if (xl) {
    const unsigned long long old = atomicAdd(lo, xl);
    carry = old + xl < old ? 1ull : 0ull;
  }
  if (xh + carry) atomicAdd(hi, xh + carry);
}

// ---------------------------------------------------------------------------------------------
// Row geometry and the element visitor.

template <class T>
struct Geo {
  const T* row;
  int64_t v, head, nvec, tail_begin;
  int64_t nseg;  // segments of kSegVecs vectors (the last may be partial)
  int64_t G;     // segments per chunk
  __device__ __forceinline__ int64_t seg_lo(int w, int nwarps) const { return nseg * w / nwarps; }
};

template <class T, int kWarps>
__device__ __forceinline__ Geo<T> make_geo(const T* row, int64_t v) {
  const RowSplit sp = detail::row_split<T>(row, v);
  Geo<T> g;
  g.row = row;
  g.v = v;
  g.head = sp.head;
  g.nvec = sp.nvec;
  g.tail_begin = sp.tail_begin;
  g.nseg = (sp.nvec + kSegVecs - 1) / kSegVecs;
  const int64_t maxl = (g.nseg + kWarps - 1) / kWarps;
  g.G = maxl <= kChunksPerWarp ? 1 : (maxl + kChunksPerWarp - 1) / kChunksPerWarp;
  return g;
}

// The first `segs` segments of every warp's range live in shared memory after the first pass.
struct Stage {
  uint4* base;
  int64_t segs;
};

// The raw vectors of segment s (owned by warp w) for this lane: ok[u] when vector
// s * kSegVecs + u * 32 + lane exists. `write`: read global memory and fill the stage slot.
template <class T, int kWarps>
__device__ __forceinline__ void load_seg(const Geo<T>& g, const Stage& st, int w, int64_t s, int lane, bool write,
                                         uint4 (&raw)[kU], bool (&ok)[kU]) {
  const int64_t t = s - g.seg_lo(w, kWarps);
  uint4* slot = t < st.segs ? st.base + ((int64_t)w * st.segs + t) * kSegVecs : nullptr;
  const uint4* body = reinterpret_cast<const uint4*>(g.row + g.head);
#pragma unroll
  for (int u = 0; u < kU; ++u) {
    const int64_t vi = s * kSegVecs + u * 32 + lane;
    ok[u] = vi < g.nvec;
    if (ok[u]) {
      if (slot && !write) {
        raw[u] = slot[u * 32 + lane];
      } else {
        raw[u] = __ldg(body + vi);
        if (slot) slot[u * 32 + lane] = raw[u];
      }
    }
  }
}

// Calls f(slot, j, u) for every element j of the row this thread sees (u = z_j / T; slot in
// [0, kU) for independent accumulators) and, warp-collectively, chunk_end(c) after the last element
// of each chunk c this warp owns: chunk 0 (the head) and the last chunk (the tail) belong to warp 0.
// The first pass (`write`: it fills the stage) visits a lane's elements in increasing j. Later
// passes visit a warp's chunks last to first (each chunk still in increasing j), so that the
// segments the first pass read last, which are not staged, are read again while still in L2.
template <class T, int kWarps, class F, class C>
__device__ __forceinline__ void visit_row(const Geo<T>& g, const Stage& st, bool write, float inv_t, F& f,
                                          C& chunk_end) {
  constexpr int W = Vec<T>::kWidth;
  constexpr int kNch = 2 + kWarps * kChunksPerWarp;
  const int lane = (int)threadIdx.x & 31, w = (int)threadIdx.x >> 5;
  if (w == 0) {
    for (int64_t j = lane; j < g.head; j += 32) f(0, j, scaled(DevElem<T>::load(g.row[j]), inv_t));
    chunk_end(0);
  }
  const int64_t lo = g.seg_lo(w, kWarps), hi = g.seg_lo(w + 1, kWarps);
  const int nck = (int)((hi - lo + g.G - 1) / g.G);  // <= kChunksPerWarp
  for (int i = 0; i < nck; ++i) {
    const int k = write ? i : nck - 1 - i;
    const int64_t c0 = lo + (int64_t)k * g.G;
    const int64_t c1 = c0 + g.G < hi ? c0 + g.G : hi;
    for (int64_t s = c0; s < c1; ++s) {
      uint4 raw[kU];
      bool ok[kU];
      load_seg<T, kWarps>(g, st, w, s, lane, write, raw, ok);
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        if (!ok[u]) continue;
        float z[W];
        detail::unpack_vec<T>(raw[u], z);
        const int64_t j0 = g.head + (s * kSegVecs + u * 32 + lane) * W;
#pragma unroll
        for (int e = 0; e < W; ++e) f(u, j0 + e, scaled(z[e], inv_t));
      }
    }
    chunk_end(1 + w * kChunksPerWarp + k);
  }
  if (w == 0) {
    for (int64_t j = g.tail_begin + lane; j < g.v; j += 32) f(0, j, scaled(DevElem<T>::load(g.row[j]), inv_t));
    chunk_end(kNch - 1);
  }
}

struct NoChunks {
  __device__ __forceinline__ void operator()(int) const {}
};

// ---------------------------------------------------------------------------------------------
// Shared memory (all of it dynamic: the fixed part, then the stage).

struct RadixSmem {
  unsigned long long cnt[256], mlo[256], mhi[256];  // count and 128-bit mass histograms
  u128 above, eq, thr;
  unsigned long long eq_cnt;
  int digit, ok;
};

template <int kThreads>
struct SmemBase {
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kNch = 2 + kWarps * kChunksPerWarp;
  double chunk[kNch];
  ReduceSmem<double> rd;
  ReduceSmem<float> rf;
  ReduceSmem<long long> rl;
  long long index;
};
template <int kThreads, bool kRadix>
struct Smem : SmemBase<kThreads> {};
template <int kThreads>
struct Smem<kThreads, true> : SmemBase<kThreads> {
  RadixSmem rx;
};

__host__ __device__ constexpr size_t align16(size_t b) { return (b + 15) & ~size_t(15); }

// ---------------------------------------------------------------------------------------------
// Chunk sums and the inverse-CDF search.

// chunk[c] = Σ wf(j, u) over chunk c, in float64 (per lane: kU independent accumulators in index
// order; then a fixed butterfly). Slots of chunks that do not exist are set to 0.
template <class T, int kWarps, class WF>
__device__ __forceinline__ void chunk_pass(const Geo<T>& g, const Stage& st, float inv_t, double* chunk, const WF& wf) {
  double acc[kU];
#pragma unroll
  for (int u = 0; u < kU; ++u) acc[u] = 0.0;
  auto f = [&](int u, int64_t j, float x) { acc[u] += (double)wf(j, x); };
  auto ce = [&](int c) {
    double s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    s = detail::warp_reduce(s, detail::SumOp{});
    if ((threadIdx.x & 31) == 0) chunk[c] = s;
#pragma unroll
    for (int u = 0; u < kU; ++u) acc[u] = 0.0;
  };
  visit_row<T, kWarps>(g, st, false, inv_t, f, ce);
  const int w = (int)threadIdx.x >> 5, lane = (int)threadIdx.x & 31;
  const int64_t len = g.seg_lo(w + 1, kWarps) - g.seg_lo(w, kWarps);
  const int64_t used = (len + g.G - 1) / g.G;
  for (int64_t k = used + lane; k < kChunksPerWarp; k += 32) chunk[1 + w * kChunksPerWarp + k] = 0.0;
}

struct Pick {
  int c;       // the chunk whose fixed-point prefix first exceeds the target, -1 if none
  u128 D;      // target minus the prefix before chunk c
  u128 Z;      // Σ of all chunks
};

// Warp 0 (all lanes): sums the chunks in fixed point and finds the first chunk whose running sum
// exceeds target(Z). Exact integer prefixes, so the answer is well defined.
template <int kNch, class TF>
__device__ __forceinline__ Pick pick_chunk(const double* chunk, TF&& target) {
  constexpr int E = (kNch + 31) / 32;
  const int lane = (int)threadIdx.x & 31;
  const int b = lane * E;
  u128 tot = 0;
#pragma unroll
  for (int i = 0; i < E; ++i)
    if (b + i < kNch) tot += fx_of_double(chunk[b + i]);
  const u128 incl = warp_incl_scan(tot, lane);
  const u128 excl = incl - tot;
  Pick pk;
  pk.Z = shfl_u128(incl, 31);
  pk.c = -1;
  pk.D = 0;
  const u128 T = target(pk.Z);
  const unsigned bal = __ballot_sync(kFull, incl > T);
  if (!bal) return pk;
  const int ls = __ffs((int)bal) - 1;
  int c = -1;
  u128 D = 0;
  if (lane == ls) {
    u128 run = excl;
    for (int i = 0; i < E && b + i < kNch; ++i) {
      const u128 nx = run + fx_of_double(chunk[b + i]);
      if (nx > T) {
        c = b + i;
        D = T - run;
        break;
      }
      run = nx;
    }
  }
  pk.c = __shfl_sync(kFull, c, ls);
  pk.D = shfl_u128(D, ls);
  return pk;
}

// One group of the in-chunk scan (warp-collective): lane L holds elements j0 .. j0 + cnt - 1 of a
// run of 32 * N consecutive elements (lane-major). Returns the first element whose fixed-point
// prefix (base + everything before it in the chunk + itself) exceeds D, or -1 (then base grows by
// the group's sum and last_pos is the last element with a positive weight so far).
template <int N, class WF>
__device__ __forceinline__ int64_t group_step(int64_t j0, int cnt, const float (&x)[N], const WF& wf, u128& base,
                                              u128 D, int64_t& last_pos) {
  const int lane = (int)threadIdx.x & 31;
  u128 tot = 0;
  int lastk = -1;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    if (k < cnt) {
      const u128 q = fx_of_float(wf(j0 + k, x[k]));
      tot += q;
      if (q != 0) lastk = k;
    }
  }
  const u128 incl = warp_incl_scan(tot, lane);
  const u128 gsum = shfl_u128(incl, 31);
  const unsigned bal = __ballot_sync(kFull, base + incl > D);
  if (bal) {
    const int ls = __ffs((int)bal) - 1;
    long long res = -1;
    if (lane == ls) {  // the crossing lane walks its elements again (the weights are recomputed)
      u128 run = base + (incl - tot);
      for (int k = 0; k < cnt; ++k) {
        run += fx_of_float(wf(j0 + k, x[k]));
        if (run > D) {
          res = j0 + k;
          break;
        }
      }
    }
    return __shfl_sync(kFull, res, ls);
  }
  const unsigned pb = __ballot_sync(kFull, lastk >= 0);
  if (pb) {
    const int lp = 31 - __clz((int)pb);
    last_pos = __shfl_sync(kFull, (long long)(j0 + (lastk < 0 ? 0 : lastk)), lp);
  }
  base += gsum;
  return -1;
}

// Warp 0 (all lanes): the element of chunk c where the exact in-chunk prefix of wf first exceeds D.
// When the float64 chunk sum let the target into this chunk but its exact sum falls short (a
// rounding of a few ulps), the last element of the chunk with a positive weight.
template <class T, int kWarps, class WF>
__device__ __forceinline__ int64_t rescan_chunk(const Geo<T>& g, const Stage& st, float inv_t, int c, u128 D,
                                                const WF& wf) {
  constexpr int W = Vec<T>::kWidth;
  constexpr int kNch = 2 + kWarps * kChunksPerWarp;
  const int lane = (int)threadIdx.x & 31;
  u128 base = 0;
  int64_t last = -1;
  if (c == 0 || c == kNch - 1) {
    const int64_t b0 = c == 0 ? 0 : g.tail_begin, b1 = c == 0 ? g.head : g.v;
    for (int64_t b = b0; b < b1; b += 32) {
      const int64_t j = b + lane;
      const int cnt = j < b1 ? 1 : 0;
      const float x[1] = {cnt ? scaled(DevElem<T>::load(g.row[j]), inv_t) : 0.0f};
      const int64_t r = group_step<1>(j, cnt, x, wf, base, D, last);
      if (r >= 0) return r;
    }
    return last;
  }
  const int w = (c - 1) / kChunksPerWarp, k = (c - 1) % kChunksPerWarp;
  const int64_t lo = g.seg_lo(w, kWarps), hi = g.seg_lo(w + 1, kWarps);
  const int64_t s0 = lo + (int64_t)k * g.G;
  const int64_t s1 = s0 + g.G < hi ? s0 + g.G : hi;
  const uint4* body = reinterpret_cast<const uint4*>(g.row + g.head);
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t t = s - lo;
    const uint4* slot = t < st.segs ? st.base + ((int64_t)w * st.segs + t) * kSegVecs : nullptr;
    for (int u = 0; u < kU; ++u) {  // one vector at a time: cold code, few registers
      const int64_t vi = s * kSegVecs + u * 32 + lane;
      const bool ok = vi < g.nvec;
      float z[W];
      if (ok) {
        detail::unpack_vec<T>(slot ? slot[u * 32 + lane] : __ldg(body + vi), z);
#pragma unroll
        for (int e = 0; e < W; ++e) z[e] = scaled(z[e], inv_t);
      } else {
#pragma unroll
        for (int e = 0; e < W; ++e) z[e] = 0.0f;
      }
      const int64_t r = group_step<W>(g.head + vi * W, ok ? W : 0, z, wf, base, D, last);
      if (r >= 0) return r;
    }
  }
  return last;
}

// Warp 0 (all lanes), kept out of line so that its 128-bit temporaries do not take registers from
// the passes: the first element (index order) where the running sum of wf exceeds target(Z),
// Z = Σ chunk (-1 when Z does not exceed the target); *z_out = Z.
template <class T, int kWarps, class WF, class TF>
__device__ __noinline__ int64_t find_in_row(Geo<T> g, Stage st, float inv_t, const double* chunk, WF wf, TF target,
                                            u128* z_out) {
  const Pick pk = pick_chunk<2 + kWarps * kChunksPerWarp>(chunk, target);
  *z_out = pk.Z;
  return pk.c >= 0 ? rescan_chunk<T, kWarps>(g, st, inv_t, pk.c, pk.D, wf) : -1;
}

// Count weights for select_nth.
template <class PF>
struct CountWeight {
  PF pred;
  __device__ __forceinline__ float operator()(int64_t j, float u) const { return pred(j, u) ? 1.0f : 0.0f; }
};

// A fixed target (counts are exact in float64 and in fixed point).
struct FixedTarget {
  double t;
  __device__ __forceinline__ u128 operator()(u128) const { return fx_of_double(t); }
};

// Block-collective: the index of the (nth + 1)-th element (index order) with pred(j, u), or -1.
template <class T, int kThreads, class PF>
__device__ int64_t select_nth(const Geo<T>& g, const Stage& st, float inv_t, SmemBase<kThreads>& sm, const PF& pred,
                              unsigned long long nth) {
  constexpr int kWarps = kThreads / 32;
  const CountWeight<PF> wf{pred};
  chunk_pass<T, kWarps>(g, st, inv_t, sm.chunk, wf);
  __syncthreads();
  if (threadIdx.x < 32) {
    u128 z;
    const int64_t j = find_in_row<T, kWarps>(g, st, inv_t, sm.chunk, wf, FixedTarget{(double)nth}, &z);
    if (threadIdx.x == 0) sm.index = j;
  }
  __syncthreads();
  return sm.index;
}

// ---------------------------------------------------------------------------------------------
// Radix select on the keys of u (top-K by count, top-P by mass).

struct WalkOut {
  int digit;
  bool ok;
  u128 above, eq;
};

// Warp 0 (all lanes): the largest digit b with above + Σ_{b' >= b} weight(b') >= thr (weights:
// counts, or the 128-bit mass). ok = false when even b = 0 does not reach thr.
template <bool kMass>
__device__ __forceinline__ WalkOut walk(const RadixSmem& h, u128 above, u128 thr) {
  const int lane = (int)threadIdx.x & 31;
  u128 wv[8];
  u128 lt = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int b = lane * 8 + i;
    wv[i] = kMass ? make_u128(h.mlo[b], h.mhi[b]) : (u128)h.cnt[b];
    lt += wv[i];
  }
  const u128 suf = warp_suffix_scan(lt, lane);
  const u128 suf_next = shfl_down_u128(suf, 1);  // lane + 1's suffix (lane 31: unused)
  const unsigned bal = __ballot_sync(kFull, above + suf >= thr);
  WalkOut o;
  o.ok = bal != 0;
  o.digit = 0;
  o.above = 0;
  o.eq = 0;
  if (!o.ok) return o;
  const int ls = 31 - __clz((int)bal);  // the sums only shrink with the lane: lanes <= ls reach thr
  int digit = -1;
  u128 ab = 0, eq = 0;
  if (lane == ls) {
    u128 run = above + (lane == 31 ? (u128)0 : suf_next);
#pragma unroll
    for (int i = 7; i >= 0; --i) {
      const u128 nx = run + wv[i];
      if (digit < 0 && nx >= thr) {
        digit = lane * 8 + i;
        ab = run;
        eq = wv[i];
      }
      run = nx;
    }
  }
  o.digit = __shfl_sync(kFull, digit, ls);
  o.above = shfl_u128(ab, ls);
  o.eq = shfl_u128(eq, ls);
  return o;
}

struct RadixOut {
  bool ok;
  uint32_t key;             // the threshold key
  u128 above, eq;           // weight of the keys above it, and of the key itself
  unsigned long long eq_cnt;  // number of elements with the key
  u128 thr;                 // the weight to reach
};

// Block-collective, 4 passes: among the elements with pred(j, u) (never -inf), the largest key K
// such that the weight of keys >= K reaches thr. Count weights: thr = thr_count (K = the
// thr_count-th largest key). Mass weights: thr = max(topP · Z, 2^-90) with Z the total mass, found
// in the first pass; ok = false when Z does not reach it (topP within ulps of 1: keep all).
template <class T, int kThreads, bool kMass, class PF>
__device__ RadixOut radix_select(const Geo<T>& g, const Stage& st, float inv_t, float m, Smem<kThreads, true>& sm,
                                 const PF& pred, u128 thr_count, double top_p) {
  constexpr int kWarps = kThreads / 32;
  RadixSmem& rx = sm.rx;
  uint32_t prefix = 0, mask = 0;
  u128 above = 0, thr = thr_count;
  RadixOut out;
  out.ok = false;
  out.key = 0;
  out.above = out.eq = out.thr = 0;
  out.eq_cnt = 0;
  for (int level = 0; level < 4; ++level) {
    const int shift = 24 - 8 * level;
    for (int i = (int)threadIdx.x; i < 256; i += kThreads) {
      rx.cnt[i] = 0;
      if (kMass) rx.mlo[i] = rx.mhi[i] = 0;
    }
    __syncthreads();
    auto f = [&](int, int64_t j, float u) {
      if (!pred(j, u)) return;
      const uint32_t key = float_key(u);
      if ((key & mask) != prefix) return;
      const int b = (int)((key >> shift) & 255u);
      atomicAdd(&rx.cnt[b], 1ull);
      if (kMass) atomic_add_u128(&rx.mlo[b], &rx.mhi[b], fx_of_float(exp_np(u - m)));
    };
    NoChunks ce;
    visit_row<T, kWarps>(g, st, false, inv_t, f, ce);
    __syncthreads();
    if (threadIdx.x < 32) {
      const int lane = (int)threadIdx.x;
      if (kMass && level == 0) {
        u128 tot = 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) tot += make_u128(rx.mlo[lane * 8 + i], rx.mhi[lane * 8 + i]);
        tot = shfl_u128(warp_incl_scan(tot, lane), 31);
        u128 t = fx_of_double(top_p * fx_to_double(tot));
        thr = t < 1 ? (u128)1 : t;
      }
      const WalkOut o = walk<kMass>(rx, above, thr);
      if (lane == 0) {
        rx.ok = o.ok ? 1 : 0;
        rx.digit = o.digit;
        rx.above = o.above;
        rx.eq = o.eq;
        rx.eq_cnt = o.ok ? rx.cnt[o.digit] : 0;
        rx.thr = thr;
      }
    }
    __syncthreads();
    if (!rx.ok) return out;  // block-uniform
    prefix |= (uint32_t)rx.digit << shift;
    mask |= 0xFFu << shift;
    above = rx.above;
    thr = rx.thr;
    out.eq = rx.eq;
    out.eq_cnt = rx.eq_cnt;
  }
  out.ok = true;
  out.key = prefix;
  out.above = above;
  out.thr = thr;
  return out;
}

// ---------------------------------------------------------------------------------------------
// The kernel.

struct Params {
  const void* logits;
  int64_t n, v;
  float inv_t;
  int64_t top_k;
  double top_p;
  bool use_min_p;
  double log_min_p;  // std::log(min_p) from the host, as the CPU
  uint64_t seed, step;
  int64_t row_offset;
  const int64_t* row_ids;
  int32_t* tokens;
  float* logp;
  float* logp_truncated;
  unsigned long long* bad_row;
  int64_t stage_segs;
};

__device__ __forceinline__ double row_uniform(const Params& p, int64_t r) {
  const uint64_t counter = (uint64_t)(p.row_ids ? p.row_ids[r] : p.row_offset + r);
  return philox_uniform(p.seed, counter, p.step);
}

// The inverse-CDF target in fixed point: u · Z, strictly below Z (so a crossing always exists).
struct CdfTarget {
  double u;
  __device__ __forceinline__ u128 operator()(u128 Z) const {
    if (Z == 0) return 0;
    const u128 T = fx_of_double(u * fx_to_double(Z));
    return T < Z ? T : Z - 1;
  }
};

// e_i for every element (plain path; -inf logits weigh 0).
struct PlainWeight {
  float m;
  __device__ __forceinline__ float operator()(int64_t, float u) const { return exp_np(u - m); }
};

// The filters of one row (block-uniform): core/fixedpoint.h.
using Filters = SampleFilters;

struct NotNegInf {
  __device__ __forceinline__ bool operator()(int64_t, float u) const { return u > -INFINITY; }
};
struct PassK {
  Filters f;
  __device__ __forceinline__ bool operator()(int64_t j, float u) const { return f.pass_k(j, u); }
};
// The ties of `key` among the elements kept so far (after topK when with_k).
struct TiePred {
  Filters f;
  uint32_t key;
  bool with_k;
  __device__ __forceinline__ bool operator()(int64_t j, float u) const {
    if (!(u > -INFINITY)) return false;
    if (with_k && !f.pass_k(j, u)) return false;
    return float_key(u) == key;
  }
};
struct KeptWeight {
  Filters f;
  __device__ __forceinline__ float operator()(int64_t j, float u) const { return f.kept(j, u) ? exp_np(u - f.m) : 0.0f; }
};

// Warp 0 (all lanes), out of line: draws the row's token from the chunk sums of wf and writes the
// outputs. s_all: Σ e over the whole row for the full log-prob, or < 0 when it is the kept sum
// (plain path). j < 0 (no kept token: only with minP >= 1, which the binding rejects; the CPU
// reads out of bounds there): token -1 and NaN log-probs.
template <class T, int kWarps, class WF>
__device__ __noinline__ void finish_row(Geo<T> g, Stage st, float inv_t, const double* chunk, WF wf, double u, float m,
                                        double s_all, int32_t* token, float* logp, float* logp_truncated) {
  u128 z;
  const int64_t j = find_in_row<T, kWarps>(g, st, inv_t, chunk, wf, CdfTarget{u}, &z);
  if ((threadIdx.x & 31) != 0) return;
  if (j < 0) {
    *token = -1;
    *logp = NAN;
    *logp_truncated = NAN;
    return;
  }
  const double z_kept = fx_to_double(z);
  const float ut = scaled(DevElem<T>::load(g.row[j]), inv_t);
  *token = (int32_t)j;
  *logp = finalize_row(RowStats{m, (float)(s_all < 0.0 ? z_kept : s_all), 0.0f}, ut).logp;
  *logp_truncated = (float)((double)(ut - m) - log(z_kept));
}

struct MinOp {
  template <class V>
  __device__ __forceinline__ V operator()(const V& a, const V& b) const { return a < b ? a : b; }
};

template <class T, int kThreads, int kMode>
__global__ void __launch_bounds__(kThreads, kThreads >= 512 ? 2 : 8) sample_kernel(const Params p) {
  constexpr int kWarps = kThreads / 32;
  using Sh = Smem<kThreads, kMode == kFiltered>;
  GK_DYNAMIC_SHARED(16, gk_smem, unsigned char);
  Sh& sm = *reinterpret_cast<Sh*>(gk_smem);
  const Stage st{reinterpret_cast<uint4*>(gk_smem + align16(sizeof(Sh))), p.stage_segs};
  const float inv_t = p.inv_t;

  for (int64_t r = blockIdx.x; r < p.n; r += gridDim.x) {
    __syncthreads();  // the previous row's readers of shared memory are done
    const T* row = static_cast<const T*>(p.logits) + r * p.v;
    const Geo<T> g = make_geo<T, kWarps>(row, p.v);

    // Pass A: max, non-finite check (the CPU's row_max: a NaN or +inf makes the row bad), and
    // the first index of the max (greedy) or the count of kept tokens (filtered). Stages.
    float mx = -INFINITY, bu = -INFINITY;
    int nf = 0;
    long long bj = LLONG_MAX, kept = 0;
    {
      auto fa = [&](int, int64_t j, float u) {
        mx = fmaxf(mx, u);
        nf |= !(u <= 3.402823466e38f) ? 1 : 0;
        if (kMode == kGreedy && u > bu) {
          bu = u;
          bj = j;
        }
        if (kMode == kFiltered) kept += u > -INFINITY ? 1 : 0;
      };
      NoChunks ce;
      visit_row<T, kWarps>(g, st, true, inv_t, fa, ce);
    }
    mx = detail::block_max<kThreads>(mx, sm.rf, -INFINITY);
    const long long bad = detail::block_sum<kThreads>((long long)nf, sm.rl);
    if (bad != 0 || !(mx > -INFINITY)) {  // block-uniform
      if (threadIdx.x == 0) {
        p.tokens[r] = -1;
        p.logp[r] = NAN;
        p.logp_truncated[r] = NAN;
        detail::flag_row(p.bad_row, r);
      }
      continue;
    }
    const float m = mx;

    if constexpr (kMode == kGreedy) {
      // The first index of the max (the CPU's strict > scan), and Σ e for its log-prob.
      const long long best = detail::block_reduce<kThreads>(bu == m ? bj : LLONG_MAX, MinOp{}, LLONG_MAX, sm.rl);
      double acc[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) acc[u] = 0.0;
      auto fs = [&](int u, int64_t, float x) { acc[u] += (double)exp_np(x - m); };
      NoChunks ce;
      visit_row<T, kWarps>(g, st, false, inv_t, fs, ce);
      const double s = detail::block_sum<kThreads>((acc[0] + acc[1]) + (acc[2] + acc[3]), sm.rd);
      if (threadIdx.x == 0) {
        p.tokens[r] = (int32_t)best;
        p.logp[r] = finalize_row(RowStats{m, (float)s, 0.0f}, m).logp;  // u[best] == max
        p.logp_truncated[r] = 0.0f;
      }
    } else if constexpr (kMode == kPlain) {
      const PlainWeight wf{m};
      chunk_pass<T, kWarps>(g, st, inv_t, sm.chunk, wf);
      __syncthreads();
      if (threadIdx.x < 32)
        finish_row<T, kWarps>(g, st, inv_t, sm.chunk, wf, row_uniform(p, r), m, -1.0, p.tokens + r, p.logp + r,
                              p.logp_truncated + r);
    } else {
      Filters f;
      f.m = m;
      kept = detail::block_sum<kThreads>(kept, sm.rl);  // the CPU's `kept`: tokens with u > -inf
      f.use_k = p.top_k > 0 && p.top_k < kept;
      f.use_p = p.top_p < 1.0;
      f.use_m = p.use_min_p;
      f.kk = f.kp = 0;
      f.jk = f.jp = LLONG_MAX;
      f.floor_u = (double)m + p.log_min_p;
      if (f.use_k) {
        // topK: the top_k-th largest value; ties at the boundary go to the lower index.
        const RadixOut ro = radix_select<T, kThreads, false>(g, st, inv_t, m, sm, NotNegInf{}, (u128)p.top_k, 0.0);
        f.kk = ro.key;
        const unsigned long long need = (unsigned long long)p.top_k - (unsigned long long)ro.above;  // in [1, eq_cnt]
        if (ro.ok && need < ro.eq_cnt) f.jk = select_nth<T, kThreads>(g, st, inv_t, sm, TiePred{f, f.kk, false}, need - 1);
      }
      if (f.use_p) {
        // topP on the top-K distribution: the smallest prefix by descending probability (ties to
        // the lower index) whose mass reaches top_p · Z.
        const RadixOut ro = radix_select<T, kThreads, true>(g, st, inv_t, m, sm, PassK{f}, 0, p.top_p);
        if (!ro.ok) {
          f.use_p = false;  // the mass never reaches top_p (top_p within ulps of 1): keep all
        } else {
          f.kp = ro.key;
          const u128 q = fx_of_float(exp_np(key_float(f.kp) - m));  // every tie weighs the same
          unsigned long long lo = 1, hi = ro.eq_cnt;                 // the fewest ties that reach thr
          while (lo < hi) {
            const unsigned long long mid = lo + (hi - lo) / 2;
            if (ro.above + (u128)mid * q >= ro.thr) hi = mid;
            else lo = mid + 1;
          }
          if (lo < ro.eq_cnt) f.jp = select_nth<T, kThreads>(g, st, inv_t, sm, TiePred{f, f.kp, true}, lo - 1);
        }
      }
      // Final pass: kept mass per chunk, and Σ e over the whole row for the full log-prob.
      double all = 0.0;
      struct {
        Filters f;
        double* all;
        __device__ __forceinline__ float operator()(int64_t j, float u) const {
          const float e = exp_np(u - f.m);
          *all += (double)e;
          return f.kept(j, u) ? e : 0.0f;
        }
      } wf_all{f, &all};
      chunk_pass<T, kWarps>(g, st, inv_t, sm.chunk, wf_all);
      const double s_all = detail::block_sum<kThreads>(all, sm.rd);  // its barriers also publish sm.chunk
      if (threadIdx.x < 32)
        finish_row<T, kWarps>(g, st, inv_t, sm.chunk, KeptWeight{f}, row_uniform(p, r), m, s_all, p.tokens + r,
                              p.logp + r, p.logp_truncated + r);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Launch.

template <class T, int kThreads, int kMode>
Status launch_cfg(Params p, cudaStream_t s) {
  constexpr int kWarps = kThreads / 32;
  constexpr int kTargetBlocks = kThreads >= 512 ? 2 : 8;  // blocks per SM the stage leaves room for
  using Sh = Smem<kThreads, kMode == kFiltered>;
  const size_t fixed = align16(sizeof(Sh));
  int dev = 0, optin = 0, per_sm = 0;
  GK_CUDA_CHECK(cudaGetDevice(&dev));
  GK_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  GK_CUDA_CHECK(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev));
  int64_t budget = (int64_t)per_sm / kTargetBlocks - 1024;  // 1 KB per block is reserved by the runtime
  if (budget > optin) budget = optin;
  budget -= (int64_t)fixed;
  // Segments per warp: never more than a warp's share of the row.
  const int64_t nvec_max = p.v / (int64_t)Vec<T>::kWidth;
  const int64_t nseg_max = (nvec_max + kSegVecs - 1) / kSegVecs;
  const int64_t maxl = (nseg_max + kWarps - 1) / kWarps;
  int64_t segs = budget > 0 ? budget / ((int64_t)kWarps * kSegBytes) : 0;
  if (segs > maxl) segs = maxl;
  p.stage_segs = segs;
  const size_t dyn = fixed + (size_t)segs * kWarps * kSegBytes;
  auto kernel = sample_kernel<T, kThreads, kMode>;
  if (dyn > 48 * 1024) GK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dyn));
  int per = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kernel, kThreads, dyn) != cudaSuccess || per < 1) {
    cudaGetLastError();
    per = 1;
  }
  const unsigned grid = detail::grid_for(p.n, per);
  GK_LAUNCH(grid, kThreads, dyn, s, kernel)(p);
  GK_CUDA_CHECK_LAUNCH();
  return Status{};
}

template <class T, int kMode>
Status launch_mode(const Params& p, cudaStream_t s) {
  if (p.v <= 8192) return launch_cfg<T, 128, kMode>(p, s);
  return launch_cfg<T, 512, kMode>(p, s);
}

template <class T>
Status launch_t(const Params& p, int mode, cudaStream_t s) {
  if (mode == kGreedy) return launch_mode<T, kGreedy>(p, s);
  if (mode == kFiltered) return launch_mode<T, kFiltered>(p, s);
  return launch_mode<T, kPlain>(p, s);
}

}  // namespace

Status sample_tokens(const SampleArgs& a, cudaStream_t stream) {
  const LogitsView& x = a.in;
  if (x.dtype != kF32 && x.dtype != kBF16 && x.dtype != kF16)
    return detail::make_status(kDtype, "logits must be float32, bfloat16 or float16");
  if (x.n < 0 || x.v < 0) return detail::make_status(kShape, "negative logits shape");
  if (x.n == 0) return Status{};
  if ((x.v > 0 && !x.logits) || !a.tokens || !a.logp || !a.logp_truncated)
    return detail::make_status(kInvalid, "logits and the tokens/logp/logpTruncated outputs are required");

  Params p;
  p.logits = x.logits;
  p.n = x.n;
  p.v = x.v;
  p.inv_t = 1.0f / x.temperature;  // as the CPU
  p.top_k = a.top_k;
  p.top_p = a.top_p;
  p.use_min_p = a.min_p > 0.0;
  p.log_min_p = p.use_min_p ? std::log(a.min_p) : 0.0;
  p.seed = a.seed;
  p.step = a.step;
  p.row_offset = a.row_offset;
  p.row_ids = a.row_ids;
  p.tokens = a.tokens;
  p.logp = a.logp;
  p.logp_truncated = a.logp_truncated;
  p.stage_segs = 0;
  // The CPU's option tests (NaN topP/minP switch the filter off there too).
  const int mode = a.greedy ? kGreedy : ((a.top_k > 0 || a.top_p < 1.0 || a.min_p > 0.0) ? kFiltered : kPlain);

  detail::DeviceScratch flag;
  GK_CUDA_CHECK(flag.alloc(sizeof(unsigned long long), stream));
  GK_CUDA_CHECK(cudaMemsetAsync(flag.as<void>(), 0xFF, sizeof(unsigned long long), stream));
  p.bad_row = flag.as<unsigned long long>();
  if (x.dtype == kBF16) GK_RETURN_IF_ERROR(launch_t<bf16_t>(p, mode, stream));
  else if (x.dtype == kF16) GK_RETURN_IF_ERROR(launch_t<f16_t>(p, mode, stream));
  else GK_RETURN_IF_ERROR(launch_t<float>(p, mode, stream));
  unsigned long long bad = detail::kNoRow;
  GK_CUDA_CHECK(detail::finish_op(&bad, p.bad_row, sizeof(bad), stream));
  Status st;
  if (bad != detail::kNoRow) {  // native/cpu/rows.h set_row_error
    st.code = kNonFinite;
    st.row = (int64_t)bad;
    snprintf(st.message, sizeof(st.message), "%s at row %lld", "no finite distribution (a NaN/+inf logit, or all -inf)",
             (long long)bad);
  }
  return st;
}

}  // namespace cuda
}  // namespace gk
