// Spec §1 on the CPU: fused log-softmax + target gather (+ entropy), and its backward.
#include <cstdio>
#include <vector>

#include "../backend.h"
#include "pool.h"
#include "rows.h"

namespace gk {
namespace cpu {

namespace {
// Few rows and long ones: the rows' segments are spread across the threads (N = 2, V = 151936
// keeps both cores busy). The results are the same bits either way (rows.h).
bool split_rows(int64_t n, int64_t v) { return segments(v) > 1 && n < 2 * (int64_t)num_threads(); }

// Statistics of every row r with need[r], split by segment across the threads.
std::vector<SegStats> split_stats(const LogitsView& x, float inv_t, const std::vector<uint8_t>& need, bool entropy, bool p2 = false) {
  const int64_t nseg = segments(x.v);
  std::vector<SegStats> parts((size_t)(x.n * nseg));
  parallel_for(x.n * nseg, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = i / nseg, k = i % nseg, lo = k * kSeg, hi = lo + kSeg < x.v ? lo + kSeg : x.v;
      if (need[(size_t)r]) parts[(size_t)i] = seg_stats(row_ptr(x.logits, x.dtype, r, x.v), x.dtype, lo, hi, inv_t, entropy, p2);
    }
  });
  std::vector<SegStats> out((size_t)x.n);
  for (int64_t r = 0; r < x.n; ++r) {
    if (!need[(size_t)r]) continue;
    out[(size_t)r] = merge_segments(nseg, [&](int64_t k) { return parts[(size_t)(r * nseg + k)]; });
  }
  return out;
}
}  // namespace

Status token_logprobs(const LogProbArgs& a) {
  Status st;
  const LogitsView& x = a.in;
  const int64_t v = x.v;
  const float inv_t = 1.0f / x.temperature;
  const bool entropy = a.entropy != nullptr, p2 = a.sum_p2 != nullptr;
  FirstRow bad_target, bad_value;
  // Each target is read once; a row whose target is ignored or out of range gets its outputs here.
  std::vector<int64_t> target((size_t)x.n);
  std::vector<uint8_t> need((size_t)x.n);
  for (int64_t r = 0; r < x.n; ++r) {
    const int64_t y = read_target(x.targets, x.target_dtype, r);
    target[(size_t)r] = y;
    need[(size_t)r] = (uint8_t)(y != x.ignore_index && y >= 0 && y < v);
    if (need[(size_t)r]) continue;
    const float out = y == x.ignore_index ? 0.0f : NAN;
    if (y != x.ignore_index) bad_target.report(r);
    a.logp[r] = out;
    if (a.logp64) a.logp64[r] = out;
    if (a.entropy) a.entropy[r] = out;
    if (a.lse) a.lse[r] = out;
    if (a.sum_p2) a.sum_p2[r] = out;
  }
  auto finish = [&](int64_t r, const SegStats& ss) {
    const void* z = row_ptr(x.logits, x.dtype, r, v);
    const RowResult res = finalize_row(finish_stats(ss), load_elem(z, x.dtype, target[(size_t)r], inv_t));
    if (a.sum_p2) a.sum_p2[r] = sum_p2(ss);
    a.logp[r] = res.logp;
    if (a.logp64) a.logp64[r] = res.logp64;
    if (a.entropy) a.entropy[r] = res.entropy;
    if (a.lse) a.lse[r] = res.lse;
    if (a.check_finite && !(isfinite(res.lse) && isfinite(res.logp))) bad_value.report(r);
  };
  if (split_rows(x.n, v)) {
    const std::vector<SegStats> rs = split_stats(x, inv_t, need, entropy, p2);
    for (int64_t r = 0; r < x.n; ++r)
      if (need[(size_t)r]) finish(r, rs[(size_t)r]);
  } else {
    parallel_for(x.n, row_grain(v), [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; ++r)
        if (need[(size_t)r]) finish(r, row_seg_stats(row_ptr(x.logits, x.dtype, r, v), x.dtype, v, inv_t, entropy, p2));
    });
  }
  if (bad_target.any()) set_row_error(&st, kTargetRange, bad_target.row.load(), "target id outside [0, V)");
  else if (bad_value.any()) set_row_error(&st, kNonFinite, bad_value.row.load(), "non-finite log-softmax (a NaN/inf logit, or a row that is entirely -inf)");
  return st;
}

Status token_logprobs_backward(const LogProbBackwardArgs& a) {
  Status st;
  const LogitsView& x = a.in;
  const int64_t v = x.v;
  const float inv_t = 1.0f / x.temperature;
  // Targets are read once and checked before any row is written: a failed call leaves its inputs
  // as they were in place (the device path does the same), and writes zero rows otherwise.
  std::vector<int64_t> target((size_t)x.n);
  FirstRow bad_target;
  for (int64_t r = 0; r < x.n; ++r) {
    const int64_t y = read_target(x.targets, x.target_dtype, r);
    target[(size_t)r] = y;
    if (y != x.ignore_index && (y < 0 || y >= v)) bad_target.report(r);
  }
  if (bad_target.any() && a.grad == x.logits) {
    set_row_error(&st, kTargetRange, bad_target.row.load(), "target id outside [0, V)");
    return st;
  }
  // What each row does: 0 zero its gradient, 1 gradient from the given lse (and entropy),
  // 2 gradient from statistics computed here.
  std::vector<uint8_t> mode((size_t)x.n), need((size_t)x.n);
  std::vector<float> gl((size_t)x.n), gh((size_t)x.n);
  for (int64_t r = 0; r < x.n; ++r) {
    const int64_t y = target[(size_t)r];
    gl[(size_t)r] = a.gl ? a.gl[r] : 0.0f;
    gh[(size_t)r] = a.gh ? a.gh[r] : 0.0f;
    const bool live = y != x.ignore_index && y >= 0 && y < v && (gl[(size_t)r] != 0.0f || gh[(size_t)r] != 0.0f);
    mode[(size_t)r] = !live ? 0 : (a.lse && (a.entropy || gh[(size_t)r] == 0.0f)) ? 1 : 2;
    need[(size_t)r] = mode[(size_t)r] == 2;
  }
  std::vector<float> lse((size_t)x.n), h((size_t)x.n);
  if (a.grad != x.logits) huge_page_hint(a.grad, (size_t)x.n * (size_t)v * dtype_size(x.dtype));
  auto set_stats = [&](int64_t r, const RowStats& rs) {
    const RowResult res = finalize_row(rs, load_elem(row_ptr(x.logits, x.dtype, r, v), x.dtype, target[(size_t)r], inv_t));
    lse[(size_t)r] = res.lse;
    h[(size_t)r] = res.entropy;
  };
  for (int64_t r = 0; r < x.n; ++r)
    if (mode[(size_t)r] == 1) {
      lse[(size_t)r] = a.lse[r];
      h[(size_t)r] = a.entropy ? a.entropy[r] : 0.0f;
    }
  auto grad_part = [&](int64_t r, int64_t lo, int64_t hi) {
    void* g = row_ptr(a.grad, x.dtype, r, v);
    if (mode[(size_t)r] == 0) {
      memset((char*)g + (size_t)lo * dtype_size(x.dtype), 0, (size_t)(hi - lo) * dtype_size(x.dtype));
      return;
    }
    store_grad(row_ptr(x.logits, x.dtype, r, v), x.dtype, lo, hi, target[(size_t)r], lse[(size_t)r], h[(size_t)r],
               gl[(size_t)r], gh[(size_t)r], inv_t, g);
  };
  if (split_rows(x.n, v)) {
    // Statistics with entropy where gh != 0 (one split pass each way), then the gradient by segment.
    std::vector<uint8_t> need_h((size_t)x.n), need_s((size_t)x.n);
    for (int64_t r = 0; r < x.n; ++r) {
      need_h[(size_t)r] = (uint8_t)(need[(size_t)r] && gh[(size_t)r] != 0.0f);
      need_s[(size_t)r] = (uint8_t)(need[(size_t)r] && gh[(size_t)r] == 0.0f);
    }
    const std::vector<SegStats> rh = split_stats(x, inv_t, need_h, true), rs = split_stats(x, inv_t, need_s, false);
    for (int64_t r = 0; r < x.n; ++r)
      if (need[(size_t)r]) set_stats(r, finish_stats(need_h[(size_t)r] ? rh[(size_t)r] : rs[(size_t)r]));
    const int64_t nseg = segments(v);
    parallel_for(x.n * nseg, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) {
        const int64_t r = i / nseg, lo = (i % nseg) * kSeg;
        grad_part(r, lo, lo + kSeg < v ? lo + kSeg : v);
      }
    });
  } else {
    parallel_for(x.n, row_grain(v), [&](int64_t b, int64_t e, int) {
      for (int64_t r = b; r < e; ++r) {
        if (need[(size_t)r])
          set_stats(r, row_stats(row_ptr(x.logits, x.dtype, r, v), x.dtype, v, inv_t, gh[(size_t)r] != 0.0f));
        grad_part(r, 0, v);
      }
    });
  }
  if (bad_target.any()) set_row_error(&st, kTargetRange, bad_target.row.load(), "target id outside [0, V)");
  return st;
}

}  // namespace cpu
}  // namespace gk
