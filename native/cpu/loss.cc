// Spec §3-5 on the CPU: the GRPO loss from per-token log-probs, its gradient and metrics.
// Sequences run in parallel; their float64 partial sums are reduced in sequence order, so the
// result is bit-identical run to run and for any thread count.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#include "../backend.h"
#include "pool.h"
#include "rows.h"

namespace gk {
namespace cpu {

Status grpo_loss_step(LossStepArgs& a) {
  Status st;
  const LossOptions& o = a.opt;
  const int64_t S = a.s;
  a.out = LossMetrics{};
  if (a.n < 0) {
    st.code = kShape;
    snprintf(st.message, sizeof(st.message), "the token count must be >= 0");
    return st;
  }
  // Every offset is checked (on a private copy) before any token is indexed with it.
  std::vector<int64_t> offsets;
  st = copy_offsets(a.seq_offsets, S, a.n, &offsets);
  if (!st.ok()) return st;
  const int64_t* off = offsets.data();
  if (!loss_options_ok(o)) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "loss options must be finite, with normalizer and maxCompletionLength 0 or positive with a finite reciprocal");
    return st;
  }
  if (const char* e = loss_type_error(o)) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "%s", e);
    return st;
  }
  const bool use_q = o.top_entropy_quantile < 1.0;
  if ((use_q || o.entropy_coef != 0.0) && !a.entropy) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "entropy is required for entropyCoef != 0 or topEntropyQuantile < 1");
    return st;
  }
  if (o.beta != 0.0 && !a.ref_logp) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "refLogp is required when beta != 0");
    return st;
  }
  auto seq_dropped = [&](int64_t s) { return o.mask_truncated && a.truncated && a.truncated[s]; };
  auto tok_valid = [&](int64_t t) { return !a.mask || a.mask[t] != 0; };
  auto logp_at = [&](int64_t t) { return a.logp64 ? a.logp64[t] : (double)a.logp[t]; };

  auto old_at = [&](int64_t t) { return a.old_logp ? (double)a.old_logp[t] : logp_at(t); };
  const float* q = a.sampler_logp;
  if (!q && (o.rc_level != kRcOff || o.rs_count > 0)) {
    st.code = kInvalid;
    snprintf(st.message, sizeof(st.message), "samplerLogp is required for rolloutCorrection and rolloutRejection");
    return st;
  }

  // §9.1 pre-pass over V0_s (valid tokens before rejection): weights, rejection, metrics.
  std::vector<CorrSums> corr(q ? (size_t)S : 0);
  std::vector<double> count((size_t)S, 0.0);
  double tokens = 0.0, longest = 0.0;
  for (int64_t s = 0; s < S; ++s) {
    longest = std::max(longest, (double)(off[s + 1] - off[s]));
    if (seq_dropped(s)) continue;
    double c = 0.0;
    if (q) {
      CorrSums cs;
      for (int64_t t = off[s]; t < off[s + 1]; ++t)
        if (tok_valid(t)) corr_token(o, old_at(t), (double)q[t], cs);
      corr_finish(o, cs);
      corr[(size_t)s] = cs;
      for (int64_t t = off[s]; t < off[s + 1]; ++t) c += tok_valid(t) && rs_kept(o, old_at(t), q + t, cs.keep) ? 1.0 : 0.0;
    } else {
      for (int64_t t = off[s]; t < off[s + 1]; ++t) c += tok_valid(t) ? 1.0 : 0.0;
    }
    count[(size_t)s] = c;
    tokens += c;
  }
  CorrSums corr_tot;
  for (const CorrSums& c : corr) corr_tot = corr_merge(corr_tot, c);
  const double norm = rc_norm(o, corr_tot);
  // A token of sequence s that is in the loss: valid, and kept by the rejection criteria.
  auto kept = [&](int64_t s, int64_t t) {
    return tok_valid(t) && (!q || rs_kept(o, old_at(t), q + t, corr[(size_t)s].keep));
  };

  // §9.4 covariance selection (clipCov, klCov): the k tokens of smallest (key, row) among the
  // eligible ones of the loss.
  std::vector<uint8_t> chosen(uses_cov_selection(o) ? (size_t)a.n : 0, 0);
  if (uses_cov_selection(o) && tokens > 0.0) {
    double sum_a = 0.0, sum_lp = 0.0;
    for (int64_t s = 0; s < S; ++s) {
      if (seq_dropped(s)) continue;
      for (int64_t t = off[s]; t < off[s + 1]; ++t)
        if (kept(s, t)) {
          sum_a += token_adv(o, a.advantages, s, t);
          sum_lp += logp_at(t);
        }
    }
    const double mean_a = sum_a / tokens, mean_lp = sum_lp / tokens;
    std::vector<std::pair<uint64_t, int64_t>> cand;
    for (int64_t s = 0; s < S; ++s) {
      if (seq_dropped(s)) continue;
      for (int64_t t = off[s]; t < off[s + 1]; ++t) {
        uint64_t key;
        if (kept(s, t) && cov_candidate(o, t, token_adv(o, a.advantages, s, t), logp_at(t), old_at(t), mean_a, mean_lp, &key))
          cand.emplace_back(key, t);
      }
    }
    const int64_t k = cov_select_count(o, tokens, (int64_t)cand.size());
    if (k > 0) {
      std::nth_element(cand.begin(), cand.begin() + (k - 1), cand.end());
      for (int64_t i = 0; i < k; ++i) chosen[(size_t)cand[(size_t)i].second] = 1;
    }
  }

  // Entropy threshold for topEntropyQuantile: the (1 - q) quantile of H over valid tokens,
  // linear interpolation between order statistics.
  double threshold = -INFINITY;
  if (use_q && o.entropy_threshold_given) {
    threshold = o.entropy_threshold;  // §9.7: the global threshold, given
  } else if (use_q && tokens > 0) {
    std::vector<double> h;
    h.reserve((size_t)tokens);
    for (int64_t s = 0; s < S; ++s) {
      if (seq_dropped(s)) continue;
      for (int64_t t = off[s]; t < off[s + 1]; ++t)
        if (kept(s, t) && !std::isnan(a.entropy[t])) h.push_back(a.entropy[t]);  // NaN has no rank
    }
    if (h.empty()) h.push_back(INFINITY);
    const double pos = (1.0 - o.top_entropy_quantile) * (double)(h.size() - 1);
    const size_t lo = (size_t)pos;
    std::nth_element(h.begin(), h.begin() + (long)lo, h.end());
    const double vlo = h[lo];
    double vhi = vlo;
    if (lo + 1 < h.size()) vhi = *std::min_element(h.begin() + (long)lo + 1, h.end());
    threshold = vlo + (pos - (double)lo) * (vhi - vlo);
  }

  // §9.8 'tokenMean' entropy form: the count of the tokens that pass the top-entropy mask.
  double count_e = tokens;
  if (o.entropy_form == kEntropyTokenMean && use_q) {
    count_e = 0.0;
    for (int64_t s = 0; s < S; ++s) {
      if (seq_dropped(s)) continue;
      for (int64_t t = off[s]; t < off[s + 1]; ++t) count_e += kept(s, t) && (double)a.entropy[t] >= threshold ? 1.0 : 0.0;
    }
  }
  const double ent_w = entropy_token_weight(o, count_e);

  std::vector<LossSums> part((size_t)S);
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, a.n / S));
  parallel_for(S, grain, [&](int64_t sb, int64_t se, int) {
    for (int64_t s = sb; s < se; ++s) {
      LossSums& acc = part[(size_t)s];
      const bool dropped = seq_dropped(s);
      const double cnt = count[(size_t)s];
      const double w = aggregation_weight(o, cnt, (double)S, tokens, longest);
      Ratio seq_ratio{1.0, 1.0};
      if (o.is_level != kIsToken) {
        double lr = 0.0;
        for (int64_t t = off[s]; t < off[s + 1]; ++t)
          if (!dropped && kept(s, t)) lr += logp_at(t) - old_at(t);
        seq_ratio = ratio_from_log(lr / (cnt > 1.0 ? cnt : 1.0));
      }
      // §9.2: the sequence's mean of q - sg[logp] (q: samplerLogp, else oldLogp).
      double kappa = 0.0;
      if (o.off_policy_mask && (q || a.old_logp) && !dropped) {
        for (int64_t t = off[s]; t < off[s + 1]; ++t)
          if (kept(s, t)) kappa += (q ? (double)q[t] : (double)a.old_logp[t]) - logp_at(t);
        kappa /= cnt > 1.0 ? cnt : 1.0;
      }
      const double w_seq = q ? corr[(size_t)s].w_seq : 1.0;
      SeqPolicy sp;  // §9.4 vespo / geoMean
      if (uses_seq_type_sums(o) && !dropped) {
        SeqTypeSums ss;
        for (int64_t t = off[s]; t < off[s + 1]; ++t)
          if (kept(s, t))
            seq_type_token(o, logp_at(t), old_at(t), token_adv(o, a.advantages, s, t), q ? q + t : nullptr, norm, ss);
        sp = seq_policy(o, ss, cnt, (double)S, q != nullptr, w_seq, norm);
        acc.loss += sp.geo_loss;
      }
      double g_seq = 0.0;  // Σ_t w·(-pm·dJ/dρ) of the sequence, for 'sequence'
      for (int64_t t = off[s]; t < off[s + 1]; ++t) {
        if (a.kept) a.kept[t] = (!dropped && kept(s, t)) ? 1 : 0;
        if (dropped || !kept(s, t)) {
          a.dlogp[t] = 0.0f;
          if (a.dentropy) a.dentropy[t] = 0.0f;
          if (a.token_loss) a.token_loss[t] = 0.0f;
          continue;
        }
        const double lp = logp_at(t);
        const double old = old_at(t);
        const double adv = token_adv(o, a.advantages, s, t);
        const double pw = token_policy_weight(o, old, q ? q + t : nullptr, adv, w_seq, norm, kappa, acc);
        const TokenInputs x{lp, old, adv, a.ref_logp ? a.ref_logp + t : nullptr, a.entropy ? a.entropy + t : nullptr, pw,
                            q ? q + t : nullptr, ent_w, !chosen.empty() && chosen[(size_t)t] != 0, &sp};
        token_step(o, x, w, seq_ratio, use_q, threshold, acc, g_seq, a.dlogp + t, a.dentropy ? a.dentropy + t : nullptr,
                   a.token_loss ? a.token_loss + t : nullptr);
      }
      if (o.is_level == kIsSequence && cnt > 0.0) {
        const double extra = w * g_seq * seq_ratio.dvalue / cnt;
        for (int64_t t = off[s]; t < off[s + 1]; ++t)
          if (kept(s, t)) a.dlogp[t] = (float)((double)a.dlogp[t] + extra);
      }
      acc.op_seq = acc.op_tok > 0.0 ? 1.0 : 0.0;
      acc.seqs = cnt > 0.0 ? 1.0 : 0.0;
    }
  });

  LossSums tot;
  for (const LossSums& p : part) tot = loss_merge(tot, p);
  const double denom = tot.tokens > 1.0 ? tot.tokens : 1.0;
  a.out.loss = tot.loss;
  a.out.tokens = tot.tokens;
  a.out.kl_mean = tot.kl / denom;
  a.out.ratio_mean = tot.ratio / denom;
  a.out.clip_low = tot.clip_low / denom;
  a.out.clip_high = tot.clip_high / denom;
  a.out.clip = tot.clip_any / denom;
  a.out.entropy_mean = tot.entropy / denom;
  a.out.entropy_threshold = threshold;
  a.out.non_finite = tot.non_finite;
  fill_correction_metrics(o, corr_tot, tot, &a.out);
  return st;
}

}  // namespace cpu
}  // namespace gk
