// Shared definitions for host (CPU backend) and device (CUDA backend) code.
#pragma once
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include <math.h>

#if defined(__CUDACC__)
#define GK_HD __host__ __device__ __forceinline__
#else
#define GK_HD inline __attribute__((always_inline))
#endif

namespace gk {

// Element types crossing the binding. The numbers are part of the binding's ABI (lib/native.ts).
enum DType : int32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kF64 = 3,
  kI32 = 4,
  kI64 = 5,
  kU8 = 6,
};

// Stable error codes; lib/errors.ts maps them to the JS `code` strings.
enum Code : int32_t {
  kOk = 0,
  kShape = 1,         // GK_SHAPE
  kDtype = 2,         // GK_DTYPE
  kTargetRange = 3,   // GK_TARGET_RANGE
  kNonFinite = 4,     // GK_NONFINITE
  kCuda = 5,          // GK_CUDA
  kOom = 6,           // GK_OOM
  kInvalid = 7,       // GK_INVALID_ARG
  kInternal = 8,      // GK_INTERNAL
};

struct Status {
  int32_t code = kOk;
  int64_t row = -1;      // first offending row, where meaningful
  char message[200] = {0};
  bool ok() const { return code == kOk; }
};

template <class To, class From>
GK_HD To bit_cast(From f) {
  To t;
  memcpy(&t, &f, sizeof(To));
  return t;
}

GK_HD float clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

// a * b and a + b rounded separately, on every backend: nvcc would fuse `s += a * b` into one
// FMA (it has no FP_CONTRACT pragma) while the x86-64 host build rounds the product first, and
// sums that must agree bit for bit (group statistics, exact zero-variance tests) use these.
GK_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
GK_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

}  // namespace gk
