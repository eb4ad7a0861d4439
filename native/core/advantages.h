// Spec section 2: group-relative advantages, in float64.
#pragma once
#include "common.h"

namespace gk {

enum AdvScale : int32_t { kScaleGroup = 0, kScaleBatch = 1, kScaleNone = 2 };
enum AdvEstimator : int32_t {
  kEstGrpo = 0,
  kEstRloo = 1,
  kEstRpp = 2,          // spec §9.5 reinforcePlusPlus
  kEstRppBaseline = 3,  // reinforcePlusPlusBaseline
  kEstOpo = 4,
  kEstGpg = 5,
  kEstPassK = 6,        // grpoPassK
};
enum AdvAggregation : int32_t { kAggSumThenNormalize = 0, kAggNormalizeThenSum = 1 };

struct AdvOptions {
  int32_t scale;
  int32_t estimator;
  double eps;
  int32_t aggregation;  // AdvAggregation
};

// gpg's batch factor α from the batch's counts of valid and of non-zero rewards (§9.5).
GK_HD double gpg_alpha(double valid, double nonzero) { return valid / (nonzero > 1.0 ? nonzero : 1.0); }

// Estimators whose advantages are whitened over the whole batch after a per-group step (§9.5):
// the group step writes a value x per sample, a batch reduction gives (mean, div), and then
// A = (x - mean) / div.
GK_HD bool adv_whitened(AdvOptions o) {
  return o.estimator == kEstRpp || o.estimator == kEstRppBaseline || o.aggregation == kAggNormalizeThenSum;
}

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

// Per-group quantities beyond mean and std that some estimators need (§9.5), all over the valid
// members in index order: their plain sum (rloo), the length-weighted baseline (opo; ok = false
// when the valid lengths sum to 0) and the best member with the runner-up's reward (grpoPassK;
// the lowest index wins ties).
struct GroupExtra {
  double sum;
  double opo_base;
  bool opo_ok;
  int64_t imax;
  double second;
};

GK_HD GroupExtra group_extra(const double* r, const double* len, int64_t g, AdvOptions o) {
  GroupExtra e{0.0, 0.0, false, -1, 0.0};
  double wsum = 0.0, wr = 0.0;
  for (int64_t i = 0; i < g; ++i) {
    const double v = r[i];
    if (v != v) continue;
    e.sum += v;
    if (o.estimator == kEstOpo && len) {
      wsum = add_rn(wsum, len[i]);
      wr = add_rn(wr, mul_rn(len[i], v));
    }
    if (o.estimator == kEstPassK && (e.imax < 0 || v > r[e.imax])) e.imax = i;
  }
  if (o.estimator == kEstOpo && wsum > 0.0) {
    e.opo_base = wr / wsum;
    e.opo_ok = true;
  }
  if (o.estimator == kEstPassK && e.imax >= 0) {
    bool any = false;
    for (int64_t i = 0; i < g; ++i) {
      const double v = r[i];
      if (v != v || i == e.imax) continue;
      if (!any || v > e.second) e.second = v;
      any = true;
    }
    if (!any) e.imax = -1;
  }
  return e;
}

// The value a whitened estimator (§9.5) hands to the batch step for member v of a group:
// reinforcePlusPlus the reward itself, reinforcePlusPlusBaseline the reward minus the group
// mean (exactly 0 in a zero-variance group). NaN for an invalid member.
GK_HD double whiten_input(double v, GroupStats st, AdvOptions o) {
  if (v != v) return NAN;
  if (o.estimator == kEstRppBaseline) return st.zero_variance ? 0.0 : v - st.mean;
  return v;
}

// normalizeThenSum (§9.5): for one group of g members starting at sample g0, x[i] = Σ_k w_k z_k,i
// with z_k,i = (r_k,i - mean_k)/(std_k + eps) over the members where function k applies (0 for a
// zero-variance function), NaN when no function applies. Returns whether every function was
// zero-variance in the group.
GK_HD bool normalize_then_sum_group(const double* rewards, int64_t k_count, int64_t stride, int64_t g0, int64_t g,
                                    const double* w, double eps, double* x) {
  bool all_zero = true;
  for (int64_t i = 0; i < g; ++i) x[i] = NAN;
  for (int64_t k = 0; k < k_count; ++k) {
    const double* r = rewards + k * stride + g0;
    const GroupStats st = group_stats(r, g);
    if (!st.zero_variance) all_zero = false;
    const double wk = w ? w[k] : 1.0;
    for (int64_t i = 0; i < g; ++i) {
      const double v = r[i];
      if (v != v) continue;
      const double z = st.zero_variance ? 0.0 : (v - st.mean) / (st.std + eps);
      x[i] = add_rn(x[i] == x[i] ? x[i] : 0.0, mul_rn(wk, z));
    }
  }
  return all_zero;
}

// The batch step of a whitened estimator from its weighted moments over the valid x:
// wsum = Σ w, mean = Σ w·x / wsum, ss = Σ w (x - mean)^2. REINFORCE++ divides by
// sqrt(var + eps), normalizeThenSum by std + eps; var is Bessel-corrected by wsum, 0 if wsum <= 1.
GK_HD double whiten_div(double wsum, double ss, AdvOptions o) {
  const double var = wsum > 1.0 ? ss / (wsum - 1.0) : 0.0;
  if (o.aggregation == kAggNormalizeThenSum) return sqrt(var) + o.eps;
  return sqrt(var + o.eps);
}

// Spec §9.7: the std of scale 'batch' from (count, m2) — local or given from outside.
GK_HD double batch_std_from(double count, double m2) { return count >= 2.0 ? sqrt(m2 / (count - 1.0)) : 0.0; }

GK_HD double whiten_final(double x, double wsum, double mean, double div) {
  if (x != x || !(wsum > 0.0)) return 0.0;
  return (x - mean) / div;
}

// Advantage of member i, with reward v (NaN: invalid), of a group with statistics st and e,
// for the estimators that are not whitened. alpha: gpg's batch factor (1 otherwise).
// Exact zeros for invalid members and zero-variance groups: no float residue survives.
GK_HD double advantage(double v, int64_t i, GroupStats st, GroupExtra e, double batch_std, double alpha, AdvOptions o) {
  if (v != v || st.zero_variance) return 0.0;
  double num;
  if (o.estimator == kEstRloo) num = v - (e.sum - v) / (double)(st.valid - 1);
  else if (o.estimator == kEstOpo) {
    if (!e.opo_ok) return 0.0;
    num = v - e.opo_base;
  } else if (o.estimator == kEstGpg) num = alpha * (v - st.mean);
  else if (o.estimator == kEstPassK) {
    if (i != e.imax) return 0.0;
    num = v - e.second;
  } else num = v - st.mean;
  double div = 1.0;
  if (o.scale == kScaleGroup) div = st.std + o.eps;
  else if (o.scale == kScaleBatch) div = batch_std + o.eps;
  return num / div;
}

}  // namespace gk
