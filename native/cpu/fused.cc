// Spec §6 on the CPU: the GRPO loss from logits. One pass over the logits for lse, logp and H;
// the O(N) loss step; one pass that reads the logits and writes the gradient. Extra memory is
// O(N): a token mask and the per-token upstream gradients.
#include <vector>

#include "../backend.h"
#include "rows.h"

namespace gk {
namespace cpu {

Status grpo_loss_fused(FusedLossArgs& a) {
  LogProbArgs& f = a.fwd;
  std::vector<double> logp64((size_t)f.in.n);  // unrounded log-probs for the loss step
  f.logp64 = logp64.data();
  Status st = token_logprobs(f);
  f.logp64 = nullptr;
  if (!st.ok()) return st;

  // A row counts only where the mask allows it and its target is not ignored.
  const LogitsView& x = f.in;
  std::vector<uint8_t> mask((size_t)x.n);
  for (int64_t t = 0; t < x.n; ++t)
    mask[(size_t)t] = (uint8_t)((a.step.mask ? a.step.mask[t] != 0 : true) &&
                                read_target(x.targets, x.target_dtype, t) != x.ignore_index);
  std::vector<float> dlogp((size_t)x.n);
  std::vector<float> dentropy(a.step.opt.entropy_coef != 0.0 ? (size_t)x.n : 0);
  LossStepArgs& s = a.step;
  s.logp = f.logp;
  s.logp64 = logp64.data();
  s.entropy = f.entropy;
  s.mask = mask.data();
  s.dlogp = dlogp.data();
  s.dentropy = dentropy.empty() ? nullptr : dentropy.data();
  st = grpo_loss_step(s);
  if (!st.ok()) return st;

  LogProbBackwardArgs b;
  b.in = f.in;
  b.gl = dlogp.data();
  b.gh = s.dentropy;
  b.lse = f.lse;
  b.entropy = f.entropy;
  b.grad = a.grad;
  s.dlogp = nullptr;
  s.logp64 = nullptr;
  s.dentropy = nullptr;
  s.mask = nullptr;
  return token_logprobs_backward(b);
}

}  // namespace cpu
}  // namespace gk
