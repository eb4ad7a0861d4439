// Spec §6: the fused step from logits, composed from the §1 and §3-§5 references.

import { refTokenLogProbs, refTokenLogProbsBackward } from './logprobs';
import { refGrpoLoss, type RefLossInputs, type RefLossMetrics, type RefLossOptions } from './loss';

export interface RefFusedResult {
  loss: number;
  metrics: RefLossMetrics;
  grad: Float64Array;
  logp: Float64Array;
  entropy: Float64Array;
}

export function refGrpoLossFromLogits(
  z: ArrayLike<number>,
  N: number,
  V: number,
  targets: ArrayLike<number | bigint>,
  inp: Omit<RefLossInputs, 'logp' | 'entropy'>,
  o: RefLossOptions & { temperature: number; ignoreIndex: number },
): RefFusedResult {
  const lpOpts = { temperature: o.temperature, ignoreIndex: o.ignoreIndex };
  const { logp, entropy } = refTokenLogProbs(z, N, V, targets, lpOpts);

  // Ignored rows leave the loss: mask = mask · (target != ignoreIndex).
  const mask = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    const given = inp.mask == null ? 1 : inp.mask[n]! ? 1 : 0;
    mask[n] = Number(targets[n]) === o.ignoreIndex ? 0 : given;
  }

  const res = refGrpoLoss({ ...inp, logp, entropy, mask }, o);
  const grad = refTokenLogProbsBackward(z, N, V, targets, res.dlogp, res.dentropy, lpOpts);
  return { loss: res.loss, metrics: res.metrics, grad, logp, entropy };
}
