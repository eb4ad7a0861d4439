import t from 'tap';
import * as gk from '../lib/index';
import { lossCases, runLossCase } from './reference/cases';
import { centralDiff } from './reference/fd';
import { refGrpoLoss } from './reference/loss';
import { Rng } from './reference/random';
import { assertCase, rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'loss');

t.test('matches the float64 reference (surrogates x IS levels x KL x aggregations x masks)', async (t) => {
  let i = 0;
  for (const c of lossCases(true)) assertCase(t, await runLossCase(seed + i++, c), seed);
});

t.test('gradient agrees with central finite differences of the reference loss', async (t) => {
  const rng = new Rng(seed + 3);
  const s = 3;
  const l = 5;
  const n = s * l;
  const combos: gk.GrpoLossOptions[] = [
    {},
    { surrogate: 'sapo', beta: 0.1, klEstimator: 'k2' },
    { importanceSamplingLevel: 'sequence', beta: 0.05 },
    { lossType: 'dapo', delta: 1.4, beta: 0.02, klEstimator: 'k1' },
    { aggregation: 'seqMeanTokenSum', topEntropyQuantile: 0.6 },
  ];
  for (const options of combos) {
    const logp = Float32Array.from({ length: n }, () => -Math.abs(rng.normal()) - 0.05);
    const oldLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.25);
    const refLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.4);
    const entropy = Float32Array.from(logp, () => rng.next() * 2);
    const advantages = Float32Array.from({ length: s }, () => rng.normal());
    const mask = Uint8Array.from({ length: n }, (_, k) => (k % l < l - (k % 3) ? 1 : 0));
    const out = await gk.grpoLoss({ logp, oldLogp, refLogp, entropy, advantages, completionMask: mask }, options);
    const offsets = Array.from({ length: s + 1 }, (_, k) => k * l);
    const f = (x: Float64Array) =>
      refGrpoLoss({ logp: x, oldLogp, refLogp, entropy, advantages, seqOffsets: offsets, mask }, { ...out.options, maxCompletionLength: l }).loss;
    const fd = centralDiff(f, Float64Array.from(logp), 1e-6);
    const g = out.gradLogp.data as Float32Array;
    let num = 0;
    let den = 0;
    for (let k = 0; k < n; k++) {
      num += (g[k]! - fd[k]!) ** 2;
      den += fd[k]! ** 2;
    }
    t.ok(Math.sqrt(num / Math.max(den, 1e-30)) < 1e-5, `${JSON.stringify(options)}: native dlogp vs FD ${Math.sqrt(num / den).toExponential(2)}`);
  }
});

t.test('presets resolve as TRL loss_type', async (t) => {
  t.match(gk.resolveLossOptions({}), { surrogate: 'clip', aggregation: 'seqMeanTokenMean', epsilonLow: 0.2, epsilonHigh: 0.2, beta: 0, klEstimator: 'k3' });
  t.match(gk.resolveLossOptions({ lossType: 'bnpo' }), { aggregation: 'tokenMean' });
  t.match(gk.resolveLossOptions({ lossType: 'dr_grpo' }), { aggregation: 'constant' });
  t.match(gk.resolveLossOptions({ lossType: 'dapo' }), { aggregation: 'tokenMean', epsilonHigh: 0.28, epsilonLow: 0.2 });
  t.match(gk.resolveLossOptions({ lossType: 'gspo' }), { importanceSamplingLevel: 'sequence', aggregation: 'seqMeanTokenMean' });
  t.match(gk.resolveLossOptions({ lossType: 'cispo' }), { surrogate: 'cispo', aggregation: 'tokenMean', epsilonHigh: 5 });
  t.match(gk.resolveLossOptions({ lossType: 'dapo', epsilonHigh: 0.3 }), { epsilonHigh: 0.3 }, 'explicit options win over the preset');
  t.match(gk.resolveLossOptions({ epsilon: 0.1 }), { epsilonLow: 0.1, epsilonHigh: 0.1 }, 'epsilon sets both');
  t.match(gk.resolveLossOptions({ lossType: 'dapo', epsilon: 0.3 }), { epsilonLow: 0.3, epsilonHigh: 0.3 }, 'an explicit epsilon beats the preset');
  t.match(gk.resolveLossOptions({ surrogate: 'cispo' }), { epsilonHigh: 5 }, 'cispo caps ρ at 5 by default, whatever the preset');
});

t.test('deterministic: the same inputs give bit-identical results', async (t) => {
  const rng = new Rng(seed + 5);
  const n = 4096;
  const logp = Float32Array.from({ length: n }, () => -Math.abs(rng.normal()));
  const oldLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.2);
  const advantages = Float32Array.from({ length: 64 }, () => rng.normal());
  const a = await gk.grpoLoss({ logp, oldLogp, advantages }, { lossType: 'dapo' });
  const b = await gk.grpoLoss({ logp, oldLogp, advantages }, { lossType: 'dapo' });
  t.equal(a.loss, b.loss);
  t.same(a.metrics, b.metrics);
  t.same(Array.from(a.gradLogp.data as Float32Array), Array.from(b.gradLogp.data as Float32Array));
});

t.test('clip, on-policy: the ratio is 1 and the gradient is -A·w', async (t) => {
  const out = await gk.grpoLoss({ logp: [-1, -2, -3, -4], advantages: [2, -1] }, {});
  t.equal(out.metrics.ratioMean, 1);
  t.same(Array.from(out.gradLogp.data as Float32Array), [-0.5, -0.5, 0.25, 0.25], 'w = 1/(S·|o|) = 1/4');
  t.equal(out.metrics.tokens, 4);
  t.equal(out.metrics.klMean, undefined, 'no klMean without refLogp');
});

t.test('k3 keeps its precision for tiny log-ratio differences', async (t) => {
  const logp = Float32Array.from([-1e-3, -2e-3, -5e-4, -1e-3]);
  const refLogp = Float32Array.from(logp, (x) => x * (1 + 3e-3));
  const out = await gk.grpoLoss({ logp, refLogp, advantages: [0.5, -0.5] }, { beta: 0.1 });
  const ref = refGrpoLoss({ logp, refLogp, advantages: [0.5, -0.5], seqOffsets: [0, 2, 4] }, { ...out.options, maxCompletionLength: 2 });
  t.ok(ref.metrics.klMean! > 0);
  t.ok(Math.abs(out.metrics.klMean! - ref.metrics.klMean!) <= 1e-5 * ref.metrics.klMean!, `klMean ${out.metrics.klMean} vs ${ref.metrics.klMean}`);
});

t.test('NaN entropies do not move the topEntropyQuantile threshold', async (t) => {
  const logp = Float32Array.from({ length: 10 }, (_, i) => -0.1 * (i + 1));
  const base = Float32Array.from({ length: 10 }, (_, i) => 0.1 * (i + 1));
  for (const at of [0, 3, 9]) {
    const entropy = base.slice();
    entropy[at] = NaN;
    // The 9 finite entropies have median order statistic #4 as threshold: 5 tokens keep the
    // policy term (J = A·ρ = 1 on-policy), so loss = -5/10 wherever the NaN sits.
    const out = await gk.grpoLoss({ logp, entropy, advantages: [1] }, { topEntropyQuantile: 0.5 });
    t.ok(Math.abs(out.loss + 0.5) < 1e-7, `NaN at ${at}: loss ${out.loss}`);
  }
});

t.test('bad inputs', async (t) => {
  const base = { logp: [-1, -2, -3, -4], advantages: [1, -1] };
  await rejectsCode(t, () => gk.grpoLoss({ ...base, advantages: [1, 2, 3] }), 'GK_SHAPE', /do not split into 3 sequences/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, oldLogp: [1, 2] }), 'GK_SHAPE', /oldLogp must have 4 elements, got 2/);
  await rejectsCode(t, () => gk.grpoLoss(base, { beta: 0.1 }), 'GK_INVALID_ARG', /refLogp is required when beta > 0/);
  await rejectsCode(t, () => gk.grpoLoss(base, { entropyCoef: 0.1 }), 'GK_INVALID_ARG', /entropy is required/);
  await rejectsCode(t, () => gk.grpoLoss(base, { topEntropyQuantile: 0 }), 'GK_INVALID_ARG', /topEntropyQuantile must be > 0/);
  await rejectsCode(t, () => gk.grpoLoss(base, { topEntropyQuantile: 1.5 }), 'GK_INVALID_ARG', /topEntropyQuantile must be <= 1/);
  await rejectsCode(t, () => gk.grpoLoss(base, { lossType: 'ppo' as never }), 'GK_INVALID_ARG', /lossType must be one of 'grpo'/);
  await rejectsCode(t, () => gk.grpoLoss(base, { surrogate: 'x' as never }), 'GK_INVALID_ARG', /surrogate/);
  await rejectsCode(t, () => gk.grpoLoss(base, { importanceSamplingLevel: 'seq' as never }), 'GK_INVALID_ARG', /importanceSamplingLevel/);
  await rejectsCode(t, () => gk.grpoLoss(base, { klEstimator: 'k4' as never }), 'GK_INVALID_ARG', /klEstimator/);
  await rejectsCode(t, () => gk.grpoLoss(base, { aggregation: 'mean' as never }), 'GK_INVALID_ARG', /aggregation/);
  await rejectsCode(t, () => gk.grpoLoss(base, { epsilonLow: -0.1 }), 'GK_INVALID_ARG', /epsilonLow must be >= 0/);
  await rejectsCode(t, () => gk.grpoLoss(base, { delta: 1.1 }), 'GK_INVALID_ARG', /delta must be > 1 \+ epsilonHigh/);
  await rejectsCode(t, () => gk.grpoLoss(base, { normalizer: 0 }), 'GK_INVALID_ARG', /normalizer must be > 0/);
  await rejectsCode(t, () => gk.grpoLoss(base, { maxCompletionLength: 2.5 }), 'GK_INVALID_ARG', /maxCompletionLength must be an integer/);
  await rejectsCode(t, () => gk.grpoLoss(base, { maskTruncatedCompletions: true }), 'GK_INVALID_ARG', /truncated/);
  await rejectsCode(t, () => gk.grpoLoss(base, { beta: NaN }), 'GK_INVALID_ARG', /beta must be a finite number/);
  await rejectsCode(t, () => gk.grpoLoss(base, { betta: 1 } as never), 'GK_INVALID_ARG', /unknown option 'betta'/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, seqOffsets: [0, 3] }), 'GK_SHAPE', /seqOffsets must have S\+1 = 3 entries/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, seqOffsets: [0, 3, 2] }), 'GK_SHAPE', /non-decreasing/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, seqOffsets: [0, 1, 3] }), 'GK_SHAPE', /end at N = 4/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, completionMask: [1, 0, 2, 1] }), 'GK_INVALID_ARG', /completionMask\[2\] must be 0, 1/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, advantages: [NaN, 1] }), 'GK_NONFINITE', /advantages\[0\] must be finite/);
  await rejectsCode(t, () => gk.grpoLoss({ logp: [-1] } as never), 'GK_INVALID_ARG', /advantages .* is required/);
  await rejectsCode(t, () => gk.grpoLoss({ advantages: [1] } as never), 'GK_INVALID_ARG', /logp .* is required/);
  await rejectsCode(t, () => gk.grpoLoss(null as never), 'GK_INVALID_ARG', /inputs must be an object/);
});
