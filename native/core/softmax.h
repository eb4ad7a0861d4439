// Row math of spec section 1: log-softmax statistics, target log-prob, entropy, and the
// element-wise backward. Backends own the loops; the formulas live here once.
#pragma once
#include "common.h"

#if defined(__GNUC__) && !defined(__CUDACC__)
// exp_poly is instantiated on the CPU's vector types (native/cpu/simd.h) and always inlined:
// the vector-ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace gk {

// e^r on the reduced argument of exp_nonpos (|r| <= ln2/2): the degree-7 Taylor polynomial,
// Horner's rule with every product and sum rounded on its own. A template so that the CPU's
// vector lanes (native/cpu/simd.h) evaluate exactly these operations on a vector type.
template <class F>
GK_HD F exp_poly(F r) {
  F p = r * 1.98412698e-4f + 1.38888889e-3f;  // (1/7!)·r + 1/6!
  p = p * r + 8.33333333e-3f;
  p = p * r + 4.16666667e-2f;
  p = p * r + 1.66666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p;
}

// exp(x) for x <= 0 (arguments are always max-shifted): Cody-Waite reduction, degree-7
// polynomial, 2^n by exponent bits. Branch-free so that CPU loops vectorise. Relative error
// about 2e-7; results below 2^-126 flush to 0; NaN propagates; -inf gives 0.
GK_HD float exp_nonpos(float x) {
  const float lo = -103.9f;
  const float c = x < lo ? lo : x;                   // NaN stays NaN (comparison is false)
  const float t = c * 1.44269504088896341f;
  const float shift = 12582912.0f;                   // 1.5 * 2^23: rounds t to an integer
  const float ts = t + shift;
  const float n = ts - shift;
  const int32_t ni = (int32_t)(bit_cast<uint32_t>(ts) - bit_cast<uint32_t>(shift));
  float r = c - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  const float p = exp_poly(r);
  const int32_t e = ni + 127;
  const float scale = bit_cast<float>((uint32_t)(e > 0 ? e : 0) << 23);
  const float out = e > 0 ? p * scale : 0.0f;
  return x < lo ? 0.0f : out;                        // includes -inf; NaN falls through
}

// Softmax statistics of a row relative to its max m:
//   s = Σ exp(u - m),  t = Σ exp(u - m) (u - m)
// so that lse = m + log s and H = lse - Σ p u = log s - t / s.
struct RowStats {
  float m, s, t;
};

// The contribution of one element to t, safe for u = -inf (gives 0, never NaN).
GK_HD float entropy_term(float e, float d) { return e * (d < -104.0f ? -104.0f : d); }

// Combine the statistics of two parts of a row (online softmax).
GK_HD RowStats merge_stats(RowStats a, RowStats b) {
  if (a.s == 0.0f) return b;
  if (b.s == 0.0f) return a;
  const float m = a.m > b.m ? a.m : b.m;
  const float da = a.m - m, db = b.m - m;
  const float ea = expf(da), eb = expf(db);
  RowStats r;
  r.m = m;
  r.s = a.s * ea + b.s * eb;
  r.t = ea * (a.t + da * a.s) + eb * (b.t + db * b.s);
  return r;
}

struct RowResult {
  float lse, logp, entropy;
  double logp64;  // the log-prob before its rounding to float32
};

// u_target is the temperature-scaled logit of the target. The row's final scalars are formed in
// float64 and rounded once (logp = (u_y − m) − log s), so |logp| ~ 10 keeps half-ulp accuracy.
GK_HD RowResult finalize_row(RowStats st, float u_target) {
  RowResult r;
  const double log_s = log((double)st.s);
  r.lse = (float)((double)st.m + log_s);
  const double lp = ((double)u_target - (double)st.m) - log_s;
  r.logp64 = lp > 0.0 ? 0.0 : lp;                    // never above 0; NaN stays NaN
  r.logp = (float)r.logp64;
  const double h = log_s - (double)st.t / (double)st.s;
  r.entropy = (float)(h < 0.0 ? 0.0 : h);            // rounding can give -1e-8; NaN stays NaN
  return r;
}

// ∂L/∂z for one element (spec §1 backward), given the row's lse and entropy and the upstream
// gradients gl = ∂L/∂logp and gh = ∂L/∂H. Computed in float32 and rounded once at the store,
// so the target's "1 - p" is exact before rounding.
GK_HD float grad_elem(float u, float lse, float entropy, float gl, float gh, bool is_target, float inv_t) {
  const float lp = u - lse;
  const float p = exp_nonpos(lp > 0.0f ? 0.0f : lp);
  const float lpc = lp < -104.0f ? -104.0f : lp;
  const float g = gl * ((is_target ? 1.0f : 0.0f) - p) - gh * p * (lpc + entropy);
  return g * inv_t;
}

}  // namespace gk
