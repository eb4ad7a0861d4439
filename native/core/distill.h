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

// Contribution of one element to the row divergence.
GK_HD double divergence_term(int32_t kind, double beta, PairProbs p) {
  if (kind == kForwardKl) return xlogxy(p.pt, p.lt, p.ls);
  if (kind == kReverseKl) return xlogxy(p.ps, p.ls, p.lt);
  const double m = beta * p.pt + (1.0 - beta) * p.ps;
  if (m <= 0.0) return 0.0;
  const double lm = log(m);
  return beta * xlogxy(p.pt, p.lt, lm) + (1.0 - beta) * xlogxy(p.ps, p.ls, lm);
}

// ∂(row divergence)/∂u_S for one element (u = z / T), given the row's divergence value d_row
// and, for the JSD, the row value of KL(p_S || M) (kl_sm).
GK_HD double divergence_grad(int32_t kind, double beta, PairProbs p, double d_row, double kl_sm) {
  if (p.ps <= 0.0 && kind != kForwardKl) return 0.0;
  if (kind == kForwardKl) return p.ps - p.pt;
  if (kind == kReverseKl) return p.ps * (p.ls - p.lt - d_row);
  const double m = beta * p.pt + (1.0 - beta) * p.ps;
  return (1.0 - beta) * p.ps * (p.ls - log(m) - kl_sm);
}

// The JSD's second row statistic: the element term of KL(p_S || M).
GK_HD double kl_student_mixture_term(double beta, PairProbs p) {
  const double m = beta * p.pt + (1.0 - beta) * p.ps;
  return m > 0.0 ? xlogxy(p.ps, p.ls, log(m)) : 0.0;
}

}  // namespace gk
