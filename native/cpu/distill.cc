// Spec §7 on the CPU: distillation loss + ∂loss/∂student-logits, per row: one pass for both
// rows' log-normalisers, one for the divergence (and its row statistics), one that writes the
// gradient. Rows stay in per-thread float32 scratch, allocated by the threads that get rows; extra
// memory is O(min(threads, rows)·V + N).
#include <cmath>
#include <cstdio>
#include <vector>

#include "../backend.h"
#include "../core/dtype.h"
#include "pool.h"
#include "rows.h"

namespace gk {
namespace cpu {

namespace {
void store(int32_t dtype, void* row, int64_t j, float g) {
  if (dtype == kBF16) ((uint16_t*)row)[j] = f32_to_bf16(g);
  else if (dtype == kF16) ((uint16_t*)row)[j] = f32_to_f16(g);
  else ((float*)row)[j] = g;
}
}  // namespace

Status distill_loss(DistillArgs& a) {
  Status st;
  const int64_t v = a.v, n = a.n, S = a.s;
  a.loss = 0.0;
  a.tokens = 0.0;
  if (n < 0 || v < 1) {
    st.code = kShape;
    snprintf(st.message, sizeof(st.message), "logits must have N >= 0 rows and V >= 1 columns");
    return st;
  }
  // Every offset is checked (on a private copy) before any row is indexed with it.
  std::vector<int64_t> offsets;
  st = copy_offsets(a.seq_offsets, S, n, &offsets);
  if (!st.ok()) return st;
  const int64_t* off = offsets.data();
  // The aggregation weight is 1/normalizer (or 1/(S·maxCompletionLength)): both must have a
  // finite reciprocal, or a row's weight becomes inf or NaN.
  if (!std::isfinite(a.normalizer) || a.normalizer < 0.0 || (a.normalizer > 0.0 && !std::isfinite(1.0 / a.normalizer)) ||
      !std::isfinite(a.max_completion_length) || a.max_completion_length < 0.0 ||
      (a.max_completion_length > 0.0 && !std::isfinite(1.0 / ((double)S * a.max_completion_length)))) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "normalizer and maxCompletionLength must be 0 or positive with a finite reciprocal");
    return st;
  }
  if (!(a.temperature > 0.0f) || !std::isfinite(1.0f / a.temperature)) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "temperature must be > 0 with a finite reciprocal in float32");
    return st;
  }
  if (n == 0) return st;
  // Valid rows (a flag, never inferred from the weight's value) and the aggregation weight of
  // each (spec §4, as the GRPO loss).
  std::vector<uint8_t> valid((size_t)n, 0);
  std::vector<double> weight((size_t)n, 0.0);
  LossOptions agg{};
  agg.aggregation = a.aggregation;
  agg.normalizer = a.normalizer;
  agg.max_completion_length = a.max_completion_length;
  double tokens = 0.0, longest = 0.0;
  std::vector<double> count((size_t)S, 0.0);
  FirstRow bad_target, bad_value;
  for (int64_t s = 0; s < S; ++s) {
    longest = std::fmax(longest, (double)(off[s + 1] - off[s]));
    for (int64_t t = off[s]; t < off[s + 1]; ++t) {
      bool ok = !a.mask || a.mask[t] != 0;
      if (a.targets) {
        const int64_t y = read_target(a.targets, a.target_dtype, t);
        if (y == a.ignore_index) ok = false;
        else if (y < 0 || y >= v) bad_target.report(t);
      }
      valid[(size_t)t] = ok ? 1 : 0;
      count[(size_t)s] += ok ? 1.0 : 0.0;
    }
    tokens += count[(size_t)s];
  }
  if (bad_target.any()) {
    set_row_error(&st, kTargetRange, bad_target.row.load(), "target id outside [0, V)");
    return st;
  }
  for (int64_t s = 0; s < S; ++s) {
    const double w = aggregation_weight(agg, count[(size_t)s], (double)S, tokens, longest);
    for (int64_t t = off[s]; t < off[s + 1]; ++t) weight[(size_t)t] = valid[(size_t)t] ? w : 0.0;
  }

  const float inv_t = 1.0f / a.temperature;
  const int threads = num_threads();
  Scratch su(threads, v), tu(threads, v), sp(threads, v), tp(threads, v);
  std::vector<double> row_value((size_t)n, 0.0);
  parallel_for(n, row_grain(v), [&](int64_t b, int64_t e, int slot) {
    for (int64_t r = b; r < e; ++r) {
      const double w = weight[(size_t)r];
      void* g = a.grad ? row_ptr(a.grad, a.student_dtype, r, v) : nullptr;
      if (!valid[(size_t)r]) {
        if (g) zero_row(a.student_dtype, v, g);
        if (a.row_loss) a.row_loss[r] = 0.0f;
        continue;
      }
      // The hard-label target, read once and range-checked where it is used (the caller's
      // array may have changed since the first pass).
      int64_t y = -1;
      if (a.targets && a.hard_label_weight != 0.0) {
        y = read_target(a.targets, a.target_dtype, r);
        if (y < 0 || y >= v) {
          bad_target.report(r);
          if (g) zero_row(a.student_dtype, v, g);
          if (a.row_loss) a.row_loss[r] = 0.0f;
          continue;
        }
      }
      float* us = su.get(slot);
      float* ut = tu.get(slot);
      float* ps = sp.get(slot);  // p_S and p_T of the row, kept for the gradient pass
      float* pt = tp.get(slot);
      load_row(row_ptr(a.student, a.student_dtype, r, v), a.student_dtype, v, inv_t, us);
      load_row(row_ptr(a.teacher, a.teacher_dtype, r, v), a.teacher_dtype, v, inv_t, ut);
      const RowStats ss = row_stats(us, kF32, v, 1.0f, false), ts = row_stats(ut, kF32, v, 1.0f, false);
      double lse_s = (double)ss.m + std::log((double)ss.s);
      double lse_t = (double)ts.m + std::log((double)ts.s);
      // The float32 row sums leave the log-normalisers ~1e-7 off. The KL gradients shrug that off,
      // the JSD's does not (an error in lse_T − lse_S shifts log(p_S/M) element by element, not
      // uniformly, so it stays in log(p_S/M) − KL(p_S||M)): both are corrected by log Σp, summed in
      // float64 over the probabilities the pass computes anyway.
      double sum_s = 0.0, sum_t = 0.0;
      for (int64_t j = 0; j < v; ++j) {
        const PairProbs p = pair_probs(us[j], ut[j], lse_s, lse_t);
        ps[j] = (float)p.ps;
        pt[j] = (float)p.pt;
        sum_s += p.ps;
        sum_t += p.pt;
      }
      const double rs = sum_s > 0.0 && std::isfinite(sum_s) ? 1.0 / sum_s : 1.0;
      const double rt = sum_t > 0.0 && std::isfinite(sum_t) ? 1.0 / sum_t : 1.0;
      lse_s -= std::log(rs);
      lse_t -= std::log(rt);
      double d = 0.0, kl_sm = 0.0;
      for (int64_t j = 0; j < v; ++j) {
        const PairProbs p{(double)us[j] - lse_s, (double)ut[j] - lse_t, (double)ps[j] * rs, (double)pt[j] * rt};
        ps[j] = (float)p.ps;
        pt[j] = (float)p.pt;
        d += divergence_term(a.divergence, a.beta, p);
        if (a.divergence == kJsd) kl_sm += kl_student_mixture_term(a.beta, p);
      }
      double value = d;
      if (y >= 0) value += a.hard_label_weight * (lse_s - (double)us[y]);
      row_value[(size_t)r] = value;
      if (a.row_loss) a.row_loss[r] = (float)value;
      if (!std::isfinite(value)) bad_value.report(r);
      if (!g) continue;
      // Every element is read (into us) before its gradient is written: g may alias the student.
      const double scale = w / (double)a.temperature;
      for (int64_t j = 0; j < v; ++j) {
        const PairProbs p{(double)us[j] - lse_s, (double)ut[j] - lse_t, (double)ps[j], (double)pt[j]};
        double gj = divergence_grad(a.divergence, a.beta, p, d, kl_sm);
        if (y >= 0) gj += a.hard_label_weight * (p.ps - (j == y ? 1.0 : 0.0));
        store(a.student_dtype, g, j, (float)(gj * scale));
      }
    }
  });
  double loss = 0.0;
  for (int64_t r = 0; r < n; ++r) loss += weight[(size_t)r] * row_value[(size_t)r];
  a.loss = loss;
  a.tokens = tokens;
  if (bad_target.any()) {
    set_row_error(&st, kTargetRange, bad_target.row.load(), "target id outside [0, V)");
    return st;
  }
  if (bad_value.any())
    set_row_error(&st, kNonFinite, bad_value.row.load(), "non-finite divergence (no finite logit, or teacher mass where the student has none)");
  return st;
}

}  // namespace cpu
}  // namespace gk
