// Portable vectors for the CPU row loops: GCC/Clang vector extensions of the native width of each
// ISA level (W = 16 float32 lanes for x86-64-v4 / AVX-512, 8 for x86-64-v3 / AVX2, 4 for the
// baseline). Every helper is a template on the vector type, so that it is compiled inside the
// function that uses it, with that function's target: a non-template helper is lowered for the
// baseline ISA first, and its 64-byte comparisons become 16 scalar ones.
//
// Each lane does exactly the scalar operations of core/softmax.h and core/dtype.h (the build has
// -ffp-contract=off, so no FMA is formed), and reductions run over 16 logical lanes in a fixed
// order (kLanes below) whatever W is, so every ISA level gives the same bits.
#pragma once
// Every function here is inlined into its caller: the vector ABI warning does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
#include <cstdint>
#include <cstring>

#include "../core/softmax.h"

namespace gk {
namespace cpu {
namespace simd {

constexpr int kLanes = 16;  // logical float32 lanes of every reduction

template <int W>
struct Vec {
  static_assert(kLanes % W == 0, "W must divide the logical lane count");
  static constexpr int kW = W;
  static constexpr int kK = kLanes / W;  // native vectors per logical 16 lanes
  typedef float F __attribute__((vector_size(4 * W)));
  typedef int32_t I __attribute__((vector_size(4 * W)));
  typedef uint32_t U __attribute__((vector_size(4 * W)));
  typedef uint16_t H __attribute__((vector_size(2 * W)));
};

#define GK_SIMD_INLINE inline __attribute__((always_inline))

template <class F>
GK_SIMD_INLINE F splat(float x) {
  return F{} + x;
}
template <class F>
GK_SIMD_INLINE F load(const float* p) {
  F x;
  memcpy(&x, p, sizeof(x));
  return x;
}
template <class F>
GK_SIMD_INLINE void store(float* p, F x) {
  memcpy(p, &x, sizeof(x));
}
// m lanes are 0 or -1 (a comparison's result). (A comparison written as `a < b ? a : b` is one
// min/max instruction where the operands allow; select is the general blend.)
template <class F, class I>
GK_SIMD_INLINE F select(I m, F a, F b) {
  return (F)(((I)a & m) | ((I)b & ~m));
}
template <class U, class I>
GK_SIMD_INLINE U selectu(I m, U a, U b) {
  return (a & (U)m) | (b & ~(U)m);
}

// The 16 logical lanes of K native vectors (lane k*W + w is vector k, lane w).
template <class F, int K>
GK_SIMD_INLINE void spill(const F (&v)[K], float* out) {
  for (int k = 0; k < K; ++k) memcpy(out + k * (int)(sizeof(F) / 4), &v[k], sizeof(F));
}
// Pairwise sum of the 16 logical lanes, in the same order for every W.
template <class F, int K>
GK_SIMD_INLINE float hsum(const F (&v)[K]) {
  float a[kLanes];
  spill(v, a);
  for (int w = kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) a[l] = a[l] + a[l + w];
  return a[0];
}
template <class F, int K>
GK_SIMD_INLINE float hmax(const F (&v)[K]) {
  float a[kLanes];
  spill(v, a);
  float m = a[0];
  for (int l = 1; l < kLanes; ++l) m = a[l] > m ? a[l] : m;
  return m;
}
template <class I>
GK_SIMD_INLINE bool any(I m) {
  constexpr int n = (int)(sizeof(I) / 4);
  int32_t a[n];
  memcpy(a, &m, sizeof(a));
  int32_t r = 0;
  for (int l = 0; l < n; ++l) r |= a[l];
  return r != 0;
}

// exp_nonpos (core/softmax.h) lane by lane: the same operations in the same order. The scalar
// version's two final selects are left out: for x below the clamp (and for -inf) the exponent
// e is <= 0 there, so the scale, and the result, are already +0; NaN still propagates.
template <class V>
GK_SIMD_INLINE typename V::F exp_nonpos(typename V::F x) {
  typedef typename V::F F;
  typedef typename V::I I;
  typedef typename V::U U;
  const F lo = splat<F>(-103.9f);
  const F c = x < lo ? lo : x;  // maxps(lo, x): NaN stays NaN
  const F t = c * 1.44269504088896341f;
  const F shift = splat<F>(12582912.0f);
  const F ts = t + shift;
  const F n = ts - shift;
  const I ni = (I)((U)ts - (U)shift);
  F r = c - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  const F p = exp_poly(r);  // core/softmax.h
  const I e = ni + 127;
  const F scale = (F)((U)(e & (I)(e > 0)) << 23);
  return p * scale;
}

// 16-bit float rows <-> float32 lanes (core/dtype.h, lane by lane).
template <class V>
GK_SIMD_INLINE typename V::F load_bf16(const uint16_t* p) {
  typename V::H h;
  memcpy(&h, p, sizeof(h));
  return (typename V::F)(__builtin_convertvector(h, typename V::U) << 16);
}
template <class V>
GK_SIMD_INLINE void store_bf16(uint16_t* p, typename V::F f) {
  typedef typename V::U U;
  typedef typename V::I I;
  const U u = (U)f;
  const U rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const U nan = (u >> 16) | 0x40u;
  const U r = selectu((I)((u & 0x7FFFFFFFu) > 0x7F800000u), nan, rounded);
  const typename V::H h = __builtin_convertvector(r, typename V::H);
  memcpy(p, &h, sizeof(h));
}
template <class V>
GK_SIMD_INLINE typename V::F load_f16(const uint16_t* p) {
  typedef typename V::F F;
  typedef typename V::U U;
  typedef typename V::I I;
  typename V::H h;
  memcpy(&h, p, sizeof(h));
  const U w = __builtin_convertvector(h, U) << 16;
  const U sign = w & 0x80000000u;
  const U two_w = w + w;
  const F normal = (F)((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  const F sub = (F)((two_w >> 17) | (126u << 23)) - 0.5f;
  const U bits = selectu((I)(two_w < (1u << 27)), (U)sub, (U)normal);
  return (F)(sign | bits);
}
template <class V>
GK_SIMD_INLINE void store_f16(uint16_t* p, typename V::F f) {
  typedef typename V::F F;
  typedef typename V::U U;
  typedef typename V::I I;
  const F af = (F)((U)f & 0x7FFFFFFFu);
  F base = (af * 0x1.0p+112f) * 0x1.0p-110f;
  const U w = (U)f;
  const U shl1_w = w + w;
  const U sign = w & 0x80000000u;
  U bias = shl1_w & 0xFF000000u;
  bias = selectu((I)(bias < 0x71000000u), U{} + 0x71000000u, bias);
  base = (F)((bias >> 1) + 0x07800000u) + base;
  const U bits = (U)base;
  const U exp_bits = (bits >> 13) & 0x00007C00u;
  const U mant_bits = bits & 0x00000FFFu;
  const U nonsign = exp_bits + mant_bits;
  const U r = (sign >> 16) | selectu((I)(shl1_w > 0xFF000000u), U{} + 0x7E00u, nonsign);
  const typename V::H h = __builtin_convertvector(r, typename V::H);
  memcpy(p, &h, sizeof(h));
}

}  // namespace simd
}  // namespace cpu
}  // namespace gk

// Defines NAME(PARAMS) as a dispatch to NAME##_impl<W>(ARGS) compiled for x86-64-v4 (W = 16),
// x86-64-v3 (W = 8) or the baseline (W = 4), picked once from the CPU (GK_SIMD_ISA=v3|base
// forces a lower level, for tests). NAME##_impl must be an always-inline template on W.
namespace gk {
namespace cpu {
int simd_isa();  // 4 (x86-64-v4), 3 (x86-64-v3) or 0 (native/cpu/info.cc)
}  // namespace cpu
}  // namespace gk
#if defined(__GNUC__) && defined(__x86_64__)
#define GK_SIMD_DISPATCH(RET, NAME, PARAMS, ARGS)                                              \
  __attribute__((target("arch=x86-64-v4"))) RET NAME##_v4 PARAMS { return NAME##_impl<16> ARGS; } \
  __attribute__((target("arch=x86-64-v3"))) RET NAME##_v3 PARAMS { return NAME##_impl<8> ARGS; }  \
  RET NAME##_v0 PARAMS { return NAME##_impl<4> ARGS; }                                          \
  RET NAME PARAMS {                                                                             \
    switch (::gk::cpu::simd_isa()) {                                                          \
      case 4: return NAME##_v4 ARGS;                                                            \
      case 3: return NAME##_v3 ARGS;                                                            \
      default: return NAME##_v0 ARGS;                                                           \
    }                                                                                           \
  }
#else
#define GK_SIMD_DISPATCH(RET, NAME, PARAMS, ARGS) \
  RET NAME PARAMS { return NAME##_impl<4> ARGS; }
#endif
