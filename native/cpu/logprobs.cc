// Spec §1 on the CPU: fused log-softmax + target gather (+ entropy), and its backward.
#include <cstdio>

#include "../backend.h"
#include "pool.h"
#include "rows.h"

namespace gk {
namespace cpu {

Status token_logprobs(const LogProbArgs& a) {
  Status st;
  const LogitsView& x = a.in;
  const int64_t v = x.v;
  const float inv_t = 1.0f / x.temperature;
  const bool direct = x.dtype == kF32 && inv_t == 1.0f;  // read float32 rows in place
  Scratch scratch(direct ? 1 : num_threads(), direct ? 1 : v);
  FirstRow bad_target, bad_value;
  parallel_for(x.n, row_grain(v), [&](int64_t b, int64_t e, int slot) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t y = read_target(x.targets, x.target_dtype, r);
      if (y == x.ignore_index) {
        a.logp[r] = 0.0f;
        if (a.logp64) a.logp64[r] = 0.0;
        if (a.entropy) a.entropy[r] = 0.0f;
        if (a.lse) a.lse[r] = 0.0f;
        continue;
      }
      if (y < 0 || y >= v) {
        bad_target.report(r);
        a.logp[r] = NAN;
        if (a.logp64) a.logp64[r] = NAN;
        if (a.entropy) a.entropy[r] = NAN;
        if (a.lse) a.lse[r] = NAN;
        continue;
      }
      const void* z = row_ptr(x.logits, x.dtype, r, v);
      const float* u = (const float*)z;
      if (!direct) {
        load_row(z, x.dtype, v, inv_t, scratch.get(slot));
        u = scratch.get(slot);
      }
      const RowResult res = finalize_row(row_stats(u, v, a.entropy != nullptr), u[y]);
      a.logp[r] = res.logp;
      if (a.logp64) a.logp64[r] = res.logp64;
      if (a.entropy) a.entropy[r] = res.entropy;
      if (a.lse) a.lse[r] = res.lse;
      if (a.check_finite && !(isfinite(res.lse) && isfinite(res.logp))) bad_value.report(r);
    }
  });
  if (bad_target.any()) set_row_error(&st, kTargetRange, bad_target.row.load(), "target id outside [0, V)");
  else if (bad_value.any()) set_row_error(&st, kNonFinite, bad_value.row.load(), "non-finite log-softmax (a NaN/inf logit, or a row that is entirely -inf)");
  return st;
}

Status token_logprobs_backward(const LogProbBackwardArgs& a) {
  Status st;
  const LogitsView& x = a.in;
  const int64_t v = x.v;
  const float inv_t = 1.0f / x.temperature;
  // In place, the targets are checked before any row is written: a failed call leaves its inputs
  // as they were (the device path does the same).
  if (a.grad == x.logits)
    for (int64_t r = 0; r < x.n; ++r) {
      const int64_t y = read_target(x.targets, x.target_dtype, r);
      if (y != x.ignore_index && (y < 0 || y >= v)) {
        set_row_error(&st, kTargetRange, r, "target id outside [0, V)");
        return st;
      }
    }
  Scratch scratch(num_threads(), v);
  FirstRow bad_target;
  parallel_for(x.n, row_grain(v), [&](int64_t b, int64_t e, int slot) {
    for (int64_t r = b; r < e; ++r) {
      void* g = row_ptr(a.grad, x.dtype, r, v);
      const int64_t y = read_target(x.targets, x.target_dtype, r);
      const float gl = a.gl ? a.gl[r] : 0.0f;
      const float gh = a.gh ? a.gh[r] : 0.0f;
      if (y != x.ignore_index && (y < 0 || y >= v)) {
        bad_target.report(r);
        zero_row(x.dtype, v, g);
        continue;
      }
      if (y == x.ignore_index || (gl == 0.0f && gh == 0.0f)) {
        zero_row(x.dtype, v, g);
        continue;
      }
      float* u = scratch.get(slot);
      load_row(row_ptr(x.logits, x.dtype, r, v), x.dtype, v, inv_t, u);
      float lse, h = 0.0f;
      if (a.lse && (a.entropy || gh == 0.0f)) {
        lse = a.lse[r];
        h = a.entropy ? a.entropy[r] : 0.0f;
      } else {
        const RowResult res = finalize_row(row_stats(u, v, gh != 0.0f), u[y]);
        lse = res.lse;
        h = res.entropy;
      }
      store_row_grad(u, v, y, lse, h, gl, gh, inv_t, x.dtype, g);
    }
  });
  if (bad_target.any()) set_row_error(&st, kTargetRange, bad_target.row.load(), "target id outside [0, V)");
  return st;
}

}  // namespace cpu
}  // namespace gk
