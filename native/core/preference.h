// Spec §8 companion (issue 5): the Bradley–Terry reward-model loss on one preference pair.
#pragma once
#include "common.h"

namespace gk {

// loss = -log σ(d), d = r_chosen - r_rejected - margin, computed as softplus(-d) without
// overflow; dloss/dr_chosen = σ(d) - 1 = -σ(-d), dloss/dr_rejected = σ(-d).
struct PairTerm {
  double loss, d_chosen, d_rejected;
};
GK_HD PairTerm bradley_terry(double chosen, double rejected, double margin) {
  const double d = chosen - rejected - margin;
  const double a = d < 0 ? -d : d;
  const double softplus_neg_d = (d < 0 ? -d : 0.0) + log1p(exp(-a));
  const double sig_neg_d = d >= 0 ? exp(-d) / (1.0 + exp(-d)) : 1.0 / (1.0 + exp(d));
  return PairTerm{softplus_neg_d, -sig_neg_d, sig_neg_d};
}

}  // namespace gk
