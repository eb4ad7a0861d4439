// Spec sections 3-5: the per-token GRPO policy loss terms and their derivatives.
// Backends own the loops over tokens and sequences (and their deterministic reductions);
// every formula is here once.
#pragma once
#include "common.h"
#include "philox.h"

namespace gk {

// Spec §3 and §9.4. The surrogates from kGpg on, except kCispoTwoSided, need the token ratio.
enum Surrogate : int32_t {
  kClip = 0, kCispo = 1, kSapo = 2, kGpg = 3, kCispoTwoSided = 4, kVespo = 5, kGeoMean = 6, kClipCov = 7, kKlCov = 8
};
constexpr int32_t kSurrogateCount = 9;
enum IsLevel : int32_t { kIsToken = 0, kIsSequence = 1, kIsSequenceToken = 2 };
enum KlEstimator : int32_t { kK1 = 0, kK2 = 1, kK3 = 2 };
enum Aggregation : int32_t { kSeqMeanTokenMean = 0, kTokenMean = 1, kConstant = 2, kSeqMeanTokenSum = 3 };
// Spec §9.8: the entropy term through the loss's aggregation, or TRL's batch-mean form.
enum EntropyForm : int32_t { kEntropyAggregated = 0, kEntropyTokenMean = 1 };
// Spec §9.1: rollout correction level and mode; rejection statistics.
enum RcLevel : int32_t { kRcOff = 0, kRcToken = 1, kRcSequence = 2, kRcSequenceMean = 3 };
enum RcMode : int32_t { kRcTruncate = 0, kRcMask = 1 };
enum RsAgg : int32_t { kRsToken = 0, kRsSeqSum = 1, kRsSeqMean = 2, kRsSeqMax = 3 };
constexpr int kMaxRejection = 8;
// One rejection criterion: keep iff lo <= statistic <= hi (lo = -inf for k2/k3; NaN rejects).
struct RsCriterion {
  int32_t agg;  // RsAgg
  int32_t k;    // KlEstimator: kK1, kK2, kK3
  double lo, hi;
};

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
  // Spec §9.3: advantages hold one value per token row (n) instead of one per sequence.
  int32_t adv_per_token;
  // Spec §9.1 (need LossStepArgs::sampler_logp when rc_level != off or rs_count > 0).
  int32_t rc_level;              // RcLevel
  int32_t rc_mode;               // RcMode
  double rc_clip_min, rc_clip_max;  // clip_min 0: no lower bound
  int32_t rc_batch_normalize;
  int32_t rs_count;              // rejection criteria in rs[0 .. rs_count)
  RsCriterion rs[kMaxRejection];
  // Spec §9.2.
  int32_t off_policy_mask;       // 0: off
  double off_policy_threshold;   // δ
  int32_t bias_corrected_kl;
  // Spec §9.8.
  int32_t entropy_form;          // EntropyForm
  // Spec §9.7: the topEntropyQuantile threshold given from outside instead of computed.
  int32_t entropy_threshold_given;
  double entropy_threshold;
  // Spec §9.4.
  double vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg;
  double cov_ratio;                  // clipCovRatio (clipCov) or klCovRatio (klCov)
  double clip_cov_lb, clip_cov_ub;
  double ppo_kl_coef;                // κ of klCov
  uint64_t cov_seed;                 // clipCov's random choice
};

constexpr double kLogRatioClamp = 20.0;

GK_HD double clamp_log_ratio(double x) {
  return x > kLogRatioClamp ? kLogRatioClamp : (x < -kLogRatioClamp ? -kLogRatioClamp : x);
}
// max / min that return NaN when either side is NaN (so the result does not depend on the order).
GK_HD double nan_max(double a, double b) { return (isnan(a) || a > b) ? a : b; }
GK_HD double nan_min(double a, double b) { return (isnan(a) || a < b) ? a : b; }

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

// Spec §9.4 vespo: the weight φ of a token with advantage a in a sequence of log-weight lw.
GK_HD double vespo_phi(const LossOptions& o, double lw, double a) {
  const double k = a >= 0.0 ? o.vespo_k_pos : o.vespo_k_neg;
  double lam = a >= 0.0 ? o.vespo_lambda_pos : o.vespo_lambda_neg;
  lam = lam > 1e-4 ? lam : 1e-4;
  const double phi = exp(lam + k * lw - lam * exp(lw));
  return isfinite(phi) ? phi : 0.0;
}
// vespo's sequence log-weight from Σ clamp(x_t) (+ Σ log w_t^IS), clamped to [log 1e-8, 20].
GK_HD double vespo_log_weight(double sum) {
  const double lo = -18.420680743952367;  // log(1e-8)
  return isnan(sum) ? sum : (sum < lo ? lo : (sum > 20.0 ? 20.0 : sum));
}

// Per-token inputs of a surrogate beyond (ρ, A, logp): the old log-prob (klCov), the sequence's
// vespo log-weight, and whether the covariance selection chose the token (clipCov, klCov).
struct PolicyExtra {
  double old;
  double vespo_lw;
  bool chosen;
};

// The surrogate objective J for ratio rho and advantage a (value of the token's log-prob lp
// is needed by cispo). dj_drho flows through the ratio; dj_dlogp is cispo's direct term.
struct PolicyTerm {
  double j, dj_drho, dj_dlogp;
  bool clipped_low, clipped_high;
  double phi;  // vespo's φ (0 otherwise)
};
// ρ clamped to the clip range [1 - epsilon_low, 1 + epsilon_high].
GK_HD double clip_ratio(const LossOptions& o, double rho) {
  const double lo = 1.0 - o.epsilon_low, hi = 1.0 + o.epsilon_high;
  return rho < lo ? lo : (rho > hi ? hi : rho);
}
// The clip surrogate min(ρA, clip(ρ)A), with the dual clip when delta > 0.
GK_HD void clip_surrogate(const LossOptions& o, double rho, double a, PolicyTerm& t) {
  const bool dual = o.delta > 0.0;
  const double r1 = dual && rho > o.delta ? o.delta : rho;
  const double lo = 1.0 - o.epsilon_low, hi = 1.0 + o.epsilon_high;
  const double r2 = clip_ratio(o, rho);
  const double first = a * r1, second = a * r2;
  if (first <= second) {
    t.j = first;
    t.dj_drho = (!dual || rho < o.delta) ? a : 0.0;
  } else {
    t.j = second;
    t.dj_drho = (rho > lo && rho < hi) ? a : 0.0;
  }
}
GK_HD PolicyTerm policy_term(const LossOptions& o, double rho, double a, double lp, const PolicyExtra& e) {
  PolicyTerm t{0.0, 0.0, 0.0, false, false, 0.0};
  const double lo = 1.0 - o.epsilon_low, hi = 1.0 + o.epsilon_high;
  switch (o.surrogate) {
    case kCispo: {
      const double capped = rho < o.epsilon_high ? rho : o.epsilon_high;
      t.j = capped * a * lp;
      t.dj_dlogp = capped * a;
      t.clipped_high = rho > o.epsilon_high && a > 0.0;
      return t;
    }
    case kCispoTwoSided: {
      const double c = clip_ratio(o, rho);
      t.j = c * a * lp;
      t.dj_dlogp = c * a;
      t.clipped_low = rho < lo;
      t.clipped_high = rho > hi;
      return t;
    }
    case kGpg:
      t.j = a * lp;
      t.dj_dlogp = a;
      return t;
    case kVespo:
      t.phi = vespo_phi(o, e.vespo_lw, a);
      t.j = t.phi * a * lp;
      t.dj_dlogp = t.phi * a;
      return t;
    case kKlCov: {
      t.j = a * rho;
      t.dj_drho = a;
      if (e.chosen) {
        const double x = lp - e.old;
        t.j -= o.ppo_kl_coef * fabs(x);
        t.dj_dlogp = x > 0.0 ? -o.ppo_kl_coef : (x < 0.0 ? o.ppo_kl_coef : 0.0);
      }
      return t;
    }
    default: break;
  }
  t.clipped_low = rho < lo && a < 0.0;
  t.clipped_high = rho > hi && a > 0.0;
  if (o.surrogate == kSapo) {
    const double tau = a > 0.0 ? o.tau_pos : o.tau_neg;
    const double sg = 1.0 / (1.0 + exp(-tau * (rho - 1.0)));
    t.j = sg * (4.0 / tau) * a;
    t.dj_drho = 4.0 * a * sg * (1.0 - sg);
    return t;
  }
  if (o.surrogate == kClipCov && e.chosen) return t;  // no policy term, the clip metrics kept
  clip_surrogate(o, rho, a, t);
  return t;
}

// ---- Spec §9.4 covariance selection (clipCov, klCov) ---------------------------------------


// Order-preserving map of a double to an unsigned key (-0 and +0 share one: they are equal).
GK_HD uint64_t double_key(double d) {
  if (d == 0.0) d = 0.0;
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

// The selection key of token t (the k smallest keys are chosen, ties lower row first): clipCov a
// Philox draw keyed by cov_seed, klCov the negated covariance (largest first).
GK_HD uint64_t cov_key(const LossOptions& o, int64_t t, double cov) {
  if (o.surrogate == kKlCov) return ~double_key(cov);
  const uint64_t u = (uint64_t)t;
  const Philox4 c{{(uint32_t)u, (uint32_t)(u >> 32), 0u, 0x636F7600u}};
  const Philox4 r = philox4x32_10(c, (uint32_t)o.cov_seed, (uint32_t)(o.cov_seed >> 32));
  return ((uint64_t)r.v[0] << 32) | (uint64_t)r.v[1];
}

// Whether token t of the loss (advantage a, log-probs lp and old) may be chosen, and then its key:
// cov = (a - mean_a)·(lp - mean_lp) with the batch means over the tokens in the loss, not NaN;
// for clipCov also not clipped by the PPO clip and lb < cov < ub.
GK_HD bool cov_candidate(const LossOptions& o, int64_t t, double a, double lp, double old, double mean_a, double mean_lp,
                         uint64_t* key) {
  const double cov = (a - mean_a) * (lp - mean_lp);
  if (isnan(cov)) return false;
  if (o.surrogate == kClipCov) {
    const double rho = ratio_from_log(lp - old).value;
    if (-a * clip_ratio(o, rho) > -a * rho || !(cov > o.clip_cov_lb && cov < o.clip_cov_ub)) return false;
  }
  *key = cov_key(o, t, cov);
  return true;
}

// How many tokens the selection takes, from N_valid and the number of eligible tokens.
GK_HD int64_t cov_select_count(const LossOptions& o, double n_valid, int64_t eligible) {
  if (!(n_valid > 0.0)) return 0;
  double k = floor(o.cov_ratio * n_valid);
  k = k < 1.0 ? 1.0 : k;
  return (double)eligible < k ? eligible : (int64_t)k;
}

// Token t's advantage (sequence s's, or its own with per-token advantages, §9.3).
GK_HD double token_adv(const LossOptions& o, const float* adv, int64_t s, int64_t t) {
  return o.adv_per_token ? (double)adv[t] : (double)adv[s];
}

GK_HD bool uses_cov_selection(const LossOptions& o) { return o.surrogate == kClipCov || o.surrogate == kKlCov; }

// ---- Spec §9.4 geoMean (GMPO) ------------------------------------------------------------

// A token's pessimistic log-ratio y and whether its unclamped branch is the one taken.
struct GeoToken {
  double y;
  bool unclamped, differs;
};
GK_HD GeoToken geo_token(const LossOptions& o, double x, double a) {
  const double c = x < -o.epsilon_low ? -o.epsilon_low : (x > o.epsilon_high ? o.epsilon_high : x);
  const double sg = a > 0.0 ? 1.0 : (a < 0.0 ? -1.0 : 0.0);
  const double sx = sg * x, sc = sg * c;
  GeoToken g;
  g.unclamped = sg != 0.0 && sx <= sc;
  g.y = sg * (sx <= sc ? sx : sc);
  g.differs = x != c;
  return g;
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
  if (!(o.top_entropy_quantile > 0.0 && o.top_entropy_quantile <= 1.0)) return false;
  if (o.rc_level < kRcOff || o.rc_level > kRcSequenceMean || o.rc_mode < kRcTruncate || o.rc_mode > kRcMask) return false;
  if (o.rc_level != kRcOff && !(isfinite(o.rc_clip_min) && isfinite(o.rc_clip_max) && o.rc_clip_min >= 0.0 &&
                                o.rc_clip_min <= o.rc_clip_max))
    return false;
  if (o.rs_count < 0 || o.rs_count > kMaxRejection) return false;
  for (int i = 0; i < o.rs_count; ++i) {
    const RsCriterion& c = o.rs[i];
    if (c.agg < kRsToken || c.agg > kRsSeqMax || c.k < kK1 || c.k > kK3 || isnan(c.lo) || isnan(c.hi) || !(c.lo <= c.hi)) return false;
    if (c.agg == kRsSeqMax && c.k == kK1) return false;
  }
  if (o.entropy_form < kEntropyAggregated || o.entropy_form > kEntropyTokenMean) return false;
  if (o.entropy_threshold_given && isnan(o.entropy_threshold)) return false;
  return !o.off_policy_mask || isfinite(o.off_policy_threshold);
}

// Spec §9.4: what the new surrogates refuse, as a message (null: the options are consistent).
inline const char* loss_type_error(const LossOptions& o) {
  if (o.surrogate < 0 || o.surrogate >= kSurrogateCount) return "unknown surrogate";
  const int32_t s = o.surrogate;
  if (s == kClip || s == kCispo || s == kSapo || s == kCispoTwoSided) return nullptr;
  if (o.is_level != kIsToken) return "this surrogate (vespo, geoMean, clipCov, klCov, gpg) needs importanceSamplingLevel 'token'";
  if (o.delta > 0.0) return "delta (the dual clip) applies to the 'clip' surrogate only";
  if (s == kVespo) {
    const double v[] = {o.vespo_k_pos, o.vespo_lambda_pos, o.vespo_k_neg, o.vespo_lambda_neg};
    for (double x : v)
      if (!isfinite(x)) return "vespo's k and lambda must be finite";
    if (o.rc_level == kRcSequence || o.rc_level == kRcSequenceMean) return "vespo takes token-level rollout correction only";
  }
  if (s == kGeoMean && o.top_entropy_quantile < 1.0) return "geoMean does not take topEntropyQuantile < 1";
  if (s == kGeoMean && o.off_policy_mask) return "geoMean does not take offPolicyMaskThreshold";
  if (s == kClipCov || s == kKlCov) {
    if (!(o.cov_ratio > 0.0 && o.cov_ratio <= 1.0)) return "clipCovRatio / klCovRatio must be in (0, 1]";
    if (s == kClipCov && !(isfinite(o.clip_cov_lb) && isfinite(o.clip_cov_ub) && o.clip_cov_lb < o.clip_cov_ub))
      return "clipCovLb must be finite and < clipCovUb";
    if (s == kKlCov && !(isfinite(o.ppo_kl_coef) && o.ppo_kl_coef >= 0.0)) return "ppoKlCoef must be finite and >= 0";
  }
  return nullptr;
}

// Spec §9.8, 'tokenMean' form: the weight of every counted token's -c·H (count_e: the valid
// tokens that pass the top-entropy mask; a given normalizer replaces it under 'tokenMean').
GK_HD double entropy_token_weight(const LossOptions& o, double count_e) {
  if (o.aggregation == kTokenMean && o.normalizer > 0.0) return 1.0 / o.normalizer;
  return 1.0 / (count_e > 1.0 ? count_e : 1.0);
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
  // §9.2: tokens whose policy term the off-policy mask dropped; per sequence (after the token
  // loop) whether any was, and whether the sequence has a valid token.
  double op_tok = 0, op_seq = 0, seqs = 0;
  double phi = 0;  // §9.4 vespo: Σ φ over the tokens in the loss
};

// Every field of LossSums is a sum: merged element by element, with no field list to keep in
// step with the struct.
GK_HD LossSums loss_merge(const LossSums& a, const LossSums& b) {
  static_assert(sizeof(LossSums) % sizeof(double) == 0, "LossSums holds doubles only");
  constexpr int kCount = (int)(sizeof(LossSums) / sizeof(double));
  double x[kCount], y[kCount];
  memcpy(x, &a, sizeof(LossSums));
  memcpy(y, &b, sizeof(LossSums));
  for (int i = 0; i < kCount; ++i) x[i] += y[i];
  LossSums r;
  memcpy(&r, x, sizeof(LossSums));
  return r;
}

// ---- Spec §9.1: rollout correction -------------------------------------------------------

// k1/k2/k3 of x = d (log old/sampler, clamped).
GK_HD double k_estimate(int32_t k, double d) {
  if (k == kK1) return -d;
  if (k == kK2) return 0.5 * d * d;
  return expm1(d) - d;
}

// The importance weight after the mode: truncate clamps to [clip_min, clip_max], mask gives 0
// outside it. NaN stays NaN.
GK_HD double rc_apply_mode(const LossOptions& o, double w, bool* truncated, bool* masked) {
  *truncated = false;
  *masked = false;
  if (o.rc_mode == kRcTruncate) {
    const double c = w < o.rc_clip_min ? o.rc_clip_min : (w > o.rc_clip_max ? o.rc_clip_max : w);
    *truncated = c != w && !isnan(w);
    return c;
  }
  if (w < o.rc_clip_min || w > o.rc_clip_max) {
    *masked = true;
    return 0.0;
  }
  return w;
}

// Whether every token-level rejection criterion keeps a token with log-weight d.
GK_HD bool rs_token_keep(const LossOptions& o, double d) {
  for (int i = 0; i < o.rs_count; ++i) {
    const RsCriterion& c = o.rs[i];
    if (c.agg != kRsToken) continue;
    const double v = k_estimate(c.k, d);
    if (!(v >= c.lo && v <= c.hi)) return false;
  }
  return true;
}

// Per-sequence statistics of the rollout correction over V0_s (the valid tokens before
// rejection). corr_token adds one token, corr_merge combines two partials (sums, NaN-propagating
// max/min), corr_finish turns a sequence's partial into its decisions and metric terms.
struct CorrSums {
  double n0 = 0, dsum = 0, ksum1 = 0, ksum2 = 0, ksum3 = 0, kmax2 = -INFINITY, kmax3 = -INFINITY, tok_rejected = 0;
  double w_sum = 0, w_max = -INFINITY, w_count = 0, trunc = 0, masked = 0;
  // Set by corr_finish (per sequence; summed / min / max over sequences for the metrics).
  double seqs = 0, rejected = 0, rejected_seq = 0, lr_min = INFINITY, lr_max = -INFINITY, w_seq = 1, keep = 1;
};

GK_HD CorrSums corr_merge(const CorrSums& a, const CorrSums& b) {
  CorrSums r;
  r.n0 = a.n0 + b.n0;
  r.dsum = a.dsum + b.dsum;
  r.ksum1 = a.ksum1 + b.ksum1;
  r.ksum2 = a.ksum2 + b.ksum2;
  r.ksum3 = a.ksum3 + b.ksum3;
  r.kmax2 = nan_max(a.kmax2, b.kmax2);
  r.kmax3 = nan_max(a.kmax3, b.kmax3);
  r.tok_rejected = a.tok_rejected + b.tok_rejected;
  r.w_sum = a.w_sum + b.w_sum;
  r.w_max = nan_max(a.w_max, b.w_max);
  r.w_count = a.w_count + b.w_count;
  r.trunc = a.trunc + b.trunc;
  r.masked = a.masked + b.masked;
  r.seqs = a.seqs + b.seqs;
  r.rejected = a.rejected + b.rejected;
  r.rejected_seq = a.rejected_seq + b.rejected_seq;
  r.lr_min = nan_min(a.lr_min, b.lr_min);
  r.lr_max = nan_max(a.lr_max, b.lr_max);
  r.w_seq = a.w_seq + b.w_seq;
  r.keep = a.keep + b.keep;
  return r;
}

// One token of V0_s, with `old` = oldLogp (or the unrounded logp) and q = samplerLogp.
GK_HD void corr_token(const LossOptions& o, double old, double q, CorrSums& c) {
  const double d = clamp_log_ratio(old - q);
  c.n0 += 1.0;
  c.dsum += d;
  const double k2 = 0.5 * d * d, k3 = expm1(d) - d;
  c.ksum1 += -d;
  c.ksum2 += k2;
  c.ksum3 += k3;
  c.kmax2 = nan_max(c.kmax2, k2);
  c.kmax3 = nan_max(c.kmax3, k3);
  if (!rs_token_keep(o, d)) c.tok_rejected += 1.0;
  if (o.rc_level == kRcToken) {
    bool tr, mk;
    const double w = rc_apply_mode(o, exp(d), &tr, &mk);
    c.w_sum += w;
    c.w_max = nan_max(c.w_max, w);
    c.w_count += 1.0;
    c.trunc += tr ? 1.0 : 0.0;
    c.masked += mk ? 1.0 : 0.0;
  }
}

GK_HD void corr_finish(const LossOptions& o, CorrSums& c) {
  const bool any = c.n0 > 0.0;
  c.seqs = any ? 1.0 : 0.0;
  bool keep = true;
  for (int i = 0; i < o.rs_count; ++i) {
    const RsCriterion& r = o.rs[i];
    if (r.agg == kRsToken) continue;
    const double sum = r.k == kK1 ? c.ksum1 : (r.k == kK2 ? c.ksum2 : c.ksum3);
    double v = 0.0;
    if (r.agg == kRsSeqSum) v = sum;
    else if (r.agg == kRsSeqMean) v = any ? sum / c.n0 : 0.0;
    else v = any ? (r.k == kK2 ? c.kmax2 : c.kmax3) : 0.0;
    if (!(v >= r.lo && v <= r.hi)) keep = false;
  }
  c.keep = keep ? 1.0 : 0.0;
  c.rejected = keep ? c.tok_rejected : c.n0;
  c.rejected_seq = c.rejected > 0.0 ? 1.0 : 0.0;
  if (any) c.lr_min = c.lr_max = c.dsum;
  c.w_seq = 1.0;
  if (o.rc_level == kRcSequence || o.rc_level == kRcSequenceMean) {
    const double lw = o.rc_level == kRcSequence ? clamp_log_ratio(c.dsum) : c.dsum / (c.n0 > 1.0 ? c.n0 : 1.0);
    bool tr, mk;
    c.w_seq = rc_apply_mode(o, exp(lw), &tr, &mk);
    if (any) {
      c.w_sum = c.w_seq;
      c.w_max = c.w_seq;
      c.w_count = 1.0;
      c.trunc = tr ? 1.0 : 0.0;
      c.masked = mk ? 1.0 : 0.0;
    }
  }
}

// The divisor of batchNormalize from the batch's sums (1: off or mean <= 1e-8).
GK_HD double rc_norm(const LossOptions& o, const CorrSums& tot) {
  if (!o.rc_batch_normalize || o.rc_level == kRcOff || !(tot.w_count > 0.0)) return 1.0;
  const double mean = tot.w_sum / tot.w_count;
  return mean > 1e-8 ? mean : 1.0;
}

// The weight of a kept token's policy term (1 without correction).
GK_HD double rc_token_weight(const LossOptions& o, double old, double q, double w_seq, double norm) {
  if (o.rc_level == kRcOff) return 1.0;
  double w = w_seq;
  if (o.rc_level == kRcToken) {
    bool tr, mk;
    w = rc_apply_mode(o, exp(clamp_log_ratio(old - q)), &tr, &mk);
  }
  return norm == 1.0 ? w : w / norm;
}

// Spec §9.2: whether the off-policy mask keeps a token's policy term (kappa: the sequence's mean
// of q - sg[logp] over its valid tokens).
GK_HD bool off_policy_keep(const LossOptions& o, double adv, double kappa) {
  return !o.off_policy_mask || adv >= 0.0 || kappa <= o.off_policy_threshold;
}

// Whether the rejection criteria keep a valid token (seq_keep: its sequence's decision).
GK_HD bool rs_kept(const LossOptions& o, double old, const float* q, double seq_keep) {
  if (!q || o.rs_count == 0) return true;
  return seq_keep != 0.0 && rs_token_keep(o, clamp_log_ratio(old - (double)*q));
}

// The weight of a kept token's policy term: the IS weight (q: its samplerLogp, or null) times
// the off-policy mask's keep (counted in acc.op_tok when it drops the term).
GK_HD double token_policy_weight(const LossOptions& o, double old, const float* q, double adv, double w_seq, double norm,
                                 double kappa, LossSums& acc) {
  // vespo and geoMean carry the §9.1 weight inside their own terms (§9.4).
  const bool own = o.surrogate == kVespo || o.surrogate == kGeoMean;
  double w = q && !own ? rc_token_weight(o, old, (double)*q, w_seq, norm) : 1.0;
  if (!off_policy_keep(o, adv, kappa)) {
    acc.op_tok += 1.0;
    w *= 0.0;
  }
  return w;
}

// Spec §9.4: per-sequence sums of vespo (a: Σ clamp(x) + Σ log w^IS) and geoMean (a: Σ y,
// b: Σ A, c: Σ log(w^IS + 1e-10)) over the tokens in the loss.
struct SeqTypeSums {
  double a = 0, b = 0, c = 0;
};
GK_HD bool uses_seq_type_sums(const LossOptions& o) { return o.surrogate == kVespo || o.surrogate == kGeoMean; }
// One token in the loss (q: its samplerLogp or null; norm: §9.1's batch divisor).
GK_HD void seq_type_token(const LossOptions& o, double lp, double old, double adv, const float* q, double norm, SeqTypeSums& s) {
  const bool token_is = q && o.rc_level == kRcToken;
  const double wis = token_is ? rc_token_weight(o, old, (double)*q, 1.0, norm) : 1.0;
  if (o.surrogate == kVespo) {
    s.a += clamp_log_ratio(lp - old) + (token_is ? log(wis) : 0.0);
  } else {
    s.a += geo_token(o, lp - old, adv).y;
    s.b += adv;
    if (token_is) s.c += log(wis + 1e-10);
  }
}
// The sequence's terms from its sums: vespo's log-weight; geoMean's policy loss -Ā·ρ·W
// (seq_loss), its share of the batch loss (1/S of it) and its gradient per unclamped token.
struct SeqPolicy {
  double vespo_lw = 0, geo_seq_loss = 0, geo_loss = 0, geo_grad = 0;
};
// w_seq, norm: the §9.1 sequence weight (its level 'sequence'/'sequenceMean') and batch divisor.
GK_HD SeqPolicy seq_policy(const LossOptions& o, const SeqTypeSums& s, double cnt, double seqs, bool has_q, double w_seq, double norm) {
  SeqPolicy p;
  if (o.surrogate == kVespo) {
    p.vespo_lw = vespo_log_weight(s.a);
  } else if (o.surrogate == kGeoMean && cnt > 0.0) {
    const double ns = cnt + 1e-8;
    double w = 1.0;
    if (has_q && o.rc_level == kRcToken) w = exp(s.c / ns);
    else if (has_q && o.rc_level != kRcOff) w = rc_token_weight(o, 0.0, 0.0, w_seq, norm);  // (the token args unused here)
    p.geo_seq_loss = -(s.b / ns) * exp(s.a / ns) * w;
    p.geo_loss = p.geo_seq_loss / seqs;
    p.geo_grad = p.geo_loss / ns;
  }
  return p;
}

// One valid token of the loss step (spec §3-5): adds its metrics to `acc` and its weighted
// loss, writes ∂loss/∂logp (w-scaled; for 'sequence' the cross-token part is accumulated into
// g_seq and added by the caller once the sequence is done), ∂loss/∂H and the token's loss.
struct TokenInputs {
  double lp, old, adv;
  const float* ref_lp;   // this token's reference log-prob, or null
  const float* entropy;  // this token's entropy, or null
  double policy_weight;  // §9.1 IS weight times §9.2's keep (1: neither)
  const float* q;        // this token's samplerLogp, or null (counted in non_finite when not finite)
  double entropy_weight; // §9.8 'tokenMean' form: entropy_token_weight (unused otherwise)
  bool chosen;           // §9.4: chosen by the covariance selection (clipCov, klCov)
  const SeqPolicy* seq;  // §9.4: its sequence's vespo / geoMean terms
};
GK_HD void token_step(const LossOptions& o, const TokenInputs& x, double w, Ratio seq_ratio, bool use_q, double threshold,
                      LossSums& acc, double& g_seq, float* dlogp, float* dentropy, float* token_loss) {
  const Ratio r = o.is_level == kIsToken ? ratio_from_log(x.lp - x.old) : seq_ratio;
  double l, d;
  double d_own = 0.0;  // geoMean: the policy gradient, already weighted (not through w)
  bool clipped_low, clipped_high;
  if (o.surrogate == kGeoMean) {  // §9.4: the sequence's term, outside the aggregation
    const GeoToken g = geo_token(o, x.lp - x.old, x.adv);
    l = x.seq->geo_seq_loss;
    d = 0.0;
    d_own = g.unclamped ? x.seq->geo_grad : 0.0;
    clipped_low = g.differs && x.adv < 0.0;
    clipped_high = g.differs && x.adv > 0.0;
  } else {
    const PolicyTerm p = policy_term(o, r.value, x.adv, x.lp, PolicyExtra{x.old, x.seq->vespo_lw, x.chosen});
    const double pm = (use_q ? ((double)*x.entropy >= threshold ? 1.0 : 0.0) : 1.0) * x.policy_weight;
    l = -pm * p.j;
    d = -pm * p.dj_dlogp;
    if (o.is_level == kIsSequence) g_seq += -pm * p.dj_drho;
    else d += -pm * p.dj_drho * r.dvalue;
    clipped_low = p.clipped_low;
    clipped_high = p.clipped_high;
    acc.phi += p.phi;
  }
  const double l_pol = l;  // the policy part (geoMean's is added once per sequence, by the caller)
  double lk = 0.0;         // the KL part
  if (x.ref_lp) {
    const KlTerm k = kl_term(o.kl, *x.ref_lp, x.lp);
    acc.kl += k.kl;
    if (o.beta != 0.0) {
      if (o.bias_corrected_kl) {  // §9.2: ρ·KL, the gradient through ρ included
        lk += o.beta * r.value * k.kl;
        d += o.beta * r.value * k.dkl_dlogp;
        if (o.is_level == kIsSequence) g_seq += o.beta * k.kl;
        else d += o.beta * k.kl * r.dvalue;
      } else {
        lk += o.beta * k.kl;
        d += o.beta * k.dkl_dlogp;
      }
    }
  }
  if (x.entropy) acc.entropy += *x.entropy;
  double ent = 0.0, went = w;  // the entropy term and its aggregation weight
  if (o.entropy_form == kEntropyTokenMean) {
    const double em = use_q ? ((double)*x.entropy >= threshold ? 1.0 : 0.0) : 1.0;  // m_e
    if (o.entropy_coef != 0.0) ent = -em * o.entropy_coef * *x.entropy;
    went = em * x.entropy_weight;
  } else if (o.entropy_coef != 0.0) {
    ent = -o.entropy_coef * *x.entropy;
  }
  if (dentropy) *dentropy = (float)(-went * o.entropy_coef);
  *dlogp = (float)(w * d + d_own);
  l = l_pol + lk;
  if (token_loss) *token_loss = (float)(l + ent);
  const double l_agg = o.surrogate == kGeoMean ? lk : l;  // what goes through w
  acc.loss += o.entropy_form == kEntropyTokenMean ? w * l_agg + x.entropy_weight * ent : w * (l_agg + ent);
  acc.tokens += 1.0;
  acc.non_finite += (!isfinite(x.lp) || (x.entropy && !isfinite(*x.entropy)) || (x.q && !isfinite(*x.q))) ? 1.0 : 0.0;
  acc.ratio += r.value;
  acc.clip_low += clipped_low ? 1.0 : 0.0;
  acc.clip_high += clipped_high ? 1.0 : 0.0;
  acc.clip_any += (clipped_low || clipped_high) ? 1.0 : 0.0;
}

}  // namespace gk
