// Spec §2 and §9.5 on the CPU: group advantages in float64.
#include <cmath>
#include <vector>

#include "../backend.h"

namespace gk {
namespace cpu {

Status group_advantages(AdvantageArgs& a) {
  Status st;
  if (a.group < 1 || a.n % a.group != 0) {
    st.code = kShape;
    snprintf(st.message, sizeof(st.message), "groupSize %lld does not divide %lld samples", (long long)a.group,
             (long long)a.n);
    return st;
  }
  if (a.opt.estimator == kEstOpo && !a.lengths) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "estimator 'opo' needs the completion lengths");
    return st;
  }
  for (int64_t i = 0; i < a.n; ++i) a.combined[i] = combine_rewards(a.rewards, a.k, a.n, i, a.weights);

  // Batch statistics over every valid reward: the std (scale 'batch'), gpg's α.
  double sum = 0.0;
  int64_t valid = 0, nonzero = 0;
  for (int64_t i = 0; i < a.n; ++i)
    if (!std::isnan(a.combined[i])) {
      sum += a.combined[i];
      ++valid;
      if (a.combined[i] != 0.0) ++nonzero;
    }
  double batch_std = 0.0;
  if (a.opt.scale == kScaleBatch || a.partials) {
    const double mean = valid > 0 ? sum / (double)valid : 0.0;
    double ss = 0.0;
    for (int64_t i = 0; i < a.n; ++i)
      if (!std::isnan(a.combined[i])) ss += (a.combined[i] - mean) * (a.combined[i] - mean);
    batch_std = batch_std_from((double)valid, ss);
    if (a.partials) {
      a.partials[0] = (double)valid;
      a.partials[1] = mean;
      a.partials[2] = ss;
    }
  }
  if (a.batch_stats) batch_std = batch_std_from(a.batch_stats[0], a.batch_stats[2]);  // §9.7: given
  if (a.gpg_counts_out) {
    a.gpg_counts_out[0] = (double)valid;
    a.gpg_counts_out[1] = (double)nonzero;
  }
  // §9.7: the counts of the whole data-parallel batch, given.
  const double alpha = a.gpg_counts ? gpg_alpha(a.gpg_counts[0], a.gpg_counts[1]) : gpg_alpha((double)valid, (double)nonzero);

  const bool whitened = adv_whitened(a.opt);
  const bool gdpo = a.opt.aggregation == kAggNormalizeThenSum;
  std::vector<double> x(whitened ? (size_t)a.n : 0);

  a.zero_variance_groups = 0;
  for (int64_t g0 = 0, gi = 0; g0 < a.n; g0 += a.group, ++gi) {
    const double* r = a.combined + g0;
    const GroupStats gs = group_stats(r, a.group);
    if (a.group_mean) a.group_mean[gi] = gs.mean;
    if (a.group_std) a.group_std[gi] = gs.std;
    if (gdpo) {
      if (normalize_then_sum_group(a.rewards, a.k, a.n, g0, a.group, a.weights, a.opt.eps, x.data() + g0))
        ++a.zero_variance_groups;
      continue;
    }
    if (gs.zero_variance) ++a.zero_variance_groups;
    if (whitened) {
      for (int64_t i = 0; i < a.group; ++i) x[g0 + i] = whiten_input(r[i], gs, a.opt);
      continue;
    }
    const GroupExtra ge = group_extra(r, a.lengths ? a.lengths + g0 : nullptr, a.group, a.opt);
    for (int64_t i = 0; i < a.group; ++i)
      a.advantages[g0 + i] = (float)advantage(r[i], i, gs, ge, batch_std, alpha, a.opt);
  }
  if (!whitened) return st;

  // The batch step: weighted moments of the valid x (weights: lengths for REINFORCE++, else 1).
  const bool by_len = !gdpo && a.lengths;
  double wsum = 0.0, wx = 0.0;
  for (int64_t i = 0; i < a.n; ++i)
    if (!std::isnan(x[i])) {
      const double w = by_len ? a.lengths[i] : 1.0;
      wsum += w;
      wx += w * x[i];
    }
  double mean = wsum > 0.0 ? wx / wsum : 0.0;
  double ss = 0.0;
  for (int64_t i = 0; i < a.n; ++i)
    if (!std::isnan(x[i])) ss += (by_len ? a.lengths[i] : 1.0) * ((x[i] - mean) * (x[i] - mean));
  if (a.partials) {
    a.partials[0] = wsum;
    a.partials[1] = mean;
    a.partials[2] = ss;
  }
  if (a.batch_stats) {  // §9.7: the batch's weighted count, mean and m2, given
    wsum = a.batch_stats[0];
    mean = a.batch_stats[1];
    ss = a.batch_stats[2];
  }
  const double div = whiten_div(wsum, ss, a.opt);
  for (int64_t i = 0; i < a.n; ++i) a.advantages[i] = (float)whiten_final(x[i], wsum, mean, div);
  return st;
}

}  // namespace cpu
}  // namespace gk
