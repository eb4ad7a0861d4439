// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"): a counter-based
// generator, so every backend draws the same numbers for the same (seed, row, step).
#pragma once
#include "common.h"

namespace gk {

struct Philox4 {
  uint32_t v[4];
};

GK_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  *lo = (uint32_t)p;
}

GK_HD Philox4 philox4x32_10(Philox4 ctr, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo32(0xD2511F53u, ctr.v[0], &hi0, &lo0);
    mulhilo32(0xCD9E8D57u, ctr.v[2], &hi1, &lo1);
    const Philox4 next{{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
    ctr = next;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// A uniform double in [0, 1) with 53 random bits, keyed by seed and counted by (row, step).
GK_HD double philox_uniform(uint64_t seed, uint64_t row, uint64_t step) {
  const Philox4 c{{(uint32_t)row, (uint32_t)(row >> 32), (uint32_t)step, (uint32_t)(step >> 32)}};
  const Philox4 r = philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
  return ((double)(r.v[0] >> 5) * 67108864.0 + (double)(r.v[1] >> 6)) * (1.0 / 9007199254740992.0);
}

}  // namespace gk
