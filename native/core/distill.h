// Spec §7: distillation divergences between temperature-scaled teacher and student rows.
// Element terms in float64 given each row's log-normalisers; backends own the loops.
#pragma once
#include "common.h"
#include "softmax.h"

namespace gk {

enum Divergence : int32_t { kForwardKl = 0, kReverseKl = 1, kJsd = 2 };

// log p_S, log p_T of one element, and p_S, p_T. A -inf logit gives p = 0, log p = -inf.
struct PairProbs {
  double ls, lt, ps, pt;
};
GK_HD PairProbs pair_probs(float us, float ut, double lse_s, double lse_t) {
  PairProbs p;
  p.ls = (double)us - lse_s;
  p.lt = (double)ut - lse_t;
  p.ps = (double)exp_nonpos((float)p.ls);  // float exp (~2e-7 relative), sums stay float64
  p.pt = (double)exp_nonpos((float)p.lt);
  return p;
}

// x log(x / y) with the conventions 0 log 0 = 0.
GK_HD double xlogxy(double x, double lx, double ly) { return x > 0.0 ? x * (lx - ly) : 0.0; }

// log(p_S / M) and log(p_T / M) for the JSD's mixture M = β p_T + (1 − β) p_S, from
// d = log p_T − log p_S, without the cancellation of log p_S − log M (both about −log V, their
// difference small when the distributions are close): log(M / p_S) = log(β e^d + 1 − β) is
// log1p(β expm1(d)) for d <= 0 and d + log1p((1 − β) expm1(−d)) for d > 0 (no overflow when p_S
// underflows). A NaN d gives NaN logs.
// Also ws = β p_T / M = −∂log(p_S / M)/∂d (the CUDA backend's first-order lse correction).
struct MixLogs {
  double s, t, ws;
};
GK_HD MixLogs mixture_logs(double beta, double d) {
  MixLogs r;
  if (d <= 0.0) {
    const double em = expm1(d);
    const double a = log1p(beta * em);
    r.s = -a;
    r.t = d - a;
    r.ws = beta * (em + 1.0) / (1.0 + beta * em);
  } else {
    const double em = expm1(-d);
    const double b = log1p((1.0 - beta) * em);
    r.s = -d - b;
    r.t = -b;
    r.ws = beta / (1.0 + (1.0 - beta) * em);
  }
  return r;
}

// Contribution of one element to the row divergence.
GK_HD double divergence_term(int32_t kind, double beta, PairProbs p) {
  if (kind == kForwardKl) return xlogxy(p.pt, p.lt, p.ls);
  if (kind == kReverseKl) return xlogxy(p.ps, p.ls, p.lt);
  if (!(p.ps > 0.0) && !(p.pt > 0.0)) return 0.0;  // M = 0 (or both NaN): 0 log 0
  const MixLogs r = mixture_logs(beta, p.lt - p.ls);
  return beta * (p.pt > 0.0 ? p.pt * r.t : 0.0) + (1.0 - beta) * (p.ps > 0.0 ? p.ps * r.s : 0.0);
}

// ∂(row divergence)/∂u_S for one element (u = z / T), given the row's divergence value d_row
// and, for the JSD, the row value of KL(p_S || M) (kl_sm).
GK_HD double divergence_grad(int32_t kind, double beta, PairProbs p, double d_row, double kl_sm) {
  if (p.ps <= 0.0 && kind != kForwardKl) return 0.0;
  if (kind == kForwardKl) return p.ps - p.pt;
  if (kind == kReverseKl) return p.ps * (p.ls - p.lt - d_row);
  return (1.0 - beta) * p.ps * (mixture_logs(beta, p.lt - p.ls).s - kl_sm);
}

// The JSD's second row statistic: the element term of KL(p_S || M).
GK_HD double kl_student_mixture_term(double beta, PairProbs p) {
  return p.ps > 0.0 ? p.ps * mixture_logs(beta, p.lt - p.ls).s : 0.0;
}

}  // namespace gk
