// Spec §7 in float64: distillation divergences between temperature-scaled teacher and student
// rows, aggregated like spec §4, with ∂loss/∂student-logits.

export interface RefDistillOptions {
  divergence: 'forwardKL' | 'reverseKL' | 'jsd';
  beta: number;
  temperature: number;
  ignoreIndex: number;
  hardLabelWeight: number;
  aggregation: 'seqMeanTokenMean' | 'tokenMean' | 'constant' | 'seqMeanTokenSum';
  normalizer: number | null;
  maxCompletionLength: number;
}

function logSoftmax(z: ArrayLike<number>, o: number, v: number, T: number): Float64Array {
  const u = Float64Array.from({ length: v }, (_, j) => z[o + j]! / T);
  let m = -Infinity;
  for (const x of u) if (x > m) m = x;
  let s = 0;
  for (const x of u) s += Math.exp(x - m);
  const lse = m + Math.log(s);
  return u.map((x) => x - lse);
}

/** x·(lx − ly) with 0·log 0 = 0. */
const xlog = (x: number, lx: number, ly: number) => (x > 0 ? x * (lx - ly) : 0);

export function refDistill(
  student: ArrayLike<number>, teacher: ArrayLike<number>, n: number, v: number,
  targets: ArrayLike<number | bigint> | null, mask: ArrayLike<number> | null, seqOffsets: ArrayLike<number>, o: RefDistillOptions,
) {
  const S = seqOffsets.length - 1;
  const valid = Array.from({ length: n }, (_, r) => (mask ? !!mask[r] : true) && !(targets && Number(targets[r]) === o.ignoreIndex));
  const counts = Array.from({ length: S }, (_, s) => {
    let c = 0;
    for (let r = seqOffsets[s]!; r < seqOffsets[s + 1]!; r++) if (valid[r]) c++;
    return c;
  });
  const tokens = counts.reduce((a, b) => a + b, 0);
  const weight = new Float64Array(n);
  for (let s = 0; s < S; s++) {
    const w =
      o.aggregation === 'seqMeanTokenMean' ? 1 / (S * Math.max(1, counts[s]!))
      : o.aggregation === 'tokenMean' ? 1 / (o.normalizer ?? Math.max(1, tokens))
      : o.aggregation === 'constant' ? 1 / (S * o.maxCompletionLength)
      : 1 / S;
    for (let r = seqOffsets[s]!; r < seqOffsets[s + 1]!; r++) weight[r] = valid[r] ? w : 0;
  }
  let loss = 0;
  const grad = new Float64Array(n * v);
  const rowLoss = new Float64Array(n);
  const b = o.beta;
  for (let r = 0; r < n; r++) {
    if (weight[r] === 0) continue;
    const ls = logSoftmax(student, r * v, v, o.temperature);
    const lt = logSoftmax(teacher, r * v, v, o.temperature);
    const ps = ls.map(Math.exp);
    const pt = lt.map(Math.exp);
    let d = 0;
    let klSM = 0;
    const lm = new Float64Array(v);
    for (let j = 0; j < v; j++) {
      if (o.divergence === 'forwardKL') d += xlog(pt[j]!, lt[j]!, ls[j]!);
      else if (o.divergence === 'reverseKL') d += xlog(ps[j]!, ls[j]!, lt[j]!);
      else {
        const m = b * pt[j]! + (1 - b) * ps[j]!;
        lm[j] = m > 0 ? Math.log(m) : -Infinity;
        d += b * xlog(pt[j]!, lt[j]!, lm[j]!) + (1 - b) * xlog(ps[j]!, ls[j]!, lm[j]!);
        klSM += xlog(ps[j]!, ls[j]!, lm[j]!);
      }
    }
    const y = targets ? Number(targets[r]) : -1;
    const value = d + (o.hardLabelWeight ? o.hardLabelWeight * -ls[y]! : 0);
    rowLoss[r] = value;
    loss += weight[r]! * value;
    for (let j = 0; j < v; j++) {
      let g: number;
      if (o.divergence === 'forwardKL') g = ps[j]! - pt[j]!;
      else if (o.divergence === 'reverseKL') g = ps[j]! > 0 ? ps[j]! * (ls[j]! - lt[j]! - d) : 0;
      else g = ps[j]! > 0 ? (1 - b) * ps[j]! * (ls[j]! - lm[j]! - klSM) : 0;
      if (o.hardLabelWeight) g += o.hardLabelWeight * (ps[j]! - (j === y ? 1 : 0));
      grad[r * v + j] = (weight[r]! * g) / o.temperature;
    }
  }
  return { loss, tokens, grad, rowLoss };
}
