// Spec sections 3-5: the per-token GRPO policy loss terms and their derivatives.
// Backends own the loops over tokens and sequences (and their deterministic reductions);
// every formula is here once.
#pragma once
#include "common.h"

namespace gk {

enum Surrogate : int32_t { kClip = 0, kCispo = 1, kSapo = 2 };
enum IsLevel : int32_t { kIsToken = 0, kIsSequence = 1, kIsSequenceToken = 2 };
enum KlEstimator : int32_t { kK1 = 0, kK2 = 1, kK3 = 2 };
enum Aggregation : int32_t { kSeqMeanTokenMean = 0, kTokenMean = 1, kConstant = 2, kSeqMeanTokenSum = 3 };

struct LossOptions {
  int32_t surrogate;
  int32_t is_level;
  int32_t kl;
  int32_t aggregation;
  double epsilon_low, epsilon_high;
  double delta;          // <= 0: no dual clip
  double tau_pos, tau_neg;
  double beta;
  double entropy_coef;
  double normalizer;     // <= 0: Σ m (tokenMean)
  double max_completion_length;  // <= 0: longest sequence (constant)
  int32_t mask_truncated;
  double top_entropy_quantile;   // 1: off
};

constexpr double kLogRatioClamp = 20.0;

// exp of a clamped log-ratio and d(exp)/d(log-ratio) (0 where the clamp binds).
struct Ratio {
  double value, dvalue;
};
GK_HD Ratio ratio_from_log(double lr) {
  const bool bound = lr > kLogRatioClamp || lr < -kLogRatioClamp;
  const double c = lr > kLogRatioClamp ? kLogRatioClamp : (lr < -kLogRatioClamp ? -kLogRatioClamp : lr);
  const double v = exp(c);
  return Ratio{v, bound ? 0.0 : v};
}

// The surrogate objective J for ratio rho and advantage a (value of the token's log-prob lp
// is needed by cispo). dj_drho flows through the ratio; dj_dlogp is cispo's direct term.
struct PolicyTerm {
  double j, dj_drho, dj_dlogp;
  bool clipped_low, clipped_high;
};
GK_HD PolicyTerm policy_term(const LossOptions& o, double rho, double a, double lp) {
  PolicyTerm t{0.0, 0.0, 0.0, false, false};
  if (o.surrogate == kCispo) {
    const double capped = rho < o.epsilon_high ? rho : o.epsilon_high;
    t.j = capped * a * lp;
    t.dj_dlogp = capped * a;
    t.clipped_high = rho > o.epsilon_high && a > 0.0;
    return t;
  }
  t.clipped_low = rho < 1.0 - o.epsilon_low && a < 0.0;
  t.clipped_high = rho > 1.0 + o.epsilon_high && a > 0.0;
  if (o.surrogate == kSapo) {
    const double tau = a > 0.0 ? o.tau_pos : o.tau_neg;
    const double sg = 1.0 / (1.0 + exp(-tau * (rho - 1.0)));
    t.j = sg * (4.0 / tau) * a;
    t.dj_drho = 4.0 * a * sg * (1.0 - sg);
    return t;
  }
  const bool dual = o.delta > 0.0;
  const double r1 = dual && rho > o.delta ? o.delta : rho;
  const double lo = 1.0 - o.epsilon_low, hi = 1.0 + o.epsilon_high;
  const double r2 = rho < lo ? lo : (rho > hi ? hi : rho);
  const double first = a * r1, second = a * r2;
  if (first <= second) {
    t.j = first;
    t.dj_drho = (!dual || rho < o.delta) ? a : 0.0;
  } else {
    t.j = second;
    t.dj_drho = (rho > lo && rho < hi) ? a : 0.0;
  }
  return t;
}

// KL penalty to the reference policy and its derivative w.r.t. the token's log-prob.
struct KlTerm {
  double kl, dkl_dlogp;
};
GK_HD KlTerm kl_term(int32_t estimator, double ref_lp, double lp) {
  const double raw = ref_lp - lp;
  const bool bound = raw > kLogRatioClamp || raw < -kLogRatioClamp;
  const double x = bound ? (raw > 0 ? kLogRatioClamp : -kLogRatioClamp) : raw;
  const double dx = bound ? 0.0 : -1.0;  // dx/dlogp
  KlTerm k{0.0, 0.0};
  if (estimator == kK1) {
    k.kl = -x;
    k.dkl_dlogp = -dx;
  } else if (estimator == kK2) {
    k.kl = 0.5 * x * x;
    k.dkl_dlogp = x * dx;
  } else {
    const double em1 = expm1(x);  // exp(x) - 1 without cancellation for small x
    const double v = em1 - x;
    if (v > 10.0) {
      k.kl = 10.0;
      k.dkl_dlogp = 0.0;
    } else {
      k.kl = v < 0.0 ? 0.0 : v;
      k.dkl_dlogp = em1 * dx;
    }
  }
  return k;
}

// The options every backend can use without producing an infinite or NaN weight: finite
// values, and a normalizer / maxCompletionLength that is 0 (the default) or positive with a
// finite reciprocal (a denormal one would make every weight inf, and 0 x inf = NaN).
inline bool loss_options_ok(const LossOptions& o) {
  const double v[] = {o.epsilon_low, o.epsilon_high, o.delta, o.tau_pos, o.tau_neg, o.beta, o.entropy_coef, o.normalizer,
                      o.max_completion_length, o.top_entropy_quantile};
  for (double x : v)
    if (!isfinite(x)) return false;
  if (o.normalizer < 0.0 || (o.normalizer > 0.0 && !isfinite(1.0 / o.normalizer))) return false;
  if (o.max_completion_length < 0.0 || (o.max_completion_length > 0.0 && !isfinite(1.0 / o.max_completion_length))) return false;
  return o.top_entropy_quantile > 0.0 && o.top_entropy_quantile <= 1.0;
}

// Aggregation weight of every valid token of a sequence with `count` valid tokens.
GK_HD double aggregation_weight(const LossOptions& o, double count, double seqs, double tokens,
                                double longest) {
  switch (o.aggregation) {
    case kSeqMeanTokenMean: return 1.0 / (seqs * (count > 1.0 ? count : 1.0));
    case kTokenMean: return 1.0 / (o.normalizer > 0.0 ? o.normalizer : (tokens > 1.0 ? tokens : 1.0));
    case kConstant: return 1.0 / (seqs * (o.max_completion_length > 0.0 ? o.max_completion_length : longest));
    default: return 1.0 / seqs;
  }
}

// Metric sums of section 5, accumulated in float64 in a fixed order.
struct LossSums {
  double loss = 0, tokens = 0, kl = 0, ratio = 0, clip_low = 0, clip_high = 0, clip_any = 0, entropy = 0;
  double non_finite = 0;  // valid tokens whose log-prob or entropy is NaN or ±inf
};

// One valid token of the loss step (spec §3-5): adds its metrics to `acc` and its weighted
// loss, writes ∂loss/∂logp (w-scaled; for 'sequence' the cross-token part is accumulated into
// g_seq and added by the caller once the sequence is done), ∂loss/∂H and the token's loss.
struct TokenInputs {
  double lp, old, adv;
  const float* ref_lp;   // this token's reference log-prob, or null
  const float* entropy;  // this token's entropy, or null
};
GK_HD void token_step(const LossOptions& o, const TokenInputs& x, double w, Ratio seq_ratio, bool use_q, double threshold,
                      LossSums& acc, double& g_seq, float* dlogp, float* dentropy, float* token_loss) {
  const Ratio r = o.is_level == kIsToken ? ratio_from_log(x.lp - x.old) : seq_ratio;
  const PolicyTerm p = policy_term(o, r.value, x.adv, x.lp);
  const double pm = use_q ? ((double)*x.entropy >= threshold ? 1.0 : 0.0) : 1.0;
  double l = -pm * p.j;
  double d = -pm * p.dj_dlogp;
  if (o.is_level == kIsSequence) g_seq += -pm * p.dj_drho;
  else d += -pm * p.dj_drho * r.dvalue;
  if (x.ref_lp) {
    const KlTerm k = kl_term(o.kl, *x.ref_lp, x.lp);
    acc.kl += k.kl;
    if (o.beta != 0.0) {
      l += o.beta * k.kl;
      d += o.beta * k.dkl_dlogp;
    }
  }
  if (x.entropy) acc.entropy += *x.entropy;
  if (o.entropy_coef != 0.0) l -= o.entropy_coef * *x.entropy;
  if (dentropy) *dentropy = (float)(-w * o.entropy_coef);
  *dlogp = (float)(w * d);
  if (token_loss) *token_loss = (float)l;
  acc.loss += w * l;
  acc.tokens += 1.0;
  acc.non_finite += (!isfinite(x.lp) || (x.entropy && !isfinite(*x.entropy))) ? 1.0 : 0.0;
  acc.ratio += r.value;
  acc.clip_low += p.clipped_low ? 1.0 : 0.0;
  acc.clip_high += p.clipped_high ? 1.0 : 0.0;
  acc.clip_any += (p.clipped_low || p.clipped_high) ? 1.0 : 0.0;
}

}  // namespace gk
