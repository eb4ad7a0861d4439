#include "rows.h"

#include "../core/dtype.h"
#include "pool.h"

namespace gk {
namespace cpu {
namespace {

constexpr int kLanes = 16;

GK_CLONES void load_f32(const float* z, int64_t v, float inv_t, float* u) {
  for (int64_t j = 0; j < v; ++j) u[j] = z[j] * inv_t;
}
GK_CLONES void load_bf16(const uint16_t* z, int64_t v, float inv_t, float* u) {
  for (int64_t j = 0; j < v; ++j) u[j] = bf16_to_f32(z[j]) * inv_t;
}
GK_CLONES void load_f16(const uint16_t* z, int64_t v, float inv_t, float* u) {
  for (int64_t j = 0; j < v; ++j) u[j] = f16_to_f32(z[j]) * inv_t;
}

// Row maximum; *bad is set when the row holds a NaN or +inf (its outputs are then NaN).
GK_CLONES float row_max(const float* u, int64_t v, bool* bad) {
  float acc[kLanes];
  int32_t nonfinite[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    acc[l] = -INFINITY;
    nonfinite[l] = 0;
  }
  int64_t j = 0;
  for (; j + kLanes <= v; j += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float x = u[j + l];
      acc[l] = x > acc[l] ? x : acc[l];
      nonfinite[l] |= (int32_t)!(x <= 3.402823466e38f);
    }
  float m = -INFINITY;
  int32_t nf = 0;
  for (int l = 0; l < kLanes; ++l) {
    m = acc[l] > m ? acc[l] : m;
    nf |= nonfinite[l];
  }
  for (; j < v; ++j) {
    m = u[j] > m ? u[j] : m;
    nf |= (int32_t)!(u[j] <= 3.402823466e38f);
  }
  *bad = nf != 0;
  return m;
}

// Σ exp(u - m) and Σ exp(u - m)(u - m): float32 lanes over blocks of kBlock elements, block
// sums carried in float64, so the rounding error stays ~1e-7 even for V in the hundreds of
// thousands (a plain float32 running sum drifts to ~1e-5 there).
constexpr int64_t kBlock = 1024;

template <bool kEntropy>
inline void block_sums(const float* u, int64_t v, float m, double* s_out, double* t_out) {
  double S = 0.0, T = 0.0;
  for (int64_t b = 0; b < v; b += kBlock) {
    const int64_t e = b + kBlock < v ? b + kBlock : v;
    float s[kLanes], t[kLanes];
    for (int l = 0; l < kLanes; ++l) s[l] = t[l] = 0.0f;
    int64_t j = b;
    for (; j + kLanes <= e; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        const float d = u[j + l] - m;
        const float x = exp_nonpos(d);
        s[l] += x;
        if (kEntropy) t[l] += entropy_term(x, d);
      }
    }
    float ss = 0.0f, tt = 0.0f;
    for (int l = 0; l < kLanes; ++l) {
      ss += s[l];
      tt += t[l];
    }
    for (; j < e; ++j) {
      const float d = u[j] - m;
      const float x = exp_nonpos(d);
      ss += x;
      if (kEntropy) tt += entropy_term(x, d);
    }
    S += ss;
    T += tt;
  }
  *s_out = S;
  *t_out = T;
}

GK_CLONES void row_sums(const float* u, int64_t v, float m, double* s, double* t) { block_sums<true>(u, v, m, s, t); }
GK_CLONES void row_sum_exp(const float* u, int64_t v, float m, double* s, double* t) { block_sums<false>(u, v, m, s, t); }

GK_CLONES void grad_f32(const float* u, int64_t v, float lse, float h, float gl, float gh, float inv_t, float* g) {
  for (int64_t j = 0; j < v; ++j) g[j] = grad_elem(u[j], lse, h, gl, gh, false, inv_t);
}
GK_CLONES void grad_bf16(const float* u, int64_t v, float lse, float h, float gl, float gh, float inv_t, uint16_t* g) {
  for (int64_t j = 0; j < v; ++j) g[j] = f32_to_bf16(grad_elem(u[j], lse, h, gl, gh, false, inv_t));
}
GK_CLONES void grad_f16(const float* u, int64_t v, float lse, float h, float gl, float gh, float inv_t, uint16_t* g) {
  for (int64_t j = 0; j < v; ++j) g[j] = f32_to_f16(grad_elem(u[j], lse, h, gl, gh, false, inv_t));
}

}  // namespace

void load_row(const void* z, int32_t dtype, int64_t v, float inv_t, float* u) {
  if (dtype == kBF16) load_bf16((const uint16_t*)z, v, inv_t, u);
  else if (dtype == kF16) load_f16((const uint16_t*)z, v, inv_t, u);
  else load_f32((const float*)z, v, inv_t, u);
}

RowStats row_stats(const float* u, int64_t v, bool with_entropy) {
  RowStats st;
  bool bad = false;
  st.m = row_max(u, v, &bad);
  if (bad || st.m == -INFINITY) {
    // A NaN or +inf logit, or no finite logit at all: the row's outputs are NaN.
    st.s = st.t = NAN;
    return st;
  }
  double s, t;
  if (with_entropy) row_sums(u, v, st.m, &s, &t);
  else row_sum_exp(u, v, st.m, &s, &t);
  st.s = (float)s;
  st.t = (float)t;
  return st;
}

void store_row_grad(const float* u, int64_t v, int64_t target, float lse, float entropy, float gl, float gh,
                    float inv_t, int32_t dtype, void* grad) {
  // The target element is written last, from a value read first, so grad may alias the row.
  const bool has_target = target >= 0 && target < v;
  const float gt = has_target ? grad_elem(u[target], lse, entropy, gl, gh, true, inv_t) : 0.0f;
  if (dtype == kBF16) {
    grad_bf16(u, v, lse, entropy, gl, gh, inv_t, (uint16_t*)grad);
    if (has_target) ((uint16_t*)grad)[target] = f32_to_bf16(gt);
  } else if (dtype == kF16) {
    grad_f16(u, v, lse, entropy, gl, gh, inv_t, (uint16_t*)grad);
    if (has_target) ((uint16_t*)grad)[target] = f32_to_f16(gt);
  } else {
    grad_f32(u, v, lse, entropy, gl, gh, inv_t, (float*)grad);
    if (has_target) ((float*)grad)[target] = gt;
  }
}

void zero_row(int32_t dtype, int64_t v, void* grad) { memset(grad, 0, (size_t)v * dtype_size(dtype)); }

}  // namespace cpu
}  // namespace gk
