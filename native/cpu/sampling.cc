// Spec §8 on the CPU: sampling with log-probs, counter-based (Philox) so that every backend
// draws the same token for the same seed, row and step.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "../backend.h"
#include "../core/philox.h"
#include "pool.h"
#include "rows.h"

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
  Scratch scratch(threads, v);
  ScratchRows<uint8_t> keep_s(threads, v);
  ScratchRows<int32_t> idx_s(threads, v);
  FirstRow bad;
  parallel_for(x.n, row_grain(v), [&](int64_t b, int64_t e, int slot) {
    float* u = scratch.get(slot);
    uint8_t* keep = keep_s.get(slot);
    IdList idx{idx_s.get(slot), 0};
    for (int64_t r = b; r < e; ++r) {
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
        int64_t best = 0;
        for (int64_t j = 1; j < v; ++j) if (u[j] > u[best]) best = j;
        a.tokens[r] = (int32_t)best;
        a.logp[r] = finalize_row(rs, u[best]).logp;  // bit-identical to token_logprobs
        a.logp_truncated[r] = 0.0f;
        continue;
      }
      int64_t kept = 0;
      for (int64_t j = 0; j < v; ++j) kept += (keep[j] = (uint8_t)(u[j] > -INFINITY));
      if (a.top_k > 0 && a.top_k < kept) {
        // Keep the top_k largest; ties at the boundary go to the lower index.
        idx.clear();
        for (int64_t j = 0; j < v; ++j) if (keep[j]) idx.push_back((int32_t)j);
        auto before = [&](int32_t p, int32_t q) { return u[p] > u[q] || (u[p] == u[q] && p < q); };
        std::nth_element(idx.begin(), idx.begin() + (a.top_k - 1), idx.end(), before);
        const int32_t pivot = idx[(size_t)(a.top_k - 1)];
        for (int64_t j = 0; j < v; ++j) keep[j] = (uint8_t)(keep[j] && !before(pivot, (int32_t)j));
        kept = a.top_k;
      }
      if (a.top_p < 1.0) {
        // Smallest prefix, by descending probability, whose mass reaches top_p (the token that
        // crosses it is kept). The prefix is found among the k most likely tokens, k growing
        // 4x until it holds enough mass: peaked distributions never sort the whole row.
        idx.clear();
        double z = 0.0;
        for (int64_t j = 0; j < v; ++j)
          if (keep[j]) {
            idx.push_back((int32_t)j);
            z += (double)exp_nonpos(u[j] - m);
          }
        auto before = [&](int32_t p, int32_t q) { return u[p] > u[q] || (u[p] == u[q] && p < q); };
        size_t cut = idx.size();
        for (size_t k = 256;; k *= 4) {
          const size_t kk = k < idx.size() ? k : idx.size();
          std::partial_sort(idx.begin(), idx.begin() + kk, idx.end(), before);
          double cum = 0.0;
          bool found = false;
          for (size_t i = 0; i < kk; ++i) {
            cum += (double)exp_nonpos(u[idx[i]] - m) / z;
            if (cum >= a.top_p) {
              cut = i + 1;
              found = true;
              break;
            }
          }
          if (found || kk == idx.size()) break;
        }
        for (size_t i = cut; i < idx.size(); ++i) keep[idx[i]] = 0;
      }
      if (a.min_p > 0.0) {
        const double floor_u = (double)m + std::log(a.min_p);
        for (int64_t j = 0; j < v; ++j) keep[j] = (uint8_t)(keep[j] && (double)u[j] >= floor_u);
      }
      // Kept mass and the inverse-CDF scan use the same per-element values, so the scan always
      // ends on a kept token.
      double zk = 0.0;
      for (int64_t j = 0; j < v; ++j) if (keep[j]) zk += (double)exp_nonpos(u[j] - m);
      const double target = philox_uniform(a.seed, (uint64_t)(a.row_ids ? a.row_ids[r] : a.row_offset + r), a.step) * zk;
      double cum = 0.0;
      int64_t tok = -1;
      for (int64_t j = 0; j < v; ++j) {
        if (!keep[j]) continue;
        tok = j;
        cum += (double)exp_nonpos(u[j] - m);
        if (cum > target) break;
      }
      if (tok < 0) {  // no kept token (cannot happen for a finite row; never index with -1)
        bad.report(r);
        a.tokens[r] = -1;
        a.logp[r] = a.logp_truncated[r] = NAN;
        continue;
      }
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
