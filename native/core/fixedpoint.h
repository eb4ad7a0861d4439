// Spec §8: the exact token masses of the sampler, shared by the CPU and CUDA backends. A weight
// e = exp(u - m) in fixed point, e * 2^90 truncated in an unsigned __int128: exact for floats
// >= 2^-67 and float64 values >= 2^-38 (smaller ones lose < 2^-90 each, far below a float64 ulp of
// the sums, which are >= 1); room for sums of up to 2^38 terms <= 1. Sums of these are exact, so
// their order does not matter, and the topP cut and the inverse-CDF draw compare exact sums: both
// backends pick the same token by construction.
#pragma once
#include "common.h"

namespace gk {

using u128 = unsigned __int128;
constexpr int kFx = 90;

GK_HD u128 fx_of_float(float f) {
  const uint32_t b = bit_cast<uint32_t>(f);
  if (b == 0 || (b >> 31) || (b >> 23) == 255u) return 0;  // 0, negative, inf/NaN (never here)
  const int E = (int)(b >> 23);
  const uint32_t mant = E ? ((b & 0x7FFFFFu) | 0x800000u) : (b & 0x7FFFFFu);
  const int sh = (E ? E : 1) - 150 + kFx;  // f = mant * 2^((E ? E : 1) - 150)
  if (sh >= 0) return sh > 100 ? ~(u128)0 : (u128)mant << sh;
  return sh <= -24 ? 0 : (u128)(mant >> -sh);
}

GK_HD u128 fx_of_double(double d) {
  if (!(d > 0.0)) return 0;  // also NaN
  const uint64_t b = bit_cast<uint64_t>(d);
  const int E = (int)(b >> 52);
  if (E == 0x7FF) return ~(u128)0;
  const uint64_t mant = E ? ((b & 0xFFFFFFFFFFFFFull) | 0x10000000000000ull) : (b & 0xFFFFFFFFFFFFFull);
  const int sh = (E ? E : 1) - 1075 + kFx;  // d = mant * 2^((E ? E : 1) - 1075)
  if (sh >= 0) return sh > 74 ? ~(u128)0 : (u128)mant << sh;
  return sh <= -53 ? 0 : (u128)(mant >> -sh);
}

// x * 2^-90, correctly rounded (so monotone).
GK_HD double fx_to_double(u128 x) {
  const uint64_t hi = (uint64_t)(x >> 64);
  if (hi == 0) return (double)(uint64_t)x * 0x1p-90;
#if defined(__CUDA_ARCH__)
  const int s = 64 - __clzll((long long)hi);  // x has 64 + s significant bits
#else
  const int s = 64 - __builtin_clzll(hi);
#endif
  const uint64_t top = (uint64_t)(x >> s) | (((x & (((u128)1 << s) - 1)) != 0) ? 1ull : 0ull);  // sticky bit
  return ldexp((double)top, s - kFx);
}

// Order-preserving unsigned key of a non-NaN float (-0 and +0 share the key of +0: the
// comparisons treat them as equal), and back.
GK_HD uint32_t float_key(float f) {
  const uint32_t u = bit_cast<uint32_t>(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
GK_HD float key_float(uint32_t k) { return bit_cast<float>((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k); }

// The filters of a row: topK keeps key > kk, or key == kk and j <= jk; topP the same with kp/jp;
// minP keeps (double)u >= floor_u; -inf logits are never kept.
struct SampleFilters {
  float m;
  bool use_k, use_p, use_m;
  uint32_t kk, kp;
  int64_t jk, jp;
  double floor_u;
  GK_HD bool pass_k(int64_t j, float u) const {
    if (!(u > -INFINITY)) return false;
    if (!use_k) return true;
    const uint32_t key = float_key(u);
    return key > kk || (key == kk && j <= jk);
  }
  GK_HD bool kept(int64_t j, float u) const {
    if (!pass_k(j, u)) return false;
    if (use_p) {
      const uint32_t key = float_key(u);
      if (!(key > kp || (key == kp && j <= jp))) return false;
    }
    return !use_m || (double)u >= floor_u;
  }
};

}  // namespace gk
