// Spec §7 on the CPU: distillation loss + ∂loss/∂student-logits, per row: one pass for both
// rows' log-normalisers, one for the divergence (and its row statistics), one that writes the
// gradient. Rows stay in per-thread float32 scratch, allocated by the threads that get rows; extra
// memory is O(min(threads, rows)·V + N).
#include <cmath>
#include <cstdio>
#include <vector>

#include "../backend.h"
#include "../core/dtype.h"
#include "simd.h"
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

// Forward and reverse KL of one row, vectorised (spec §7): the row's log-normalisers come from
// the online statistics (one read of each row); this pass reads both rows once more and returns
// the divergence, Σ over elements in float64 lanes, and for the forward KL (whose gradient does
// not need the row's value) writes the gradient in the same pass. p = exp(u − lse) is taken in
// float32 from lse split into a float32 head and tail; log p_T − log p_S is formed in float64
// from the logits, (u_T − u_S) − (lse_T − lse_S), so near-equal rows do not cancel.
struct KlRow {
  const void* zs;
  int32_t ds;
  const void* zt;
  int32_t dt;
  int64_t v;
  float inv_t;
  double lse_s, lse_t;
  bool forward;
  float hard;   // hard-label weight (0: none); its -1 at the target is added by the caller
  float scale;  // gradient scale (weight / T)
  double d_row; // reverse KL: the row's value, for the gradient pass
  void* grad;   // forward: written in the value pass; reverse: by kl_grad
};

template <int W>
GK_SIMD_INLINE double kl_pass_isa_impl(const KlRow& k, bool value_pass) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  typedef double D __attribute__((vector_size(8 * W)));
  typedef int64_t DI __attribute__((vector_size(8 * W)));
  constexpr int K = V::kK;
  alignas(64) float bs[kBlock], bt[kBlock], bg[kBlock];
  const float hs = (float)k.lse_s, ls_lo = (float)(k.lse_s - (double)hs);
  const float ht = (float)k.lse_t, lt_lo = (float)(k.lse_t - (double)ht);
  const double dl = k.lse_t - k.lse_s;
  D acc[K];
  for (int q = 0; q < K; ++q) acc[q] = D{};
  double tail = 0.0;
  const bool write = k.grad && (k.forward ? value_pass : !value_pass);
  for (int64_t b = 0; b < k.v; b += kBlock) {
    const int64_t e = b + kBlock < k.v ? b + kBlock : k.v, n = e - b;
    const float* us = block_of<W>(k.zs, k.ds, b, e, k.inv_t, bs);
    const float* ut = block_of<W>(k.zt, k.dt, b, e, k.inv_t, bt);
    float* g = k.grad && k.ds == kF32 ? (float*)k.grad + b : bg;
    int64_t j = 0;
    for (; j + simd::kLanes <= n; j += simd::kLanes)
      for (int q = 0; q < K; ++q) {
        const F s = simd::load<F>(us + j + q * W), t = simd::load<F>(ut + j + q * W);
        const F ps = simd::exp_nonpos<V>((s - hs) - ls_lo), pt = simd::exp_nonpos<V>((t - ht) - lt_lo);
        const D diff = (__builtin_convertvector(t, D) - __builtin_convertvector(s, D)) - dl;  // log p_T − log p_S
        const D p = __builtin_convertvector(k.forward ? pt : ps, D);
        const D term = k.forward ? p * diff : p * (D{} - diff);
        if (value_pass) acc[q] += (D)((DI)term & (DI)(p > 0.0));  // 0 log 0 = 0
        if (!write) continue;
        F gv;
        if (k.forward) {
          gv = ps - pt;
        } else {
          const D gd = (D)((DI)(p * ((D{} - diff) - k.d_row)) & (DI)(p > 0.0));
          gv = __builtin_convertvector(gd, F);
        }
        gv = (gv + k.hard * ps) * k.scale;
        simd::store(g + j + q * W, gv);
      }
    for (; j < n; ++j) {
      const float ps = exp_nonpos((us[j] - hs) - ls_lo), pt = exp_nonpos((ut[j] - ht) - lt_lo);
      const double diff = ((double)ut[j] - (double)us[j]) - dl;
      const double p = k.forward ? (double)pt : (double)ps;
      if (value_pass) tail += p > 0.0 ? p * (k.forward ? diff : -diff) : 0.0;
      if (!write) continue;
      const float gv = k.forward ? ps - pt : (float)(p > 0.0 ? p * (-diff - k.d_row) : 0.0);
      g[j] = (gv + k.hard * ps) * k.scale;
    }
    if (write && k.ds != kF32) {
      uint16_t* out = (uint16_t*)k.grad + b;
      int64_t i = 0;
      if (k.ds == kBF16) {
        for (; i + W <= n; i += W) simd::store_bf16<V>(out + i, simd::load<F>(bg + i));
        for (; i < n; ++i) out[i] = f32_to_bf16(bg[i]);
      } else {
        for (; i + W <= n; i += W) simd::store_f16<V>(out + i, simd::load<F>(bg + i));
        for (; i < n; ++i) out[i] = f32_to_f16(bg[i]);
      }
    }
  }
  // The 16 logical lanes in a fixed order, whatever W is.
  double lanes[simd::kLanes];
  for (int q = 0; q < K; ++q) memcpy(lanes + q * W, &acc[q], sizeof(D));
  for (int w = simd::kLanes / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) lanes[l] = lanes[l] + lanes[l + w];
  return lanes[0] + tail;
}
GK_SIMD_DISPATCH(double, kl_pass_isa, (const KlRow& k, bool value_pass), (k, value_pass))

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
  if (a.grad && a.grad != a.student) huge_page_hint(a.grad, (size_t)n * (size_t)v * dtype_size(a.student_dtype));
  // Float32 copies of the rows, for the JSD only.
  const int64_t width = a.divergence == kJsd ? v : 1;
  Scratch su(threads, width), tu(threads, width), sp(threads, width), tp(threads, width);
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
      if (a.divergence != kJsd) {
        // Forward / reverse KL: no copies of the rows, two reads each (three for reverse KL with a
        // gradient), vectorised.
        const void* zs = row_ptr(a.student, a.student_dtype, r, v);
        const void* zt = row_ptr(a.teacher, a.teacher_dtype, r, v);
        const RowStats ss = row_stats(zs, a.student_dtype, v, inv_t, false), ts = row_stats(zt, a.teacher_dtype, v, inv_t, false);
        KlRow k{zs, a.student_dtype, zt, a.teacher_dtype, v, inv_t,
                (double)ss.m + std::log((double)ss.s), (double)ts.m + std::log((double)ts.s), a.divergence == kForwardKl,
                y >= 0 ? (float)a.hard_label_weight : 0.0f, (float)(w / (double)a.temperature), 0.0, g};
        const double uy = y >= 0 ? (double)load_elem(zs, a.student_dtype, y, inv_t) : 0.0;  // read before any write
        const double d = kl_pass_isa(k, true);
        if (g && !k.forward) {
          k.d_row = d;
          kl_pass_isa(k, false);
        }
        double value = d;
        if (y >= 0) {
          value += a.hard_label_weight * (k.lse_s - uy);
          if (g) {
            // The target's element: its hard-label term is p_S − 1, not p_S.
            const double uty = (double)load_elem(zt, a.teacher_dtype, y, inv_t);
            const float ps = exp_nonpos((float)(uy - k.lse_s));
            const float pt = exp_nonpos((float)(uty - k.lse_t));
            const double diff = uty - uy - (k.lse_t - k.lse_s);
            const float gv = k.forward ? ps - pt : (float)(ps > 0.0f ? (double)ps * (-diff - d) : 0.0);
            store(a.student_dtype, g, y, (gv + k.hard * (ps - 1.0f)) * k.scale);
          }
        }
        row_value[(size_t)r] = value;
        if (a.row_loss) a.row_loss[r] = (float)value;
        if (!std::isfinite(value)) bad_value.report(r);
        continue;
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
