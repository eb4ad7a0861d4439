#include "rows.h"

#include "../core/dtype.h"
#include "pool.h"
#include "simd.h"

namespace gk {
namespace cpu {
namespace {

using simd::kLanes;

// Maximum of a block, NaN ignored (a NaN or +inf shows later: its exp makes the sums NaN).
template <int W>
GK_SIMD_INLINE float block_max(const float* u, int64_t n) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  constexpr int K = V::kK;
  F acc[K];
  for (int k = 0; k < K; ++k) acc[k] = simd::splat<F>(-INFINITY);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < K; ++k) {
      const F x = simd::load<F>(u + j + k * W);
      acc[k] = x > acc[k] ? x : acc[k];  // maxps(x, acc): a NaN x leaves acc
    }
  float m = simd::hmax(acc);
  for (; j < n; ++j) m = u[j] > m ? u[j] : m;
  return m;
}

// Σ exp(u - m) (and Σ exp(u - m)(u - m) when kEntropy, Σ exp(u - m)² when kP2) of a block,
// 16 float32 lanes.
template <int W, bool kEntropy, bool kP2>
GK_SIMD_INLINE void block_sums(const float* u, int64_t n, float m, float* s_out, float* t_out, float* s2_out) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  typedef typename V::I I;
  constexpr int K = V::kK;
  F s[K], t[K], q[K];
  for (int k = 0; k < K; ++k) s[k] = t[k] = q[k] = F{};
  const F floor_d = simd::splat<F>(-104.0f);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int k = 0; k < K; ++k) {
      const F d = simd::load<F>(u + j + k * W) - m;
      const F x = simd::exp_nonpos<V>(d);
      s[k] += x;
      if (kEntropy) t[k] += x * simd::select((I)(d < floor_d), floor_d, d);
      if (kP2) q[k] += x * x;
    }
  float ss = simd::hsum(s), tt = kEntropy ? simd::hsum(t) : 0.0f, qq = kP2 ? simd::hsum(q) : 0.0f;
  for (; j < n; ++j) {
    const float d = u[j] - m;
    const float x = exp_nonpos(d);
    ss += x;
    if (kEntropy) tt += entropy_term(x, d);
    if (kP2) qq += x * x;
  }
  *s_out = ss;
  *t_out = tt;
  *s2_out = qq;
}

// Moves running statistics to a new (larger) maximum m2, in float64.
inline void rescale(SegStats* st, float m2) {
  if (st->s != 0.0 || st->t != 0.0) {
    const double dm = (double)st->m - (double)m2;
    const double e = exp(dm);
    st->t = e * (st->t + dm * st->s);
    st->s = e * st->s;
    st->s2 = (e * e) * st->s2;
  }
  st->m = m2;
}

template <int W, bool kEntropy, bool kP2>
GK_SIMD_INLINE SegStats seg_stats_t(const void* row, int32_t dtype, int64_t b, int64_t e, float inv_t) {
  alignas(64) float buf[kBlock];
  SegStats st;
  for (int64_t k = b; k < e; k += kBlock) {
    const int64_t ke = k + kBlock < e ? k + kBlock : e;
    const float* u = block_of<W>(row, dtype, k, ke, inv_t, buf);
    const float bm = block_max<W>(u, ke - k);
    if (bm == -INFINITY) {
      // No finite or +inf element: the block adds nothing, unless it holds a NaN.
      for (int64_t j = 0; j < ke - k; ++j) st.bad |= u[j] != u[j];
      continue;
    }
    if (bm > st.m) rescale(&st, bm);
    float s, t, s2;
    block_sums<W, kEntropy, kP2>(u, ke - k, st.m, &s, &t, &s2);
    st.s += s;
    st.t += t;
    st.s2 += s2;
  }
  // A NaN element makes s NaN (its exp is NaN), a +inf one too (inf - inf): the row is bad.
  st.bad |= !(st.s == st.s) || !(st.t == st.t) || st.m == INFINITY;
  return st;
}
template <int W>
GK_SIMD_INLINE SegStats seg_stats_isa_impl(const void* row, int32_t dtype, int64_t b, int64_t e, float inv_t, bool h, bool p2) {
  if (p2) return h ? seg_stats_t<W, true, true>(row, dtype, b, e, inv_t) : seg_stats_t<W, false, true>(row, dtype, b, e, inv_t);
  return h ? seg_stats_t<W, true, false>(row, dtype, b, e, inv_t) : seg_stats_t<W, false, false>(row, dtype, b, e, inv_t);
}
GK_SIMD_DISPATCH(SegStats, seg_stats_isa, (const void* row, int32_t dtype, int64_t b, int64_t e, float inv_t, bool h, bool p2),
                 (row, dtype, b, e, inv_t, h, p2))

template <int W>
GK_SIMD_INLINE void load_row_isa_impl(const void* z, int32_t dtype, int64_t v, float inv_t, float* u) {
  for (int64_t k = 0; k < v; k += kBlock) {
    const int64_t ke = k + kBlock < v ? k + kBlock : v;
    const float* src = block_of<W>(z, dtype, k, ke, inv_t, u + k);
    if (src != u + k) memcpy(u + k, src, (size_t)(ke - k) * sizeof(float));
  }
}
GK_SIMD_DISPATCH(void, load_row_isa, (const void* z, int32_t dtype, int64_t v, float inv_t, float* u), (z, dtype, v, inv_t, u))

// The gradient of one block into float32 g (g may be u).
template <int W>
GK_SIMD_INLINE void grad_block(const float* u, int64_t n, float lse, float h, float gl, float gh, float inv_t, float* g) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  typedef typename V::I I;
  const F zero = F{}, floor_d = simd::splat<F>(-104.0f);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const F lp = simd::load<F>(u + j) - lse;
    const F p = simd::exp_nonpos<V>(simd::select((I)(lp > zero), zero, lp));
    const F lpc = simd::select((I)(lp < floor_d), floor_d, lp);
    const F gv = gl * (zero - p) - gh * p * (lpc + h);
    simd::store(g + j, gv * inv_t);
  }
  for (; j < n; ++j) g[j] = grad_elem(u[j], lse, h, gl, gh, false, inv_t);
}

template <int W>
GK_SIMD_INLINE void store_grad_isa_impl(const void* z, int32_t dtype, int64_t b, int64_t e, float lse, float h, float gl,
                                    float gh, float inv_t, void* grad) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  alignas(64) float buf[kBlock];
  for (int64_t k = b; k < e; k += kBlock) {
    const int64_t ke = k + kBlock < e ? k + kBlock : e, n = ke - k;
    const float* u = block_of<W>(z, dtype, k, ke, inv_t, buf);
    if (dtype == kF32) {
      grad_block<W>(u, n, lse, h, gl, gh, inv_t, (float*)grad + k);
      continue;
    }
    grad_block<W>(u, n, lse, h, gl, gh, inv_t, buf);
    uint16_t* out = (uint16_t*)grad + k;
    int64_t j = 0;
    if (dtype == kBF16) {
      for (; j + W <= n; j += W) simd::store_bf16<V>(out + j, simd::load<F>(buf + j));
      for (; j < n; ++j) out[j] = f32_to_bf16(buf[j]);
    } else {
      for (; j + W <= n; j += W) simd::store_f16<V>(out + j, simd::load<F>(buf + j));
      for (; j < n; ++j) out[j] = f32_to_f16(buf[j]);
    }
  }
}
GK_SIMD_DISPATCH(void, store_grad_isa, (const void* z, int32_t dtype, int64_t b, int64_t e, float lse, float h, float gl, float gh, float inv_t, void* grad),
                 (z, dtype, b, e, lse, h, gl, gh, inv_t, grad))

}  // namespace

SegStats seg_stats(const void* row, int32_t dtype, int64_t b, int64_t e, float inv_t, bool with_entropy, bool with_p2) {
  return seg_stats_isa(row, dtype, b, e, inv_t, with_entropy, with_p2);
}

SegStats merge_seg(const SegStats& a, const SegStats& b) {
  SegStats r;
  r.bad = a.bad || b.bad;
  if (r.bad) return r;
  if (b.m == -INFINITY) {
    r = a;
    return r;
  }
  if (a.m == -INFINITY) {
    r = b;
    return r;
  }
  SegStats x = a, y = b;
  const float m = a.m > b.m ? a.m : b.m;
  rescale(&x, m);
  rescale(&y, m);
  r.m = m;
  r.s = x.s + y.s;
  r.t = x.t + y.t;
  r.s2 = x.s2 + y.s2;
  return r;
}

RowStats finish_stats(const SegStats& st) {
  RowStats r;
  r.m = st.m;
  if (st.bad || st.m == -INFINITY) {
    // A NaN or +inf logit, or no finite logit at all: the row's outputs are NaN.
    r.s = r.t = NAN;
    return r;
  }
  r.s = (float)st.s;
  r.t = (float)st.t;
  return r;
}

SegStats row_seg_stats(const void* row, int32_t dtype, int64_t v, float inv_t, bool with_entropy, bool with_p2) {
  return merge_segments(segments(v), [&](int64_t k) {
    const int64_t b = k * kSeg;
    return seg_stats(row, dtype, b, b + kSeg < v ? b + kSeg : v, inv_t, with_entropy, with_p2);
  });
}

RowStats row_stats(const void* row, int32_t dtype, int64_t v, float inv_t, bool with_entropy) {
  return finish_stats(row_seg_stats(row, dtype, v, inv_t, with_entropy, false));
}

float sum_p2(const SegStats& st) {
  if (st.bad || st.m == -INFINITY) return NAN;
  return (float)(st.s2 / (st.s * st.s));
}

float load_elem(const void* row, int32_t dtype, int64_t j, float inv_t) {
  if (dtype == kBF16) return bf16_to_f32(((const uint16_t*)row)[j]) * inv_t;
  if (dtype == kF16) return f16_to_f32(((const uint16_t*)row)[j]) * inv_t;
  return ((const float*)row)[j] * inv_t;
}

void load_row(const void* z, int32_t dtype, int64_t v, float inv_t, float* u) { load_row_isa(z, dtype, v, inv_t, u); }

void store_grad(const void* z, int32_t dtype, int64_t b, int64_t e, int64_t target, float lse, float entropy,
                float gl, float gh, float inv_t, void* grad) {
  // The target element is written last, from a value read first, so grad may alias the row.
  const bool has_target = target >= b && target < e;
  const float gt = has_target ? grad_elem(load_elem(z, dtype, target, inv_t), lse, entropy, gl, gh, true, inv_t) : 0.0f;
  store_grad_isa(z, dtype, b, e, lse, entropy, gl, gh, inv_t, grad);
  if (!has_target) return;
  if (dtype == kBF16) ((uint16_t*)grad)[target] = f32_to_bf16(gt);
  else if (dtype == kF16) ((uint16_t*)grad)[target] = f32_to_f16(gt);
  else ((float*)grad)[target] = gt;
}

void zero_row(int32_t dtype, int64_t v, void* grad) { memset(grad, 0, (size_t)v * dtype_size(dtype)); }

}  // namespace cpu
}  // namespace gk
