// The Bradley–Terry reward-model loss on the CPU; float64 sums in pair order (deterministic).
#include "../backend.h"

namespace gk {
namespace cpu {

Status bradley_terry_loss(PreferenceArgs& a) {
  Status st;
  const double scale = a.sum || a.n == 0 ? 1.0 : 1.0 / (double)a.n;
  double loss = 0.0, correct = 0.0, margin_sum = 0.0;
  for (int64_t i = 0; i < a.n; ++i) {
    const double m = a.margins ? (double)a.margins[i] : a.margin;
    const PairTerm p = bradley_terry(a.chosen[i], a.rejected[i], m);
    loss += p.loss;
    correct += a.chosen[i] > a.rejected[i] ? 1.0 : 0.0;
    margin_sum += (double)a.chosen[i] - (double)a.rejected[i];
    a.grad_chosen[i] = (float)(p.d_chosen * scale);
    a.grad_rejected[i] = (float)(p.d_rejected * scale);
  }
  const double n = a.n > 0 ? (double)a.n : 1.0;
  a.loss = loss * scale;
  a.accuracy = correct / n;
  a.mean_margin = margin_sum / n;
  return st;
}

}  // namespace cpu
}  // namespace gk
