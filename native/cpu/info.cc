#include <cstdlib>
#include <cstring>

#include "../backend.h"
#include "pool.h"
#include "simd.h"

namespace gk {
namespace cpu {

// The ISA level of the row loops (simd.h), read once. GK_SIMD_ISA=v3|base picks a lower level
// than the CPU has (the tests compare the levels' results bit for bit); it never raises it.
int simd_isa() {
  static const int level = [] {
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    int l = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 0;
    const char* want = getenv("GK_SIMD_ISA");
    if (want && strcmp(want, "v3") == 0 && l > 3) l = 3;
    if (want && strcmp(want, "base") == 0) l = 0;
    return l;
#else
    return 0;
#endif
  }();
  return level;
}

const char* simd_level() {
#if defined(__GNUC__) && defined(__x86_64__)
  switch (simd_isa()) {
    case 4: return "avx512 (x86-64-v4)";
    case 3: return "avx2 (x86-64-v3)";
    default: return "sse2";
  }
#elif defined(__aarch64__)
  return "neon";
#else
  return "scalar";
#endif
}

}  // namespace cpu
}  // namespace gk
