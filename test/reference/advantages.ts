// Spec §2 and §9.5: group-relative advantages, in float64.

export type Scale = 'group' | 'batch' | 'none';
export type Estimator = 'grpo' | 'rloo' | 'reinforcePlusPlus' | 'reinforcePlusPlusBaseline' | 'opo' | 'gpg' | 'grpoPassK';
export type Aggregation = 'sumThenNormalize' | 'normalizeThenSum';

export interface RefAdvantageOptions {
  groupSize: number;
  scale: Scale;
  estimator: Estimator;
  eps: number;
  weights?: ArrayLike<number>;
  multiObjectiveAggregation?: Aggregation;
  lengths?: ArrayLike<number>;
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

/** Mean and Bessel std of a group's values, and whether it carries no signal (< 2 values, or all equal). */
function stats(values: number[]): { mean: number; std: number; flat: boolean } {
  let sum = 0;
  for (const v of values) sum += v;
  return { mean: values.length ? sum / values.length : 0, std: besselStd(values), flat: values.length < 2 || values.every((v) => v === values[0]) };
}

/**
 * §9.5 whitening over the batch: weighted mean and Bessel variance (by the weight sum) of the
 * valid values, then (x - mean) / div; 0 for invalid samples (NaN) or when no weight is left.
 */
function whiten(x: Float64Array, w: (i: number) => number, div: (variance: number) => number): Float64Array {
  let W = 0;
  let S = 0;
  for (let i = 0; i < x.length; i++) if (!Number.isNaN(x[i]!)) { W += w(i); S += w(i) * x[i]!; }
  const mean = W > 0 ? S / W : 0;
  let ss = 0;
  for (let i = 0; i < x.length; i++) if (!Number.isNaN(x[i]!)) ss += w(i) * (x[i]! - mean) ** 2;
  const d = div(W > 1 ? ss / (W - 1) : 0);
  return Float64Array.from(x, (v) => (Number.isNaN(v) || !(W > 0) ? 0 : (v - mean) / d));
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

  const lengthOf = (i: number): number => (opts.lengths === undefined ? 1 : opts.lengths[i]!);
  if (opts.estimator === 'opo' && opts.lengths === undefined) throw new Error('opo needs lengths');
  // gpg: α = valid samples / max(1, valid samples with a non-zero reward).
  let nonzero = 0;
  for (let i = 0; i < total; i++) if (valid[i] && combined[i] !== 0) nonzero++;
  const alpha = allValid.length / Math.max(1, nonzero);
  const whitenedX = new Float64Array(total).fill(NaN); // the REINFORCE++ / normalizeThenSum values before the batch step
  const gdpo = opts.multiObjectiveAggregation === 'normalizeThenSum';

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
    const flat = Gv <= 1 || allEqual;

    if (gdpo) {
      // Each function normalised within the group over the members where it applies, then summed.
      let everyFlat = true;
      for (let k = 0; k < K; k++) {
        const idx: number[] = [];
        for (let i = g * G; i < (g + 1) * G; i++) if (!Number.isNaN(rewards[k]![i]!)) idx.push(i);
        const st = stats(idx.map((i) => rewards[k]![i]!));
        if (!st.flat) everyFlat = false;
        const w = weights === undefined ? 1 : weights[k]!;
        for (const i of idx) {
          const z = st.flat ? 0 : (rewards[k]![i]! - st.mean) / (st.std + opts.eps);
          whitenedX[i] = (Number.isNaN(whitenedX[i]!) ? 0 : whitenedX[i]!) + w * z;
        }
      }
      if (everyFlat) zeroVarianceGroups++;
      continue;
    }
    if (flat) zeroVarianceGroups++;
    if (opts.estimator === 'reinforcePlusPlus' || opts.estimator === 'reinforcePlusPlusBaseline') {
      for (const i of members) whitenedX[i] = opts.estimator === 'reinforcePlusPlus' ? combined[i]! : flat ? 0 : combined[i]! - mean;
      continue;
    }
    if (flat) continue; // every member gets exactly 0

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
      } else if (opts.estimator === 'opo') {
        let wsum = 0;
        let wr = 0;
        for (const j of members) { wsum += lengthOf(j); wr += lengthOf(j) * combined[j]!; }
        if (!(wsum > 0)) continue; // no weight: 0
        baseline = wr / wsum;
      } else if (opts.estimator === 'gpg') {
        advantages[i] = (alpha * (r - mean)) / divisor;
        continue;
      } else if (opts.estimator === 'grpoPassK') {
        // The first member with the largest reward gets its margin over the best of the others.
        let best = members[0]!;
        for (const j of members) if (combined[j]! > combined[best]!) best = j;
        if (i !== best) continue;
        baseline = Math.max(...members.filter((j) => j !== best).map((j) => combined[j]!));
      } else {
        throw new Error(`unknown estimator ${String(opts.estimator)}`);
      }
      advantages[i] = (r - baseline) / divisor;
    }
  }

  if (gdpo) {
    const a = whiten(whitenedX, () => 1, (v) => Math.sqrt(v) + opts.eps);
    advantages.set(a);
  } else if (opts.estimator === 'reinforcePlusPlus' || opts.estimator === 'reinforcePlusPlusBaseline') {
    advantages.set(whiten(whitenedX, lengthOf, (v) => Math.sqrt(v + opts.eps)));
  }

  return { advantages, combined, zeroVarianceGroups, groupMean, groupStd };
}
