// Spec §8 on the CPU: sampling with log-probs, counter-based (Philox) so that every backend
// draws the same token for the same seed, row and step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "../backend.h"
#include "../core/fixedpoint.h"
#include "../core/philox.h"
#include "pool.h"
#include "rows.h"
#include "simd.h"

namespace gk {
namespace cpu {

namespace {
// The ids being ranked: a fixed buffer of V entries (scratch) and how many are in use.
struct IdList {
  int32_t* data;
  size_t count;
  void clear() { count = 0; }
  void push_back(int32_t j) { data[count++] = j; }
  size_t size() const { return count; }
  int32_t* begin() { return data; }
  int32_t* end() { return data + count; }
  int32_t operator[](size_t i) const { return data[i]; }
};

// e[j] = exp_nonpos(u[j] - m) for a row, vectorised.
template <int W>
GK_SIMD_INLINE void weights_isa_impl(const float* u, int64_t v, float m, float* e) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  int64_t j = 0;
  for (; j + W <= v; j += W) simd::store(e + j, simd::exp_nonpos<V>(simd::load<F>(u + j) - m));
  for (; j < v; ++j) e[j] = exp_nonpos(u[j] - m);
}
GK_SIMD_DISPATCH(void, weights_isa, (const float* u, int64_t v, float m, float* e), (u, v, m, e))

using Filters = SampleFilters;  // core/fixedpoint.h, as the CUDA sampler

// topP on the topK distribution: the largest key K such that the exact mass of the keys >= K
// reaches thr = max(topP · Z, 1 ulp), then the fewest of K's ties (lowest indices first) that
// reach it. Radix selection on 8-bit digits of the key, the candidates narrowed at each level.
// False when the mass never reaches thr (topP within ulps of 1: keep all).
struct Cand {
  uint32_t key;
  int32_t j;
};
bool top_p_cut(const float* u, const float* e, int64_t v, float m, double top_p, Filters* f, Cand* cand) {
  int64_t nc = 0;
  u128 z = 0;
  for (int64_t j = 0; j < v; ++j)
    if (f->pass_k(j, u[j])) {
      cand[nc++] = Cand{float_key(u[j]), (int32_t)j};
      z += fx_of_float(e[j]);
    }
  u128 thr = fx_of_double(top_p * fx_to_double(z));
  if (thr < 1) thr = 1;
  uint32_t prefix = 0;
  u128 above = 0;
  uint64_t eq_cnt = 0;
  for (int level = 0; level < 4; ++level) {
    const int shift = 24 - 8 * level;
    u128 mass[256] = {};
    uint64_t cnt[256] = {};
    for (int64_t i = 0; i < nc; ++i) {
      const int d = (int)((cand[i].key >> shift) & 255u);
      mass[d] += fx_of_float(e[cand[i].j]);
      ++cnt[d];
    }
    int digit = -1;
    u128 run = above;
    for (int d = 255; d >= 0; --d) {
      const u128 nx = run + mass[d];
      if (nx >= thr) {
        digit = d;
        break;
      }
      run = nx;
    }
    if (digit < 0) return false;
    above = run;
    eq_cnt = cnt[digit];
    prefix |= (uint32_t)digit << shift;
    int64_t k = 0;  // the candidates in the chosen digit, in index order
    for (int64_t i = 0; i < nc; ++i)
      if ((int)((cand[i].key >> shift) & 255u) == digit) cand[k++] = cand[i];
    nc = k;
  }
  f->use_p = true;
  f->kp = prefix;
  // Every tie weighs the same q: the fewest ties that reach thr, and the index of the last of them.
  const u128 q = fx_of_float(exp_nonpos(key_float(prefix) - m));
  uint64_t lo = 1, hi = eq_cnt;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    if (above + (u128)mid * q >= thr) hi = mid;
    else lo = mid + 1;
  }
  f->jp = lo < eq_cnt ? cand[lo - 1].j : INT64_MAX;
  return true;
}
}  // namespace

Status sample_tokens(const SampleArgs& a) {
  Status st;
  const LogitsView& x = a.in;
  const int64_t v = x.v;
  const float inv_t = 1.0f / x.temperature;
  if (v > INT32_MAX) {
    st.code = kShape;
    snprintf(st.message, sizeof(st.message), "sampling needs V < 2^31 columns");
    return st;
  }
  if (!(x.temperature > 0.0f) || !std::isfinite(inv_t) || a.top_k < 0 || !(a.top_p > 0.0 && a.top_p <= 1.0) ||
      !(a.min_p >= 0.0 && a.min_p < 1.0)) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "need temperature > 0 (finite reciprocal), topK >= 0, 0 < topP <= 1, 0 <= minP < 1");
    return st;
  }
  // Per-thread scratch, allocated by the threads that get rows: the row, its keep flags and
  // the ids being ranked (at most V of them).
  const int threads = num_threads();
  Scratch scratch(threads, v), e_s(threads, v);
  ScratchRows<int32_t> idx_s(threads, v);
  ScratchRows<uint64_t> cand_s(threads, a.top_p < 1.0 ? v : 1);   // Cand: 8 bytes
  ScratchRows<u128> bsum_s(threads, (v + kBlock - 1) / kBlock);
  FirstRow bad;
  parallel_for(x.n, row_grain(v), [&](int64_t rb, int64_t re, int slot) {
    float* u = scratch.get(slot);
    IdList idx{idx_s.get(slot), 0};
    for (int64_t r = rb; r < re; ++r) {
      load_row(row_ptr(x.logits, x.dtype, r, v), x.dtype, v, inv_t, u);
      const RowStats rs = row_stats(u, kF32, v, 1.0f, false);
      const float m = rs.m;
      const double lse = (double)m + std::log((double)rs.s);
      if (!std::isfinite(lse)) {
        bad.report(r);
        a.tokens[r] = -1;
        a.logp[r] = a.logp_truncated[r] = NAN;
        continue;
      }
      if (a.greedy) {
        int64_t best = 0;  // the first maximum: m is the row's largest value
        while (best + 1 < v && !(u[best] == m)) ++best;
        a.tokens[r] = (int32_t)best;
        a.logp[r] = finalize_row(rs, u[best]).logp;  // bit-identical to token_logprobs
        a.logp_truncated[r] = 0.0f;
        continue;
      }
      // The weights e = exp(u − m), once; the filters; the exact kept mass per block of
      // kBlock elements; then the first token whose exact prefix exceeds u · Z.
      float* e = e_s.get(slot);
      weights_isa(u, v, m, e);
      Filters f{};
      f.m = m;
      f.jk = f.jp = INT64_MAX;
      const bool filtered = a.top_k > 0 || a.top_p < 1.0 || a.min_p > 0.0;
      if (filtered) {
        int64_t kept = 0;
        for (int64_t j = 0; j < v; ++j) kept += u[j] > -INFINITY;
        if (a.top_k > 0 && a.top_k < kept) {
          // The top_k-th largest; ties at the boundary go to the lower index.
          idx.clear();
          for (int64_t j = 0; j < v; ++j) if (u[j] > -INFINITY) idx.push_back((int32_t)j);
          auto before = [&](int32_t p, int32_t q) { return u[p] > u[q] || (u[p] == u[q] && p < q); };
          std::nth_element(idx.begin(), idx.begin() + (a.top_k - 1), idx.end(), before);
          const int32_t pivot = idx[(size_t)(a.top_k - 1)];
          f.use_k = true;
          f.kk = float_key(u[pivot]);
          f.jk = pivot;
        }
        if (a.top_p < 1.0) top_p_cut(u, e, v, m, a.top_p, &f, (Cand*)cand_s.get(slot));
        if (a.min_p > 0.0) {
          f.use_m = true;
          f.floor_u = (double)m + std::log(a.min_p);
        }
      }
      const int64_t nb = (v + kBlock - 1) / kBlock;
      u128* bsum = (u128*)bsum_s.get(slot);
      u128 z = 0;
      for (int64_t bk = 0; bk < nb; ++bk) {
        const int64_t j1 = (bk + 1) * kBlock < v ? (bk + 1) * kBlock : v;
        u128 s = 0;
        if (filtered) {
          for (int64_t j = bk * kBlock; j < j1; ++j) if (f.kept(j, u[j])) s += fx_of_float(e[j]);
        } else {
          for (int64_t j = bk * kBlock; j < j1; ++j) s += fx_of_float(e[j]);
        }
        bsum[bk] = s;
        z += s;
      }
      int64_t tok = -1;
      if (z > 0) {
        const double ud = philox_uniform(a.seed, (uint64_t)(a.row_ids ? a.row_ids[r] : a.row_offset + r), a.step);
        u128 target = fx_of_double(ud * fx_to_double(z));
        if (target >= z) target = z - 1;
        u128 run = 0;
        for (int64_t bk = 0; bk < nb && tok < 0; ++bk) {
          if (run + bsum[bk] <= target) {
            run += bsum[bk];
            continue;
          }
          const int64_t j1 = (bk + 1) * kBlock < v ? (bk + 1) * kBlock : v;
          for (int64_t j = bk * kBlock; j < j1; ++j) {
            if (filtered && !f.kept(j, u[j])) continue;
            run += fx_of_float(e[j]);
            if (run > target) {
              tok = j;
              break;
            }
          }
        }
      }
      if (tok < 0) {  // no kept token with a positive weight (cannot happen for a finite row)
        bad.report(r);
        a.tokens[r] = -1;
        a.logp[r] = a.logp_truncated[r] = NAN;
        continue;
      }
      const double zk = fx_to_double(z);
      a.tokens[r] = (int32_t)tok;
      a.logp[r] = finalize_row(rs, u[tok]).logp;  // bit-identical to token_logprobs
      a.logp_truncated[r] = (float)((double)(u[tok] - m) - std::log(zk));
    }
  });
  if (bad.any()) set_row_error(&st, kNonFinite, bad.row.load(), "no finite distribution (a NaN/+inf logit, or all -inf)");
  return st;
}

}  // namespace cpu
}  // namespace gk
