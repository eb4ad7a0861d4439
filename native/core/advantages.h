// Spec section 2: group-relative advantages, in float64.
#pragma once
#include "common.h"

namespace gk {

enum AdvScale : int32_t { kScaleGroup = 0, kScaleBatch = 1, kScaleNone = 2 };
enum AdvEstimator : int32_t { kEstGrpo = 0, kEstRloo = 1 };

struct AdvOptions {
  int32_t scale;
  int32_t estimator;
  double eps;
};

// r[k * stride + i] is reward function k's value for sample i; NaN means "not applicable".
// Returns the weighted sum over the applicable functions, NaN when none applies.
GK_HD double combine_rewards(const double* r, int64_t k_count, int64_t stride, int64_t i, const double* w) {
  double sum = 0.0;
  bool any = false;
  for (int64_t k = 0; k < k_count; ++k) {
    const double v = r[k * stride + i];
    if (v == v) {
      sum = add_rn(sum, mul_rn(w ? w[k] : 1.0, v));
      any = true;
    }
  }
  return any ? sum : NAN;
}

struct GroupStats {
  double mean, std;
  int64_t valid;
  bool zero_variance;
};

// Mean and Bessel-corrected std of the valid (non-NaN) members of one group. A group with
// fewer than two valid members, or whose valid rewards are all exactly equal, has zero variance.
GK_HD GroupStats group_stats(const double* r, int64_t g) {
  GroupStats st{0.0, 0.0, 0, true};
  double first = 0.0;
  double sum = 0.0;
  for (int64_t i = 0; i < g; ++i) {
    const double v = r[i];
    if (v != v) continue;
    if (st.valid == 0) first = v;
    else if (v != first) st.zero_variance = false;
    sum += v;
    ++st.valid;
  }
  if (st.valid < 2) st.zero_variance = true;
  if (st.valid == 0) return st;
  st.mean = sum / (double)st.valid;
  if (st.valid >= 2) {
    double ss = 0.0;
    for (int64_t i = 0; i < g; ++i) {
      const double v = r[i];
      if (v == v) ss = add_rn(ss, mul_rn(v - st.mean, v - st.mean));
    }
    st.std = sqrt(ss / (double)(st.valid - 1));
  }
  return st;
}

// Advantage of one member with reward v (NaN: invalid) of a group with statistics st.
// Exact zeros for invalid members and zero-variance groups: no float residue survives.
GK_HD double advantage(double v, GroupStats st, double group_sum, double batch_std, AdvOptions o) {
  if (v != v || st.zero_variance) return 0.0;
  double baseline = st.mean;
  if (o.estimator == kEstRloo) baseline = (group_sum - v) / (double)(st.valid - 1);
  const double num = v - baseline;
  double div = 1.0;
  if (o.scale == kScaleGroup) div = st.std + o.eps;
  else if (o.scale == kScaleBatch) div = batch_std + o.eps;
  return num / div;
}

}  // namespace gk
