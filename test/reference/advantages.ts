// Spec §2: group-relative advantages, in float64.

export type Scale = 'group' | 'batch' | 'none';
export type Estimator = 'grpo' | 'rloo';

export interface RefAdvantageOptions {
  groupSize: number;
  scale: Scale;
  estimator: Estimator;
  eps: number;
  weights?: ArrayLike<number>;
}

export interface RefAdvantages {
  advantages: Float64Array;
  combined: Float64Array;
  zeroVarianceGroups: number;
  groupMean: Float64Array;
  groupStd: Float64Array;
}

/** Bessel-corrected standard deviation (two passes); 0 when fewer than 2 values. */
function besselStd(values: number[]): number {
  if (values.length < 2) return 0;
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / values.length;
  let ss = 0;
  for (const v of values) ss += (v - mean) * (v - mean);
  return Math.sqrt(ss / (values.length - 1));
}

export function refGroupAdvantages(rewards: ArrayLike<number>[], opts: RefAdvantageOptions): RefAdvantages {
  const G = opts.groupSize;
  const K = rewards.length;
  if (K < 1) throw new Error('refGroupAdvantages: at least one reward array is required');
  if (!Number.isInteger(G) || G < 1) throw new Error(`groupSize must be an integer >= 1, got ${G}`);
  const total = rewards[0]!.length;
  for (let k = 0; k < K; k++) {
    if (rewards[k]!.length !== total) throw new Error(`reward array ${k} has length ${rewards[k]!.length}, expected ${total}`);
  }
  if (total % G !== 0) throw new Error(`reward length ${total} is not a multiple of groupSize ${G}`);
  const B = total / G;
  const weights = opts.weights;
  if (weights !== undefined && weights.length !== K) throw new Error(`weights length ${weights.length} != ${K} reward functions`);

  // Combined reward: Σ_k w_k r_k over the non-NaN r_k; NaN when every r_k is NaN (invalid sample).
  const combined = new Float64Array(total);
  const valid: boolean[] = new Array<boolean>(total).fill(false);
  for (let i = 0; i < total; i++) {
    let sum = 0;
    let any = false;
    for (let k = 0; k < K; k++) {
      const r = rewards[k]![i]!;
      if (Number.isNaN(r)) continue;
      const w = weights === undefined ? 1 : weights[k]!;
      sum += w * r;
      any = true;
    }
    combined[i] = any ? sum : NaN;
    valid[i] = any;
  }

  // Batch std over every valid combined reward.
  const allValid: number[] = [];
  for (let i = 0; i < total; i++) if (valid[i]) allValid.push(combined[i]!);
  const stdBatch = besselStd(allValid);

  const advantages = new Float64Array(total); // invalid samples and zero-variance groups stay 0
  const groupMean = new Float64Array(B);
  const groupStd = new Float64Array(B);
  let zeroVarianceGroups = 0;

  for (let g = 0; g < B; g++) {
    const members: number[] = [];
    for (let i = g * G; i < (g + 1) * G; i++) if (valid[i]) members.push(i);
    const Gv = members.length;
    const values = members.map((i) => combined[i]!);

    let sum = 0;
    for (const v of values) sum += v;
    const mean = Gv > 0 ? sum / Gv : 0;
    const std = besselStd(values);
    groupMean[g] = mean;
    groupStd[g] = std;

    let allEqual = true;
    for (const v of values) if (v !== values[0]) allEqual = false;
    if (Gv <= 1 || allEqual) {
      zeroVarianceGroups++;
      continue; // every member gets exactly 0
    }

    let divisor: number;
    if (opts.scale === 'group') divisor = std + opts.eps;
    else if (opts.scale === 'batch') divisor = stdBatch + opts.eps;
    else if (opts.scale === 'none') divisor = 1;
    else throw new Error(`unknown scale ${String(opts.scale)}`);

    for (const i of members) {
      const r = combined[i]!;
      let baseline: number;
      if (opts.estimator === 'grpo') {
        baseline = mean;
      } else if (opts.estimator === 'rloo') {
        let others = 0;
        for (const j of members) if (j !== i) others += combined[j]!;
        baseline = others / (Gv - 1);
      } else {
        throw new Error(`unknown estimator ${String(opts.estimator)}`);
      }
      advantages[i] = (r - baseline) / divisor;
    }
  }

  return { advantages, combined, zeroVarianceGroups, groupMean, groupStd };
}
