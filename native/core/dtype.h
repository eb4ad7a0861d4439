// 16-bit float conversions, branch-free so that the CPU loops vectorise; usable on the device.
#pragma once
#include "common.h"

namespace gk {

GK_HD float bf16_to_f32(uint16_t h) { return bit_cast<float>(uint32_t(h) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
GK_HD uint16_t f32_to_bf16(float f) {
  uint32_t u = bit_cast<uint32_t>(f);
  uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  uint32_t nan = ((u >> 16) | 0x40u);
  return (uint16_t)(((u & 0x7FFFFFFFu) > 0x7F800000u) ? nan : rounded);
}

// IEEE half -> float. Normal and subnormal halves are produced by two float operations
// and the right one picked by comparison (no branches).
GK_HD float f16_to_f32(uint16_t h) {
  const uint32_t w = uint32_t(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  // Normal: shift exponent/mantissa into float position, rebias by 2^-112 (also maps inf/nan).
  const float normal = bit_cast<float>((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  // Subnormal: place the mantissa in a float with exponent 2^-1 and subtract 0.5.
  const float sub = bit_cast<float>((two_w >> 17) | (126u << 23)) - 0.5f;
  const uint32_t bits = two_w < (1u << 27) ? bit_cast<uint32_t>(sub) : bit_cast<uint32_t>(normal);
  return bit_cast<float>(sign | bits);
}

// float -> IEEE half, round to nearest even, overflow to inf, NaN kept.
GK_HD uint16_t f32_to_f16(float f) {
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;  // saturates huge values to inf
  const uint32_t w = bit_cast<uint32_t>(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = bit_cast<float>((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = bit_cast<uint32_t>(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mant_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mant_bits;
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

template <class T> struct Elem;
template <> struct Elem<float> {
  static GK_HD float load(float v) { return v; }
  static GK_HD float store(float v) { return v; }
};
struct bf16_t { uint16_t bits; };
struct f16_t { uint16_t bits; };
template <> struct Elem<bf16_t> {
  static GK_HD float load(bf16_t v) { return bf16_to_f32(v.bits); }
  static GK_HD bf16_t store(float v) { return bf16_t{f32_to_bf16(v)}; }
};
template <> struct Elem<f16_t> {
  static GK_HD float load(f16_t v) { return f16_to_f32(v.bits); }
  static GK_HD f16_t store(float v) { return f16_t{f32_to_f16(v)}; }
};

}  // namespace gk
