// Spec §7 on the GPU: distillation loss + ∂loss/∂student-logits (native/cpu/distill.cc's contract).
//
// Kernels, in stream order (all O(N + S) except the row kernel):
//   1. seq     (one block per sequence): validates the layout (seqOffsets[0] == 0, [S] == N,
//              non-decreasing) and the targets into the device flags, counts the valid rows of
//              each sequence (mask, ignore_index) and records its length;
//   2. global  (one block): total valid rows and the longest sequence (exact: integer counts);
//   3. weight  (one block per sequence): every row's aggregation weight (core/loss.h
//              aggregation_weight; 0 for rows that do not count), formed as the CPU forms it;
//   4. rows    (a row per warp for V <= 4096, else a row per block of GK_DISTILL_ROW_THREADS = 512;
//              grid-stride over rows): does nothing at all when step 1 flagged an error (grad, which may alias the
//              student, stays untouched), else writes every row's row_loss, weighted value and
//              gradient;
//   5. sum     (one block): the loss, a float64 sum of the weighted row values in a fixed order.
// Then one copy of the flags and scalars to the host and one synchronisation.
//
// Passes over the logits in kernel 4 (rows with weight 0 are only written: zeros):
//   forward / reverse KL: pass 1 reads the student and the teacher row once, keeping per thread the
//     online (max, Σexp) of both and the divergence accumulator (below); the row's threads merge
//     them in a fixed order. Without grad that is all: 1 read of each input. With grad, pass 2 reads
//     both rows again and writes the gradient: 2 reads of each input + 1 write.
//   JSD: the mixture M needs both log-normalisers before any element term, so pass 1 is the online
//     (max, Σexp) only and pass 2 reads both rows again for the divergence terms and KL(p_S || M)
//     (the gradient's row statistic); pass 3 (grad only) reads both again and writes: 3 reads of
//     each + 1 write (2 reads of each without grad).
//   Consecutive passes walk the row in opposite directions, so a pass starts on the part of the row
//   read last (the most likely to be still in L2); the last pass reads with the evict-first hint and
//   writes the gradient with streaming stores, to leave L2 to the rows still to be re-read.
//
// The KL accumulator. With P the weighting side (teacher for forward KL, student for reverse), Q the
// other and x = u_P − u_Q per element: D = Σ p_P (log p_P − log p_Q) = mean_pP(x) − (lse_P − lse_Q).
// Each thread keeps A = Σ e_P·(x − x_ref), e_P = exp(u_P − m_P), centred on the element holding its
// running P maximum (x_ref is that element's x): a new P maximum rescales A like S_P and re-centres
// it (A += (x_ref_old − x_ref_new)·S_P), a new Q maximum changes nothing, and the thread merge
// re-centres on the part holding the larger maximum. Terms are summed in float32 over a step of 16
// elements and carried in float64. The dominant element adds exactly 0, so near-one-hot rows keep
// their accuracy: mean_pP(x) = x_ref + A / S_P (x_ref exact in float64 for the value), and the
// reverse-KL gradient's log p_S − log p_T − D = (x − x_ref) − A / S_S is exactly −A / S_S at the
// dominant element (no cancellation of two large numbers). -inf logits: a P element of -inf has
// e_P = 0 and adds exactly 0 (x is clamped, never inf·0); a Q element of -inf where P is finite is
// a term p_P·(+inf) on the CPU whenever its float32 p_P is > 0, so its u_Q is replaced by u_P (adds
// 0) and the largest such u_P is kept: at the end the CPU's own test, exp_nonpos((float)(u_P −
// lse_P)) > 0, decides whether D is +inf. Rows whose P or Q has no finite maximum, a NaN or a +inf
// get the CPU's value: 0 when P is bad (x log x skips NaN probabilities), else NaN.
//
// Differences from the CPU backend (inside docs/grpo-math.md's tolerances, and as close to float64
// as the CPU or closer): element exps are MUFU exps (__expf, ~2 ulp; -DGK_CUDA_EXACT_EXP gives the
// CPU's exp_nonpos) and the JSD's log M is float32 logf (the CPU: float64 log); the per-element JSD
// terms and the gradient elements are formed in float32 (the CPU: in float64 from float32
// probabilities); the KL value comes from the accumulator above rather than from element terms; lse
// keeps Σexp in float64 (the CPU rounds it to float32 first); the row sums and the loss are summed
// in a different (fixed) order, so results agree to rounding, not bitwise.
#include "distill.cuh"

#include "../core/distill.h"
#include "../core/loss.h"

namespace gk {
namespace cuda {
namespace {

using detail::DeviceFlags;
using detail::DevElem;
using detail::ReduceSmem;
using detail::kNoRow;

// #pragma unroll for loops of the host/device functions (the host compiler does not know it).
#ifdef __CUDA_ARCH__
#define GK_DISTILL_UNROLL _Pragma("unroll")
#else
#define GK_DISTILL_UNROLL
#endif

constexpr int kKeep = 0;  // plain loads (the row is read again)
constexpr int kLast = 1;  // the last read of the row: evict-first

constexpr int kSeqThreads = 256;
constexpr int kOneBlockThreads = 1024;

// Rows of up to kWarpRowMaxV elements go one per warp (8 rows per 256-thread block), longer rows one
// per block of kRowBlock threads (a tuning knob: 256 keeps two rows per SM in flight, 512 one).
#ifndef GK_DISTILL_ROW_THREADS
#define GK_DISTILL_ROW_THREADS 512
#endif
constexpr int64_t kWarpRowMaxV = 4096;
constexpr int kRowBlock = GK_DISTILL_ROW_THREADS;
static_assert(kRowBlock == 256 || kRowBlock == 512 || kRowBlock == 1024, "GK_DISTILL_ROW_THREADS: 256, 512 or 1024");
// The row kernel's grid: one group of rows per block up to this many blocks, grid-stride beyond (a
// check build sets it tiny to exercise the grid-stride path).
#ifndef GK_DISTILL_MAX_GRID
#define GK_DISTILL_MAX_GRID (1 << 24)
#endif

// ---------------------------------------------------------------------------------------------
// Element math, host/device. The device uses the MUFU paths; the host path (not used by the addon)
// lets a host program run the same row code as a formula check.

GK_HD float fexp(float x) {
#ifdef __CUDA_ARCH__
  return detail::dev_exp(x);
#else
  return exp_nonpos(x);
#endif
}

// The JSD's exps: the CPU's exp_nonpos (relative error ~2e-7, unbiased), not the MUFU path. The
// JSD gradient (1 − β)·p_S·(log(p_S/M) − KL(p_S||M)) subtracts two nearly equal terms, and the
// MUFU's error (up to ~5e-7 and not zero-mean) in p and in the row sums behind lse would reach
// 2e-5 of the gradient at V = 151936 (the spec allows 1e-5).
template <bool kJsdExp>
GK_HD float fexp_div(float x) {
  return kJsdExp ? exp_nonpos(x) : fexp(x);
}

GK_HD bool is_nan(double x) { return x != x; }
GK_HD bool is_finite(double x) { return x - x == 0.0; }

// ---------------------------------------------------------------------------------------------
// Element access. Logits are stored as float or as uint16_t (bfloat16 when `bf`, else float16):
// which 16-bit type is a uniform runtime flag, branched on once per unit, so one kernel serves both
// (4 storage pairs instead of 9 dtype pairs to compile).

GK_HD float cvt_in(float x, bool) { return x; }
GK_HD float cvt_in(uint16_t h, bool bf) {
#ifdef __CUDA_ARCH__
  return bf ? DevElem<bf16_t>::load(bf16_t{h}) : DevElem<f16_t>::load(f16_t{h});
#else
  return bf ? bf16_to_f32(h) : f16_to_f32(h);
#endif
}

template <class T>
GK_HD T cvt_out(float x, bool bf);
template <>
GK_HD float cvt_out<float>(float x, bool) {
  return x;
}
template <>
GK_HD uint16_t cvt_out<uint16_t>(float x, bool bf) {
#ifdef __CUDA_ARCH__
  return bf ? DevElem<bf16_t>::store(x).bits : DevElem<f16_t>::store(x).bits;
#else
  return bf ? f32_to_bf16(x) : f32_to_f16(x);
#endif
}

#ifdef __CUDA_ARCH__
template <int kHint, class V>
__device__ __forceinline__ V ldv(const V* p) {
  if (kHint == kLast) return __ldcs(p);
  return *p;
}
__device__ __forceinline__ void unpack16(const uint4 q, bool bf, float* o) {
  const uint32_t w[4] = {q.x, q.y, q.z, q.w};
  if (bf) {
    GK_DISTILL_UNROLL
    for (int k = 0; k < 4; ++k) {
      o[2 * k] = __uint_as_float(w[k] << 16);
      o[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
    }
  } else {
    GK_DISTILL_UNROLL
    for (int k = 0; k < 4; ++k) {
      o[2 * k] = DevElem<f16_t>::load(f16_t{(uint16_t)(w[k] & 0xFFFFu)});
      o[2 * k + 1] = DevElem<f16_t>::load(f16_t{(uint16_t)(w[k] >> 16)});
    }
  }
}
__device__ __forceinline__ uint4 pack16(const float* v, bool bf) {
  uint32_t w[4];
  if (bf) {
    GK_DISTILL_UNROLL
    for (int k = 0; k < 4; ++k)
      w[k] = (uint32_t)DevElem<bf16_t>::store(v[2 * k]).bits |
             ((uint32_t)DevElem<bf16_t>::store(v[2 * k + 1]).bits << 16);
  } else {
    GK_DISTILL_UNROLL
    for (int k = 0; k < 4; ++k)
      w[k] = (uint32_t)DevElem<f16_t>::store(v[2 * k]).bits |
             ((uint32_t)DevElem<f16_t>::store(v[2 * k + 1]).bits << 16);
  }
  return make_uint4(w[0], w[1], w[2], w[3]);
}
#endif

// A unit: 8 consecutive elements starting at a 16-byte boundary: one uint4 for 16-bit storage, two
// float4 for float32 (the host path reads them one by one).
template <class T, int kHint>
GK_HD void load_unit(const T* p, bool bf, float* o) {
#ifdef __CUDA_ARCH__
  if constexpr (sizeof(T) == 4) {
    const float4 a = ldv<kHint>(reinterpret_cast<const float4*>(p));
    const float4 b = ldv<kHint>(reinterpret_cast<const float4*>(p) + 1);
    o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
    o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
  } else {
    unpack16(ldv<kHint>(reinterpret_cast<const uint4*>(p)), bf, o);
  }
#else
  GK_DISTILL_UNROLL
  for (int k = 0; k < 8; ++k) o[k] = cvt_in(p[k], bf);
#endif
}

// Stores a unit of the gradient: streaming 16-byte stores when `vec`, else element by element.
template <class T>
GK_HD void store_unit(T* p, bool vec, bool bf, const float* v) {
#ifdef __CUDA_ARCH__
  if (vec) {
    if constexpr (sizeof(T) == 4) {
      __stcs(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
      __stcs(reinterpret_cast<float4*>(p) + 1, make_float4(v[4], v[5], v[6], v[7]));
    } else {
      __stcs(reinterpret_cast<uint4*>(p), pack16(v, bf));
    }
    return;
  }
#else
  (void)vec;
#endif
  GK_DISTILL_UNROLL
  for (int k = 0; k < 8; ++k) p[k] = cvt_out<T>(v[k], bf);
}

// ---------------------------------------------------------------------------------------------
// How a row pair is walked. When the student and the teacher row are 16-byte aligned at the same
// column `head` (always so for contiguous [N, V] tensors with 16-byte aligned rows, and for any V
// when both have the same storage size and base alignment): elements [0, head) and [tail, v) one by
// one, [head, tail) in units of 8 read with 16-byte loads (thread t of nth takes units t, t + nth,
// ...: a warp's loads are contiguous). Otherwise (views whose rows are offset differently) the row
// goes element by element, coalesced: correct for any alignment, slower. Gradient units are 16-byte
// stores when the gradient row is aligned at head too (always so when it aliases the student), else
// element stores.
struct RowPlan {
  int64_t head, nvec, tail;
  bool vec;       // both rows 16-byte aligned at head (else: element by element)
  bool gvec;      // the gradient row too
  bool bfs, bft;  // 16-bit student / teacher storage is bfloat16 (else float16)
};

GK_HD bool aligned_at(const void* p, int es, int64_t col) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return a % (uintptr_t)es == 0 && (a + (uintptr_t)es * (uintptr_t)col) % 16u == 0;
}

GK_HD RowPlan plan_row(const void* zs, int ess, const void* zt, int est, const void* g, int64_t v, bool bfs,
                       bool bft) {
  int h = -1;
  for (int k = 0; k < 8 && h < 0; ++k)
    if (aligned_at(zs, ess, k) && aligned_at(zt, est, k)) h = k;
  RowPlan rp;
  rp.vec = h >= 0;
  rp.head = h < 0 ? 0 : (h < v ? h : v);
  rp.nvec = h < 0 ? 0 : (v - rp.head) / 8;
  rp.tail = rp.head + 8 * rp.nvec;
  rp.gvec = rp.vec && g != nullptr && aligned_at(g, ess, rp.head);
  rp.bfs = bfs;
  rp.bft = bft;
  return rp;
}

// The columns of the element slots of one step: slot k < 8 is b0 + k, slot k >= 8 is b1 + k − 8.
struct Cols {
  int64_t b0, b1;
  GK_HD int64_t operator()(int k) const { return k < 8 ? b0 + k : b1 + (k - 8); }
};

template <class TS, class TT, bool kStore, class F>
GK_HD void visit1(const TS* zs, const TT* zt, TS* g, const RowPlan& rp, int64_t j, float inv_t, F& f) {
  float xs[1] = {cvt_in(zs[j], rp.bfs) * inv_t};
  float xt[1] = {cvt_in(zt[j], rp.bft) * inv_t};
  float o[1] = {0.0f};
  f(xs, xt, Cols{j, 0}, o);
  if (kStore) g[j] = cvt_out<TS>(o[0], rp.bfs);
}

// kUnits (1 or 2) units at columns c0 (and c1); every element is read before it is written.
template <class TS, class TT, int kHint, bool kStore, int kUnits, class F>
GK_HD void visit_units(const TS* zs, const TT* zt, TS* g, const RowPlan& rp, int64_t c0, int64_t c1, float inv_t,
                       F& f) {
  constexpr int N = 8 * kUnits;
  float xs[N], xt[N], o[N];
  load_unit<TS, kHint>(zs + c0, rp.bfs, xs);
  if constexpr (kUnits == 2) load_unit<TS, kHint>(zs + c1, rp.bfs, xs + 8);
  load_unit<TT, kHint>(zt + c0, rp.bft, xt);
  if constexpr (kUnits == 2) load_unit<TT, kHint>(zt + c1, rp.bft, xt + 8);
  GK_DISTILL_UNROLL
  for (int k = 0; k < N; ++k) {
    xs[k] *= inv_t;
    xt[k] *= inv_t;
    o[k] = 0.0f;
  }
  f(xs, xt, Cols{c0, c1}, o);
  if (kStore) {
    store_unit(g + c0, rp.gvec, rp.bfs, o);
    if constexpr (kUnits == 2) store_unit(g + c1, rp.gvec, rp.bfs, o + 8);
  }
}

// Thread tid of nth visits its share of the row, forward or reverse. f(xs, xt, cols, out) sees
// N = 16, 8 or 1 elements; with kStore, out[] is written to the gradient row g at those columns.
template <class TS, class TT, bool kRev, int kHint, bool kStore, class F>
GK_HD void walk(const TS* zs, const TT* zt, TS* g, const RowPlan& rp, int64_t v, float inv_t, int tid, int nth, F& f) {
  if (!rp.vec) {
    for (int64_t j = tid; j < v; j += nth) visit1<TS, TT, kStore>(zs, zt, g, rp, j, inv_t, f);
    return;
  }
  const int64_t h = rp.head, nvec = rp.nvec;
  const int64_t units = tid < nvec ? (nvec - 1 - tid) / nth + 1 : 0;  // units tid + k·nth, k < units
  const int64_t c0 = h + 8 * (int64_t)tid, cstep = 8 * (int64_t)nth;    // column of unit k: c0 + k·cstep
  if (!kRev) {
    for (int64_t j = tid; j < h; j += nth) visit1<TS, TT, kStore>(zs, zt, g, rp, j, inv_t, f);
    int64_t k = 0;
    for (; k + 1 < units; k += 2)
      visit_units<TS, TT, kHint, kStore, 2>(zs, zt, g, rp, c0 + k * cstep, c0 + (k + 1) * cstep, inv_t, f);
    if (k < units) visit_units<TS, TT, kHint, kStore, 1>(zs, zt, g, rp, c0 + k * cstep, 0, inv_t, f);
    for (int64_t j = rp.tail + tid; j < v; j += nth) visit1<TS, TT, kStore>(zs, zt, g, rp, j, inv_t, f);
  } else {
    for (int64_t j = rp.tail + tid; j < v; j += nth) visit1<TS, TT, kStore>(zs, zt, g, rp, j, inv_t, f);
    int64_t k = units - 1;
    for (; k >= 1; k -= 2)
      visit_units<TS, TT, kHint, kStore, 2>(zs, zt, g, rp, c0 + k * cstep, c0 + (k - 1) * cstep, inv_t, f);
    if (k == 0) visit_units<TS, TT, kHint, kStore, 1>(zs, zt, g, rp, c0, 0, inv_t, f);
    for (int64_t j = tid; j < h; j += nth) visit1<TS, TT, kStore>(zs, zt, g, rp, j, inv_t, f);
  }
}

// ---------------------------------------------------------------------------------------------
// Pass 1: per-thread online statistics of both rows (+ the KL accumulator).
//   kAcc 0: statistics only (JSD); 1: forward KL (P = teacher); 2: reverse KL (P = student).

struct OnlineState {
  float ms, mt;    // running maxima of u_S, u_T (-inf: nothing finite seen)
  float minf;      // max u_P over the elements where u_Q = -inf (KL)
  float qref;      // u_Q' at the element of the running P maximum m_P (KL): the centring element
  double ss, st;   // Σ exp(u − m) of the student / teacher, relative to ms / mt
  double a;        // Σ exp(u_P − m_P)·(x − xref), relative to m_P (KL); see xref_of
};

// x = u_P − u_Q' of an element, in float32, clamped below (so that e_P·(x − xref) is 0, never NaN,
// where u_P = -inf); xref_of is bitwise the x of the centring element (m_P, qref).
GK_HD float x_of(float up, float uq) { return fmaxf(up - uq, -1e30f); }
template <int kAcc>
GK_HD float xref_of(const OnlineState& st) { return x_of(kAcc == 1 ? st.mt : st.ms, st.qref); }

GK_HD OnlineState online_init() { return OnlineState{-INFINITY, -INFINITY, -INFINITY, 0.0f, 0.0, 0.0, 0.0}; }

template <int kAcc>
struct Pass1 {
  OnlineState st;

  template <int N>
  GK_HD void operator()(const float (&xs)[N], const float (&xt)[N], const Cols&, float (&)[N]) {
    // KL: x = u_P − u_Q' (u_Q' = u_P where u_Q = -inf: those add 0, see kl_value), and the P maximum
    // of the step with its u_Q'.
    float x[N];
    float bp = -INFINITY, bq = 0.0f;
    if (kAcc != 0) {
      GK_DISTILL_UNROLL
      for (int k = 0; k < N; ++k) {
        const float xp = kAcc == 1 ? xt[k] : xs[k];
        const float xq = kAcc == 1 ? xs[k] : xt[k];
        const bool qinf = xq == -INFINITY;
        if (qinf) st.minf = fmaxf(st.minf, xp);
        const float q = qinf ? xp : xq;
        x[k] = x_of(xp, q);
        if (xp > bp) {  // NaN never wins
          bp = xp;
          bq = q;
        }
      }
    }
    float cs = xs[0], ct = xt[0];
    GK_DISTILL_UNROLL
    for (int k = 1; k < N; ++k) {
      cs = fmaxf(cs, xs[k]);  // fmaxf skips NaN; the exps below turn a NaN into a NaN sum
      ct = fmaxf(ct, xt[k]);
    }
    if (kAcc == 2) cs = bp;  // the same maximum (NaN skipped), found with its x
    if (kAcc == 1) ct = bp;
    if (cs > st.ms) {  // a new maximum: rescale (exp(-inf) = 0 while nothing was seen)
      const float f = expf(st.ms - cs);
      if (kAcc == 2) {  // re-centre A on the new maximum's x (A = 0 while ss = 0), then rescale
        st.a = (double)f * (st.a + ((double)xref_of<kAcc>(st) - (double)x_of(cs, bq)) * st.ss);
        st.qref = bq;
      }
      st.ss *= (double)f;
      st.ms = cs;
    }
    if (ct > st.mt) {
      const float f = expf(st.mt - ct);
      if (kAcc == 1) {
        st.a = (double)f * (st.a + ((double)xref_of<kAcc>(st) - (double)x_of(ct, bq)) * st.st);
        st.qref = bq;
      }
      st.st *= (double)f;
      st.mt = ct;
    }
    // With no finite maximum yet every element is -inf (exp gives 0) or NaN; +inf gives NaN.
    const float ms = st.ms == -INFINITY ? 0.0f : st.ms;
    const float mt = st.mt == -INFINITY ? 0.0f : st.mt;
    const float xref = kAcc != 0 ? xref_of<kAcc>(st) : 0.0f;
    float es_sum = 0.0f, et_sum = 0.0f, c = 0.0f;
    GK_DISTILL_UNROLL
    for (int k = 0; k < N; ++k) {
      const float es = fexp_div<kAcc == 0>(xs[k] - ms), et = fexp_div<kAcc == 0>(xt[k] - mt);
      es_sum += es;
      et_sum += et;
      if (kAcc != 0) c = fmaf(kAcc == 1 ? et : es, x[k] - xref, c);  // exactly 0 at the centring element
    }
    st.ss += (double)es_sum;
    st.st += (double)et_sum;
    if (kAcc != 0) st.a += (double)c;
  }
};

// Merges one side of two partial states like merge_stats: an empty part (sum 0, max -inf) takes no
// factor. Returns 0 (take b), 1 (take a) or 2 (combined with factors fa, fb).
GK_HD int merge_side(float am, double as, float bm, double bs, float* m, double* s, float* fa, float* fb) {
  if (as == 0.0) {
    *m = bm;
    *s = bs;
    return 0;
  }
  if (bs == 0.0) {
    *m = am;
    *s = as;
    return 1;
  }
  const float mm = fmaxf(am, bm);
  *fa = expf(am - mm);
  *fb = expf(bm - mm);
  *m = mm;
  *s = as * (double)*fa + bs * (double)*fb;
  return 2;
}

template <int kAcc>
struct OnlineOp {
  GK_HD OnlineState operator()(const OnlineState& a, const OnlineState& b) const {
    OnlineState r;
    float fsa = 0.0f, fsb = 0.0f, fta = 0.0f, ftb = 0.0f;
    const int cs = merge_side(a.ms, a.ss, b.ms, b.ss, &r.ms, &r.ss, &fsa, &fsb);
    const int ct = merge_side(a.mt, a.st, b.mt, b.st, &r.mt, &r.st, &fta, &ftb);
    r.minf = fmaxf(a.minf, b.minf);
    r.qref = 0.0f;
    r.a = 0.0;
    if (kAcc != 0) {
      const int cp = kAcc == 1 ? ct : cs;
      if (cp == 0) {
        r.a = b.a;
        r.qref = b.qref;
      } else if (cp == 1) {
        r.a = a.a;
        r.qref = a.qref;
      } else {  // centre on the part holding the maximum, then rescale both parts
        const float fa = kAcc == 1 ? fta : fsa, fb = kAcc == 1 ? ftb : fsb;
        const float am = kAcc == 1 ? a.mt : a.ms, bm = kAcc == 1 ? b.mt : b.ms;
        const double as = kAcc == 1 ? a.st : a.ss, bs = kAcc == 1 ? b.st : b.ss;
        r.qref = am >= bm ? a.qref : b.qref;
        const double xr = (double)xref_of<kAcc>(r);
        const double aa = a.a + ((double)xref_of<kAcc>(a) - xr) * as;
        const double ba = b.a + ((double)xref_of<kAcc>(b) - xr) * bs;
        r.a = aa * (double)fa + ba * (double)fb;
      }
    }
    return r;
  }
};

// Shuffles of the reduced types, found by detail::warp_reduce / block_reduce through ADL.
#ifdef __CUDACC__
template <class F>
__device__ __forceinline__ OnlineState map_fields(const OnlineState& v, F f) {
  OnlineState r;
  r.ms = f(v.ms);
  r.mt = f(v.mt);
  r.minf = f(v.minf);
  r.qref = f(v.qref);
  r.ss = f(v.ss);
  r.st = f(v.st);
  r.a = f(v.a);
  return r;
}
__device__ __forceinline__ OnlineState shfl_xor(const OnlineState& v, int m) {
  return map_fields(v, [m](auto x) { return detail::shfl_xor(x, m); });
}
__device__ __forceinline__ OnlineState shfl_idx(const OnlineState& v, int l) {
  return map_fields(v, [l](auto x) { return detail::shfl_idx(x, l); });
}
#endif

// lse = m + log Σexp; NaN for a row with no finite maximum, a NaN or a +inf (as the CPU).
GK_HD double lse_of(float m, double s) { return m == -INFINITY ? (double)NAN : (double)m + log(s); }

// The row's KL divergence from the merged state (see the file comment).
template <int kAcc>
GK_HD double kl_value(const OnlineState& st, double lse_s, double lse_t) {
  const double lp = kAcc == 1 ? lse_t : lse_s, lq = kAcc == 1 ? lse_s : lse_t;
  const double sp = kAcc == 1 ? st.st : st.ss;
  if (is_nan(lp)) return 0.0;   // every p_P is NaN: the CPU's x log(x/y) skips them all
  if (is_nan(lq)) return NAN;   // p_P > 0 somewhere, log p_Q NaN
  if (exp_nonpos((float)((double)st.minf - lp)) > 0.0f) return INFINITY;  // p_P > 0 where p_Q = 0
  // mean_pP(x) − (lse_P − lse_Q); the centring element's x is taken exactly (float64).
  const double mp = kAcc == 1 ? (double)st.mt : (double)st.ms;
  return st.a / sp + (mp - (double)st.qref) - (lp - lq);
}

// ---------------------------------------------------------------------------------------------
// Pass 2 of the JSD and the gradient pass: element terms from the row's log-normalisers, each held
// as a float32 pair hi + lo (log p = (u − hi) − lo carries no float32 rounding of lse).

struct LseSplit {
  float hi, lo;
};
GK_HD LseSplit split(double x) {
  const float hi = (float)x;
  return LseSplit{hi, is_finite(hi) ? (float)(x - (double)hi) : 0.0f};
}

// The JSD pass's row sums: the divergence terms, the KL(p_S || M) terms, and for the first-order
// correction of the log-normalisers (row kernel): Σ p_S, Σ p_T (1 up to the error of the float
// statistics behind lse) and Σ p_S·ws.
struct JsdSums {
  double d, k, sps, spt, k2;
};
struct JsdOp {
  GK_HD JsdSums operator()(const JsdSums& a, const JsdSums& b) const {
    return JsdSums{a.d + b.d, a.k + b.k, a.sps + b.sps, a.spt + b.spt, a.k2 + b.k2};
  }
};
#ifdef __CUDACC__
__device__ __forceinline__ JsdSums shfl_xor(const JsdSums& v, int m) {
  return JsdSums{__shfl_xor_sync(0xffffffffu, v.d, m), __shfl_xor_sync(0xffffffffu, v.k, m), __shfl_xor_sync(0xffffffffu, v.sps, m),
                 __shfl_xor_sync(0xffffffffu, v.spt, m), __shfl_xor_sync(0xffffffffu, v.k2, m)};
}
__device__ __forceinline__ JsdSums shfl_idx(const JsdSums& v, int l) {
  return JsdSums{__shfl_sync(0xffffffffu, v.d, l), __shfl_sync(0xffffffffu, v.k, l), __shfl_sync(0xffffffffu, v.sps, l),
                 __shfl_sync(0xffffffffu, v.spt, l), __shfl_sync(0xffffffffu, v.k2, l)};
}
#endif

struct ElemConsts {
  LseSplit ls, lt;   // student / teacher log-normalisers
  double dts_d;      // lse_T − lse_S (the JSD's log-ratio d of an element is u_T − u_S − dts_d)
  double beta_d, omb_d, klsm_d;  // the JSD's β, 1 − β and KL(p_S || M) in float64
  float xref;        // reverse KL: log p_S − log p_T − D = ((u_S − u_T) − xref) − k, where xref is the
  LseSplit k;        //   row's centring (bitwise the dominant element's u_S − u_T) and k = A / S_S
  float hw;          // hard-label weight (gradient, when y >= 0)
  float scale;       // w / T
  int64_t y;         // hard-label target, or -1
};

GK_HD ElemConsts elem_consts(double lse_s, double lse_t, double beta) {
  ElemConsts c;
  c.ls = split(lse_s);
  c.lt = split(lse_t);
  c.dts_d = lse_t - lse_s;
  c.beta_d = beta;
  c.omb_d = 1.0 - beta;
  c.klsm_d = 0.0;
  c.xref = 0.0f;
  c.k = LseSplit{0.0f, 0.0f};
  c.hw = 0.0f;
  c.scale = 0.0f;
  c.y = -1;
  return c;
}

// log(p_S / M) and log(p_T / M) of one element (core/distill.h's mixture_logs, shared with the
// CPU), in float64 from d = (u_T − u_S) − (lse_T − lse_S): the JSD gradient subtracts KL(p_S||M)
// from log(p_S / M), two nearly equal numbers, so float32 logs (~6e-8 of |log(p_S/M)|) would put
// 2e-5 of error in it at V = 151936 where the spec allows 1e-5.
GK_HD MixLogs mix_logs(const ElemConsts& c, float us, float ut) {
  return mixture_logs(c.beta_d, ((double)ut - (double)us) - c.dts_d);
}

// The CPU's divergence_term / kl_student_mixture_term for the JSD in float32, with the same guards
// (m <= 0: nothing; x log(x/m) only for x > 0; NaN probabilities fall through the same way).
struct JsdPass {
  ElemConsts c;
  JsdSums acc;

  template <int N>
  GK_HD void operator()(const float (&xs)[N], const float (&xt)[N], const Cols&, float (&)[N]) {
    double d = 0.0, k = 0.0, sps = 0.0, spt = 0.0, k2 = 0.0;
    GK_DISTILL_UNROLL
    for (int i = 0; i < N; ++i) {
      const float ls = (xs[i] - c.ls.hi) - c.ls.lo, lt = (xt[i] - c.lt.hi) - c.lt.lo;
      const float ps = fexp_div<true>(ls), pt = fexp_div<true>(lt);
      if (ps > 0.0f || pt > 0.0f) {  // M = 0 (or both NaN): 0 log 0
        const MixLogs r = mix_logs(c, xs[i], xt[i]);
        const double ts = ps > 0.0f ? (double)ps * r.s : 0.0;
        const double tt = pt > 0.0f ? (double)pt * r.t : 0.0;
        d += c.beta_d * tt + c.omb_d * ts;
        k += ts;
        k2 += ps > 0.0f ? (double)ps * r.ws : 0.0;
      }
      sps += (double)ps;
      spt += (double)pt;
    }
    acc.d += d;
    acc.k += k;
    acc.sps += sps;
    acc.spt += spt;
    acc.k2 += k2;
  }
};

// ∂(row value)/∂u_S (the CPU's divergence_grad + the hard-label term), times w / T.
template <int kDiv>
struct GradPass {
  ElemConsts c;

  template <int N>
  GK_HD void operator()(const float (&xs)[N], const float (&xt)[N], const Cols& cols, float (&out)[N]) const {
    GK_DISTILL_UNROLL
    for (int i = 0; i < N; ++i) {
      const float ls = (xs[i] - c.ls.hi) - c.ls.lo;
      const float ps = fexp_div<kDiv == kJsd>(ls);
      float g;
      if (kDiv == kForwardKl) {
        g = ps - fexp((xt[i] - c.lt.hi) - c.lt.lo);
      } else if (kDiv == kReverseKl) {
        // log p_S − log p_T − D = x − mean_pS(x), x = u_S − u_T, taken relative to the centring
        // element: near-one-hot rows cancel here, and the dominant element gives exactly −k.
        g = ps <= 0.0f ? 0.0f : ps * ((((xs[i] - xt[i]) - c.xref) - c.k.hi) - c.k.lo);
      } else {
        g = ps <= 0.0f ? 0.0f : (float)(c.omb_d * (double)ps * (mix_logs(c, xs[i], xt[i]).s - c.klsm_d));
      }
      if (c.y >= 0) g += c.hw * (ps - (cols(i) == c.y ? 1.0f : 0.0f));
      out[i] = g * c.scale;
    }
  }
};

// ---------------------------------------------------------------------------------------------
// One row as seen by thread tid of nth.

template <class TS, class TT, int kAcc>
GK_HD OnlineState row_pass1(const TS* zs, const TT* zt, const RowPlan& rp, int64_t v, float inv_t, int tid, int nth) {
  Pass1<kAcc> f{online_init()};
  walk<TS, TT, false, kKeep, false>(zs, zt, (TS*)nullptr, rp, v, inv_t, tid, nth, f);
  return f.st;
}

template <class TS, class TT>
GK_HD JsdSums row_jsd(const TS* zs, const TT* zt, const RowPlan& rp, int64_t v, float inv_t, const ElemConsts& c,
                      int tid, int nth) {
  JsdPass f{c, JsdSums{0.0, 0.0, 0.0, 0.0, 0.0}};
  walk<TS, TT, true, kKeep, false>(zs, zt, (TS*)nullptr, rp, v, inv_t, tid, nth, f);
  return f.acc;
}

// The last pass (KL: the second, JSD: the third) writes the gradient, walking against the direction
// of the pass before it.
template <class TS, class TT, int kDiv>
GK_HD void row_grad(const TS* zs, const TT* zt, TS* g, const RowPlan& rp, int64_t v, float inv_t, const ElemConsts& c,
                    int tid, int nth) {
  GradPass<kDiv> f{c};
  constexpr bool kRev = kDiv != kJsd;
  walk<TS, TT, kRev, kLast, true>(zs, zt, g, rp, v, inv_t, tid, nth, f);
}

// ---------------------------------------------------------------------------------------------
// Kernels.

struct RowParams {
  const void* student;
  const void* teacher;
  void* grad;              // null: loss only
  const void* targets;     // read for the hard-label term only (validated by seq_kernel)
  bool target_i32;
  int64_t ignore_index;
  bool hard;               // targets && hard_label_weight != 0
  bool bfs, bft;           // 16-bit student / teacher storage is bfloat16
  int64_t n, v;
  float inv_t;
  double temperature, beta, hw;
  const double* weight;    // n
  double* wvalue;          // n: weight × row value
  float* row_loss;         // n, optional
  DeviceFlags* flags;
};

__device__ __forceinline__ int64_t load_target(const void* t, bool i32, int64_t r) {
  return i32 ? (int64_t)(static_cast<const int32_t*>(t)[r]) : static_cast<const int64_t*>(t)[r];
}

template <int kBlock, int kRowThreads, class T, class Op>
__device__ __forceinline__ T group_reduce(T v, Op op, const T& identity, ReduceSmem<T>& sm) {
  if constexpr (kRowThreads == 32) {
    (void)identity;
    (void)sm;
    const T r = detail::warp_reduce(v, op);
    // Shuffles order no memory: this is the barrier after which a lane may overwrite what other
    // lanes of the row read before the reduction (the in-place gradient over the target logit).
    __syncwarp();
    return r;
  } else {
    static_assert(kRowThreads == kBlock, "a row is owned by a warp or by the whole block");
    return detail::block_reduce<kBlock>(v, op, identity, sm);
  }
}

// Zeros in a gradient row (0 has the same bits in every storage type).
template <class T>
__device__ __forceinline__ void zero_row(T* g, int64_t v, int tid, int nth) {
  constexpr int W = 16 / (int)sizeof(T);
  const uintptr_t a = reinterpret_cast<uintptr_t>(g);
  int64_t head = v;
  if (a % sizeof(T) == 0) {
    head = (int64_t)(((16u - (unsigned)(a & 15u)) & 15u) / sizeof(T));
    if (head > v) head = v;
  }
  const int64_t nvec = (v - head) / W, tail = head + nvec * W;
  for (int64_t j = tid; j < head; j += nth) g[j] = T(0);
  uint4* gv = reinterpret_cast<uint4*>(g + head);
  for (int64_t i = tid; i < nvec; i += nth) __stcs(gv + i, make_uint4(0u, 0u, 0u, 0u));
  for (int64_t j = tail + tid; j < v; j += nth) g[j] = T(0);
}

template <class TS, class TT, int kDiv, int kBlock, int kRowThreads>
__global__ void __launch_bounds__(kBlock) row_kernel(const RowParams p) {
  // Layout or target errors (kernel 1): write nothing, as the CPU returns before any output.
  if (p.flags->seq_ends != kNoRow || p.flags->seq_order != kNoRow || p.flags->bad_target != kNoRow) return;
  constexpr int kAcc = kDiv == kForwardKl ? 1 : (kDiv == kReverseKl ? 2 : 0);
  constexpr int kRows = kBlock / kRowThreads;
  GK_SHARED(sm1, ReduceSmem<OnlineState>);
  GK_SHARED(sm2, ReduceSmem<JsdSums>);
  const int sub = (int)threadIdx.x / kRowThreads, tid = (int)threadIdx.x % kRowThreads;
  const bool lead = tid == 0;
  // r is the same for every thread of a group: the branches below are group-uniform.
  for (int64_t r = (int64_t)blockIdx.x * kRows + sub; r < p.n; r += (int64_t)gridDim.x * kRows) {
    const double w = p.weight[r];
    TS* g = p.grad ? static_cast<TS*>(p.grad) + r * p.v : nullptr;
    // An ignored row leaves by its target, not only by its weight (whatever the weight's value,
    // ignore_index is never used as an index).
    const int64_t yr = p.targets ? load_target(p.targets, p.target_i32, r) : 0;
    if (w == 0.0 || (p.targets && yr == p.ignore_index)) {
      if (g) zero_row<TS>(g, p.v, tid, kRowThreads);
      if (lead) {
        if (p.row_loss) p.row_loss[r] = 0.0f;
        p.wvalue[r] = 0.0;
      }
      continue;
    }
    const TS* zs = static_cast<const TS*>(p.student) + r * p.v;
    const TT* zt = static_cast<const TT*>(p.teacher) + r * p.v;
    const RowPlan rp = plan_row(zs, (int)sizeof(TS), zt, (int)sizeof(TT), g, p.v, p.bfs, p.bft);
    // The hard-label logit is read before the first barrier: g may alias the student row.
    int64_t y = -1;
    float uy = 0.0f;
    if (p.hard && yr >= 0 && yr < p.v) {  // (seq_kernel flagged any other target: no row runs then)
      y = yr;
      uy = cvt_in(zs[y], p.bfs) * p.inv_t;
    }

    OnlineState st = row_pass1<TS, TT, kAcc>(zs, zt, rp, p.v, p.inv_t, tid, kRowThreads);
    st = group_reduce<kBlock, kRowThreads>(st, OnlineOp<kAcc>{}, online_init(), sm1);
    const double lse_s = lse_of(st.ms, st.ss), lse_t = lse_of(st.mt, st.st);
    ElemConsts c = elem_consts(lse_s, lse_t, p.beta);

    double d, klsm = 0.0;
    if constexpr (kDiv == kJsd) {
      JsdSums js = row_jsd<TS, TT>(zs, zt, rp, p.v, p.inv_t, c, tid, kRowThreads);
      js = group_reduce<kBlock, kRowThreads>(js, JsdOp{}, JsdSums{0.0, 0.0, 0.0, 0.0, 0.0}, sm2);
      d = js.d;
      klsm = js.k;
      // The row sums behind lse_S, lse_T are float32 (~1e-7 off). The JSD gradient subtracts
      // KL(p_S||M) from log(p_S/M), nearly equal, and an error in lse_T − lse_S does not cancel
      // there: lse is corrected by log Σp (the CPU does the same with a second pass) and KL(p_S||M)
      // to first order in the shift Δ of d: KL ≈ (Σ p_S·log(p_S/M) − Δ·Σ p_S·ws) / Σ p_S.
      if (js.sps > 0.0 && js.spt > 0.0 && is_finite(js.sps) && is_finite(js.spt) && is_finite(klsm)) {
        const double cs = log(js.sps), ct = log(js.spt);  // lse_true = lse_used + log Σp
        const double delta = cs - ct;                      // d_true = d_used + Δ
        klsm = (klsm - delta * js.k2) / js.sps;
        c.ls = split(lse_s + cs);
        c.lt = split(lse_t + ct);
        c.dts_d = (lse_t + ct) - (lse_s + cs);
      }
    } else {
      d = kl_value<kAcc>(st, lse_s, lse_t);
    }
    double value = d;
    if (p.hard) value += p.hw * (lse_s - (double)uy);
    if (lead) {
      if (p.row_loss) p.row_loss[r] = (float)value;
      p.wvalue[r] = w * value;
      if (!is_finite(value)) detail::flag_row(&p.flags->bad_value, r);
    }
    if (g) {
      if constexpr (kDiv == kReverseKl) {
        if (is_finite(d) && !is_nan(lse_s)) {  // mean_pS(x) = xref + A / S_S
          c.xref = xref_of<kAcc>(st);
          c.k = split(st.a / st.ss);
        } else {  // D = ±inf or NaN: the CPU's -inf / NaN elements, from the same expression
          c.k = split((lse_s - lse_t) + d);
        }
      }
      c.klsm_d = klsm;
      c.hw = (float)p.hw;
      c.scale = (float)(w / p.temperature);
      c.y = y;
      row_grad<TS, TT, kDiv>(zs, zt, g, rp, p.v, p.inv_t, c, tid, kRowThreads);
    }
  }
}

// Flags and scalars in one allocation, copied back with one memcpy.
struct DistillBlock {
  DeviceFlags flags;
  double tokens, longest, loss;
};

struct PrepParams {
  const int64_t* off;
  int64_t S, n, v;
  const uint8_t* mask;
  const void* targets;
  bool target_i32;
  int64_t ignore_index;
  LossOptions agg;    // aggregation, normalizer, max_completion_length
  double* count;      // S: valid rows per sequence
  double* length;     // S: off[s + 1] − off[s]
  double* weight;     // n
  DistillBlock* blk;
};

// The rows of sequence s, clamped into [0, n] so that a bad layout (reported through the flags)
// never reads or writes out of bounds.
__device__ __forceinline__ void seq_range(const PrepParams& p, int64_t s, int64_t* b, int64_t* e) {
  int64_t lo = p.off[s], hi = p.off[s + 1];
  lo = lo < 0 ? 0 : (lo > p.n ? p.n : lo);
  hi = hi < lo ? lo : (hi > p.n ? p.n : hi);
  *b = lo;
  *e = hi;
}

// A row counts when the mask allows it and its target is not ignore_index (the CPU's `ok`).
__device__ __forceinline__ bool row_counts(const PrepParams& p, int64_t t) {
  if (p.mask && p.mask[t] == 0) return false;
  return !(p.targets && load_target(p.targets, p.target_i32, t) == p.ignore_index);
}

// 1. Layout checks, target checks, per-sequence counts.
__global__ void __launch_bounds__(kSeqThreads) seq_kernel(const PrepParams p) {
  GK_SHARED(sm, ReduceSmem<long long>);
  for (int64_t s = blockIdx.x; s < p.S; s += gridDim.x) {
    const int64_t b0 = p.off[s], e0 = p.off[s + 1];
    if (threadIdx.x == 0) {
      if ((s == 0 && b0 != 0) || (s == p.S - 1 && e0 != p.n)) atomicMin(&p.blk->flags.seq_ends, 0ull);
      if (e0 < b0) detail::flag_row(&p.blk->flags.seq_order, s);
    }
    int64_t b, e;
    seq_range(p, s, &b, &e);
    long long c = 0;
    for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads) {
      if (p.targets) {
        const int64_t y = load_target(p.targets, p.target_i32, t);
        if (y != p.ignore_index && (y < 0 || y >= p.v)) detail::flag_row(&p.blk->flags.bad_target, t);
      }
      c += row_counts(p, t) ? 1 : 0;
    }
    c = detail::block_sum<kSeqThreads>(c, sm);
    if (threadIdx.x == 0) {
      p.count[s] = (double)c;
      p.length[s] = (double)(e0 - b0);
    }
  }
}

// 2. Total valid rows and the longest sequence (integers in doubles: exact in any order).
__global__ void __launch_bounds__(kOneBlockThreads) global_kernel(const PrepParams p) {
  GK_SHARED(sm, ReduceSmem<double>);
  double tokens = 0.0, longest = 0.0;
  for (int64_t s = threadIdx.x; s < p.S; s += kOneBlockThreads) {
    tokens += p.count[s];
    longest = fmax(longest, p.length[s]);
  }
  tokens = detail::block_sum<kOneBlockThreads>(tokens, sm);
  longest = detail::block_max<kOneBlockThreads>(longest, sm, 0.0);
  if (threadIdx.x == 0) {
    p.blk->tokens = tokens;
    p.blk->longest = longest;
  }
}

// 3. Row weights, as the CPU forms them: (ok ? 1 : 0) × aggregation_weight(sequence).
__global__ void __launch_bounds__(kSeqThreads) weight_kernel(const PrepParams p) {
  // A bad layout (decreasing offsets: the clamped ranges of two sequences overlap) writes no
  // weight; the op reports it from the flags.
  if (p.blk->flags.seq_order != kNoRow || p.blk->flags.seq_ends != kNoRow) return;
  const double tokens = p.blk->tokens, longest = p.blk->longest;
  for (int64_t s = blockIdx.x; s < p.S; s += gridDim.x) {
    const double w = aggregation_weight(p.agg, p.count[s], (double)p.S, tokens, longest);
    int64_t b, e;
    seq_range(p, s, &b, &e);
    for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads) p.weight[t] = (row_counts(p, t) ? 1.0 : 0.0) * w;
  }
}

// 5. loss = Σ weight × value over the rows: each thread sums a fixed stride in row order, then a
// fixed tree.
__global__ void __launch_bounds__(kOneBlockThreads) sum_kernel(const double* wvalue, int64_t n, DistillBlock* blk) {
  GK_SHARED(sm, ReduceSmem<double>);
  double acc = 0.0;
  for (int64_t r = threadIdx.x; r < n; r += kOneBlockThreads) acc += wvalue[r];
  acc = detail::block_sum<kOneBlockThreads>(acc, sm);
  if (threadIdx.x == 0) blk->loss = acc;
}

// ---------------------------------------------------------------------------------------------
// Launch.

template <class TS, class TT, int kDiv, int kBlock, int kRowThreads>
Status launch_rows_cfg(const RowParams& p, cudaStream_t s) {
  constexpr int kRows = kBlock / kRowThreads;
  // One group of rows per block (the block scheduler balances the rows), grid-stride beyond the cap.
  const int64_t groups = (p.n + kRows - 1) / kRows;
  const int64_t cap = (int64_t)(GK_DISTILL_MAX_GRID) > 0 ? (int64_t)(GK_DISTILL_MAX_GRID) : 1;
  const unsigned grid = (unsigned)(groups < 1 ? 1 : (groups < cap ? groups : cap));
  GK_LAUNCH(grid, kBlock, 0, s, row_kernel<TS, TT, kDiv, kBlock, kRowThreads>)(p);
  GK_CUDA_CHECK_LAUNCH();
  return Status{};
}

template <class TS, class TT, int kDiv>
Status launch_rows_div(const RowParams& p, cudaStream_t s) {
  if (p.v <= kWarpRowMaxV) return launch_rows_cfg<TS, TT, kDiv, 256, 32>(p, s);
  return launch_rows_cfg<TS, TT, kDiv, kRowBlock, kRowBlock>(p, s);
}

template <class TS, class TT>
Status launch_rows_tt(const RowParams& p, int32_t divergence, cudaStream_t s) {
  if (divergence == kForwardKl) return launch_rows_div<TS, TT, kForwardKl>(p, s);
  if (divergence == kReverseKl) return launch_rows_div<TS, TT, kReverseKl>(p, s);
  return launch_rows_div<TS, TT, kJsd>(p, s);  // as the CPU: any other value is the JSD
}

template <class TS>
Status launch_rows_ts(const RowParams& p, int32_t teacher_dtype, int32_t divergence, cudaStream_t s) {
  if (teacher_dtype == kF32) return launch_rows_tt<TS, float>(p, divergence, s);
  return launch_rows_tt<TS, uint16_t>(p, divergence, s);
}

Status launch_rows(const RowParams& p, int32_t student_dtype, int32_t teacher_dtype, int32_t divergence,
                   cudaStream_t s) {
  if (student_dtype == kF32) return launch_rows_ts<float>(p, teacher_dtype, divergence, s);
  return launch_rows_ts<uint16_t>(p, teacher_dtype, divergence, s);
}

bool logits_dtype(int32_t dt) { return dt == kF32 || dt == kBF16 || dt == kF16; }

}  // namespace

Status distill_loss(DistillArgs& a, cudaStream_t stream) {
  const int64_t n = a.n, v = a.v, S = a.s;
  char buf[160];
  if (S < 1) {  // the CPU's first check (seqOffsets[0] and [S] are checked on the device)
    snprintf(buf, sizeof(buf), "seqOffsets must start at 0 and end at N=%lld", (long long)n);
    return detail::make_status(kShape, buf);
  }
  if (!logits_dtype(a.student_dtype) || !logits_dtype(a.teacher_dtype))
    return detail::make_status(kDtype, "student and teacher logits must be float32, bfloat16 or float16");
  if (a.targets && a.target_dtype != kI32 && a.target_dtype != kI64)
    return detail::make_status(kDtype, "targets must be int32 or int64");
  if (n < 0 || v < 0) return detail::make_status(kShape, "negative logits shape");
  if (!a.seq_offsets || (n > 0 && v > 0 && (!a.student || !a.teacher)))
    return detail::make_status(kInvalid, "student, teacher and seqOffsets are required");

  const size_t blk_b = detail::align256(sizeof(DistillBlock));
  const size_t seq_b = detail::align256(sizeof(double) * (size_t)S);
  const size_t row_b = detail::align256(sizeof(double) * (size_t)n);
  detail::DeviceScratch scratch;
  GK_CUDA_CHECK(scratch.alloc(blk_b + 2 * seq_b + 2 * row_b, stream));
  DistillBlock* blk = scratch.as<DistillBlock>(0);
  double* count = scratch.as<double>(blk_b);
  double* length = scratch.as<double>(blk_b + seq_b);
  double* weight = scratch.as<double>(blk_b + 2 * seq_b);
  double* wvalue = scratch.as<double>(blk_b + 2 * seq_b + row_b);
  GK_CUDA_CHECK(cudaMemsetAsync(&blk->flags, 0xFF, sizeof(DeviceFlags), stream));

  PrepParams pp;
  pp.off = a.seq_offsets;
  pp.S = S;
  pp.n = n;
  pp.v = v;
  pp.mask = a.mask;
  pp.targets = a.targets;
  pp.target_i32 = a.target_dtype == kI32;
  pp.ignore_index = a.ignore_index;
  pp.agg = LossOptions{};
  pp.agg.aggregation = a.aggregation;
  pp.agg.normalizer = a.normalizer;
  pp.agg.max_completion_length = a.max_completion_length;
  pp.count = count;
  pp.length = length;
  pp.weight = weight;
  pp.blk = blk;
  const unsigned seq_grid = detail::grid_for(S, 8);
  GK_LAUNCH(seq_grid, kSeqThreads, 0, stream, seq_kernel)(pp);
  GK_CUDA_CHECK_LAUNCH();
  GK_LAUNCH(1, kOneBlockThreads, 0, stream, global_kernel)(pp);
  GK_CUDA_CHECK_LAUNCH();
  GK_LAUNCH(seq_grid, kSeqThreads, 0, stream, weight_kernel)(pp);
  GK_CUDA_CHECK_LAUNCH();

  if (n > 0) {
    RowParams rp;
    rp.student = a.student;
    rp.teacher = a.teacher;
    rp.grad = a.grad;
    rp.targets = a.targets;
    rp.target_i32 = a.target_dtype == kI32;
    rp.hard = a.targets != nullptr && a.hard_label_weight != 0.0;
    rp.ignore_index = a.ignore_index;
    rp.bfs = a.student_dtype == kBF16;
    rp.bft = a.teacher_dtype == kBF16;
    rp.n = n;
    rp.v = v;
    rp.inv_t = 1.0f / a.temperature;
    rp.temperature = (double)a.temperature;
    rp.beta = a.beta;
    rp.hw = a.hard_label_weight;
    rp.weight = weight;
    rp.wvalue = wvalue;
    rp.row_loss = a.row_loss;
    rp.flags = &blk->flags;
    GK_RETURN_IF_ERROR(launch_rows(rp, a.student_dtype, a.teacher_dtype, a.divergence, stream));
  }
  GK_LAUNCH(1, kOneBlockThreads, 0, stream, sum_kernel)(wvalue, n, blk);
  GK_CUDA_CHECK_LAUNCH();

  DistillBlock h;
  GK_CUDA_CHECK(detail::finish_op(&h, blk, sizeof(h), stream));

  // The CPU's order: layout (start/end, then the first decreasing sequence), targets, then the
  // scalars and the non-finite check.
  if (h.flags.seq_ends != kNoRow) {
    snprintf(buf, sizeof(buf), "seqOffsets must start at 0 and end at N=%lld", (long long)n);
    return detail::make_status(kShape, buf);
  }
  if (h.flags.seq_order != kNoRow) {
    snprintf(buf, sizeof(buf), "seqOffsets must be non-decreasing (at sequence %lld)", (long long)h.flags.seq_order);
    return detail::make_status(kShape, buf);
  }
  if (h.flags.bad_target != kNoRow) {
    snprintf(buf, sizeof(buf), "target id outside [0, V) at row %lld", (long long)h.flags.bad_target);
    return detail::make_status(kTargetRange, buf, (int64_t)h.flags.bad_target);
  }
  a.loss = h.loss;
  a.tokens = h.tokens;
  if (h.flags.bad_value != kNoRow) {
    snprintf(buf, sizeof(buf),
             "non-finite divergence (no finite logit, or teacher mass where the student has none) at row %lld",
             (long long)h.flags.bad_value);
    return detail::make_status(kNonFinite, buf, (int64_t)h.flags.bad_value);
  }
  return Status{};
}

}  // namespace cuda
}  // namespace gk
