// Spec §2 on the CPU: group advantages in float64.
#include <cmath>

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
  for (int64_t i = 0; i < a.n; ++i) a.combined[i] = combine_rewards(a.rewards, a.k, a.n, i, a.weights);

  // Batch statistics over every valid reward (only used by scale 'batch').
  double sum = 0.0;
  int64_t valid = 0;
  for (int64_t i = 0; i < a.n; ++i)
    if (!std::isnan(a.combined[i])) {
      sum += a.combined[i];
      ++valid;
    }
  double batch_std = 0.0;
  if (valid >= 2) {
    const double mean = sum / (double)valid;
    double ss = 0.0;
    for (int64_t i = 0; i < a.n; ++i)
      if (!std::isnan(a.combined[i])) ss += (a.combined[i] - mean) * (a.combined[i] - mean);
    batch_std = std::sqrt(ss / (double)(valid - 1));
  }

  a.zero_variance_groups = 0;
  for (int64_t g0 = 0, gi = 0; g0 < a.n; g0 += a.group, ++gi) {
    const double* r = a.combined + g0;
    const GroupStats gs = group_stats(r, a.group);
    double gsum = 0.0;
    for (int64_t i = 0; i < a.group; ++i)
      if (!std::isnan(r[i])) gsum += r[i];
    if (gs.zero_variance) ++a.zero_variance_groups;
    if (a.group_mean) a.group_mean[gi] = gs.mean;
    if (a.group_std) a.group_std[gi] = gs.std;
    for (int64_t i = 0; i < a.group; ++i) a.advantages[g0 + i] = (float)advantage(r[i], gs, gsum, batch_std, a.opt);
  }
  return st;
}

}  // namespace cpu
}  // namespace gk
