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

GK_CLONES float row_max(const float* u, int64_t v) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = -INFINITY;
  int64_t j = 0;
  for (; j + kLanes <= v; j += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] = u[j + l] > acc[l] ? u[j + l] : acc[l];
  float m = -INFINITY;
  for (int l = 0; l < kLanes; ++l) m = acc[l] > m ? acc[l] : m;
  for (; j < v; ++j) m = u[j] > m ? u[j] : m;
  return m;
}

GK_CLONES void row_sums(const float* u, int64_t v, float m, float* s_out, float* t_out) {
  float s[kLanes], t[kLanes];
  for (int l = 0; l < kLanes; ++l) s[l] = t[l] = 0.0f;
  int64_t j = 0;
  for (; j + kLanes <= v; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const float d = u[j + l] - m;
      const float e = exp_nonpos(d);
      s[l] += e;
      t[l] += entropy_term(e, d);
    }
  }
  float ss = 0.0f, tt = 0.0f;
  for (int l = 0; l < kLanes; ++l) {
    ss += s[l];
    tt += t[l];
  }
  for (; j < v; ++j) {
    const float d = u[j] - m;
    const float e = exp_nonpos(d);
    ss += e;
    tt += entropy_term(e, d);
  }
  *s_out = ss;
  *t_out = tt;
}

GK_CLONES float row_sum_exp(const float* u, int64_t v, float m) {
  float s[kLanes];
  for (int l = 0; l < kLanes; ++l) s[l] = 0.0f;
  int64_t j = 0;
  for (; j + kLanes <= v; j += kLanes)
    for (int l = 0; l < kLanes; ++l) s[l] += exp_nonpos(u[j + l] - m);
  float ss = 0.0f;
  for (int l = 0; l < kLanes; ++l) ss += s[l];
  for (; j < v; ++j) ss += exp_nonpos(u[j] - m);
  return ss;
}

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
  st.m = row_max(u, v);
  if (with_entropy) {
    row_sums(u, v, st.m, &st.s, &st.t);
  } else {
    st.s = row_sum_exp(u, v, st.m);
    st.t = 0.0f;
  }
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
