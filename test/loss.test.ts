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

// ---------------------------------------------------------------- spec §9.1-9.3

t.test('§9.1-9.3: gradient agrees with central finite differences of the reference loss', async (t) => {
  const rng = new Rng(seed + 91);
  const s = 4;
  const l = 6;
  const n = s * l;
  const offsets = Array.from({ length: s + 1 }, (_, k) => k * l);
  const combos: { options: gk.GrpoLossOptions; perToken?: boolean; sampler?: boolean }[] = [
    { options: {}, perToken: true },
    { options: { importanceSamplingLevel: 'sequence', beta: 0.05 }, perToken: true },
    { options: { beta: 0.2, biasCorrectedKl: true } },
    { options: { beta: 0.2, biasCorrectedKl: true, klEstimator: 'k1', importanceSamplingLevel: 'sequence' } },
    { options: { beta: 0.2, biasCorrectedKl: true, klEstimator: 'k2', surrogate: 'sapo', aggregation: 'seqMeanTokenSum' } },
    { options: { offPolicyMaskThreshold: 0.01 }, sampler: true, perToken: true },
    { options: { rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 1.5 }, beta: 0.1, biasCorrectedKl: true }, sampler: true },
    { options: { rolloutCorrection: { level: 'sequence', mode: 'mask', clipMin: 0.3, clipMax: 2 }, lossType: 'gspo' }, sampler: true },
    { options: { rolloutCorrection: { level: 'sequenceMean', mode: 'truncate', batchNormalize: true }, rolloutRejection: [{ statistic: 'token_k2', threshold: 0.05 }], lossType: 'dapo' }, sampler: true },
    { options: { rolloutRejection: [{ statistic: 'seqMean_k3', threshold: 0.05 }, { statistic: 'token_k1', threshold: [0.7, 1.6] }], entropyCoef: 0.01, topEntropyQuantile: 0.7 }, sampler: true, perToken: true },
    { options: { entropyForm: 'tokenMean', entropyCoef: 0.05, topEntropyQuantile: 0.5, beta: 0.1 } },
  ];
  const mask = Uint8Array.from({ length: n }, (_, k) => (k % l < l - (k % 3) ? 1 : 0));
  // Fresh inputs. With rejection, a draw can reject every one of the 4 sequences (no token left:
  // nothing to differentiate); such a draw is replaced by the next one.
  const draw = async (options: gk.GrpoLossOptions, perToken?: boolean, sampler?: boolean) => {
    for (;;) {
      const logp = Float32Array.from({ length: n }, () => -Math.abs(rng.normal()) - 0.05);
      const oldLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.25);
      const refLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.4);
      const samplerLogp = sampler ? Float32Array.from(oldLogp, (x) => x + rng.normal() * 0.3) : undefined;
      const entropy = Float32Array.from(logp, () => rng.next() * 2);
      const advantages = Float32Array.from({ length: perToken ? n : s }, (_, k) => (perToken && !mask[k] ? NaN : rng.normal()));
      const out = await gk.grpoLoss(
        { logp, oldLogp, refLogp, entropy, advantages, completionMask: mask, seqOffsets: offsets, ...(samplerLogp ? { samplerLogp } : {}) }, options);
      if (out.metrics.tokens > 0) return { logp, oldLogp, refLogp, samplerLogp, entropy, advantages, out };
    }
  };
  for (const { options, perToken, sampler } of combos) {
    const { logp, oldLogp, refLogp, samplerLogp, entropy, advantages, out } = await draw(options, perToken, sampler);
    const f = (x: Float64Array) =>
      refGrpoLoss({ logp: x, oldLogp, refLogp, entropy, advantages, samplerLogp, seqOffsets: offsets, mask }, { ...out.options, maxCompletionLength: l }).loss;
    const fd = centralDiff(f, Float64Array.from(logp), 1e-6);
    const g = out.gradLogp.data as Float32Array;
    let num = 0;
    let den = 0;
    for (let k = 0; k < n; k++) {
      num += (g[k]! - fd[k]!) ** 2;
      den += fd[k]! ** 2;
    }
    t.ok(den > 0, 'a gradient flows');
    t.ok(Math.sqrt(num / Math.max(den, 1e-30)) < 1e-5, `${JSON.stringify(options)}: native dlogp vs FD ${Math.sqrt(num / den).toExponential(2)}`);
    if (out.gradEntropy) {
      const fe = (x: Float64Array) =>
        refGrpoLoss({ logp, oldLogp, refLogp, entropy: x, advantages, samplerLogp, seqOffsets: offsets, mask }, { ...out.options, maxCompletionLength: l }).loss;
      const fdh = centralDiff(fe, Float64Array.from(entropy), 1e-6);
      const gh = out.gradEntropy.data as Float32Array;
      let nh = 0;
      let dh = 0;
      for (let k = 0; k < n; k++) {
        nh += (gh[k]! - fdh[k]!) ** 2;
        dh += fdh[k]! ** 2;
      }
      t.ok(dh > 0 && Math.sqrt(nh / dh) < 1e-5, `${JSON.stringify(options)}: native dentropy vs FD ${Math.sqrt(nh / dh).toExponential(2)}`);
    }
  }
});

t.test('§9.3: per-token advantages constant within each sequence give the per-sequence result', async (t) => {
  const rng = new Rng(seed + 93);
  const s = 5;
  const l = 7;
  const n = s * l;
  const logp = Float32Array.from({ length: n }, () => -Math.abs(rng.normal()) - 0.05);
  const oldLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.3);
  const adv = Float32Array.from({ length: s }, () => rng.normal());
  const perTok = Float32Array.from({ length: n }, (_, k) => adv[Math.floor(k / l)]!);
  const seqOffsets = Array.from({ length: s + 1 }, (_, k) => k * l);
  for (const options of [{}, { lossType: 'gspo' as const }, { surrogate: 'sapo' as const, offPolicyMaskThreshold: 0 }]) {
    const a = await gk.grpoLoss({ logp, oldLogp, advantages: adv, seqOffsets }, options);
    const b = await gk.grpoLoss({ logp, oldLogp, advantages: perTok, seqOffsets }, options);
    t.equal(b.loss, a.loss, `${JSON.stringify(options)}: same loss`);
    t.same(Array.from(b.gradLogp.data as Float32Array), Array.from(a.gradLogp.data as Float32Array), 'same gradient, every element');
  }
  // S = N is read per sequence unless advantagesPerToken: sequences of one token each give the same numbers either way.
  const one = await gk.grpoLoss({ logp: logp.subarray(0, 3), advantages: adv.subarray(0, 3), seqOffsets: [0, 1, 2, 3] }, { advantagesPerToken: true });
  const seqw = await gk.grpoLoss({ logp: logp.subarray(0, 3), advantages: adv.subarray(0, 3), seqOffsets: [0, 1, 2, 3] });
  t.equal(one.loss, seqw.loss, 'S = N: both readings agree when every sequence has one token');
  // The ambiguous case that differs: S = N = 2 with rows [2, 1]... advantagesPerToken on [S, L] rows.
  const lp2 = gk.Tensor.from(Float32Array.from([-1, -2, -0.5, -0.7]), { shape: [2, 2] });
  const r1 = await gk.grpoLoss({ logp: lp2, advantages: [1, -1, 0.5, 2] });
  const r2 = await gk.grpoLoss({ logp: lp2, advantages: [1, 1, -1, -1] }, { advantagesPerToken: true });
  const r3 = await gk.grpoLoss({ logp: lp2, advantages: [1, -1] });
  t.not(r1.loss, r3.loss, 'N advantages on [S, L] rows are per token');
  t.equal(r2.loss, r3.loss, 'per-token advantages equal within sequences reproduce the per-sequence loss');
});

t.test('§9.1-9.3: bad options and inputs fail with stable codes', async (t) => {
  const base = { logp: [-1, -2, -3, -4], advantages: [1, -1] };
  const q = [-1.1, -2.2, -2.9, -4.1];
  await rejectsCode(t, () => gk.grpoLoss(base, { rolloutCorrection: { level: 'token' } }), 'GK_INVALID_ARG', /samplerLogp .* is required with rolloutCorrection/);
  await rejectsCode(t, () => gk.grpoLoss(base, { rolloutRejection: [{ statistic: 'token_k3', threshold: 1 }] }), 'GK_INVALID_ARG', /samplerLogp .* is required with rolloutRejection/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutCorrection: { level: 'seq' as never } }), 'GK_INVALID_ARG', /rolloutCorrection.level/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutCorrection: { mode: 'clip' as never } }), 'GK_INVALID_ARG', /rolloutCorrection.mode/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutCorrection: { clipMin: 2, clipMax: 1 } }), 'GK_INVALID_ARG', /clipMin \(2\) must be <= clipMax/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutCorrection: { clipMax: -1 } }), 'GK_INVALID_ARG', /clipMax must be > 0/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutCorrection: { cap: 2 } as never }), 'GK_INVALID_ARG', /unknown options.rolloutCorrection key 'cap'/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutCorrection: true as never }), 'GK_INVALID_ARG', /rolloutCorrection must be an object or false/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutRejection: { statistic: 'token_k3', threshold: 1 } as never }), 'GK_INVALID_ARG', /rolloutRejection must be an array/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutRejection: [{ statistic: 'seqMax_k1' as never, threshold: 2 }] }), 'GK_INVALID_ARG', /statistic must be one of/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutRejection: [{ statistic: 'token_k2', threshold: 0 }] }), 'GK_INVALID_ARG', /threshold must be > 0/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutRejection: [{ statistic: 'token_k2', threshold: [1, 2] }] }), 'GK_INVALID_ARG', /one upper bound/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutRejection: [{ statistic: 'token_k1', threshold: 0.5 }] }), 'GK_INVALID_ARG', /threshold must be >= 1/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutRejection: [{ statistic: 'token_k1', threshold: [2, 1] }] }), 'GK_INVALID_ARG', /lower <= upper/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: q }, { rolloutRejection: Array(9).fill({ statistic: 'token_k3', threshold: 1 }) }), 'GK_INVALID_ARG', /at most 8/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, samplerLogp: [1, 2] }), 'GK_SHAPE', /samplerLogp must have 4 elements/);
  await rejectsCode(t, () => gk.grpoLoss(base, { offPolicyMaskThreshold: -1 }), 'GK_INVALID_ARG', /offPolicyMaskThreshold must be >= 0/);
  await rejectsCode(t, () => gk.grpoLoss(base, { offPolicyMaskThreshold: NaN }), 'GK_INVALID_ARG', /offPolicyMaskThreshold/);
  await rejectsCode(t, () => gk.grpoLoss(base, { biasCorrectedKl: 1 as never }), 'GK_INVALID_ARG', /biasCorrectedKl/);
  await rejectsCode(t, () => gk.grpoLoss(base, { advantagesPerToken: true }), 'GK_SHAPE', /per-token advantages .* need seqOffsets/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, seqOffsets: [0, 2, 4] }, { advantagesPerToken: true }), 'GK_SHAPE', /one entry per token row \(4\), got 2/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, seqOffsets: [0, 2, 4], advantages: [1, NaN, 1, 1] }), 'GK_NONFINITE', /advantages\[1\] must be finite/);
  const ok = await gk.grpoLoss({ ...base, seqOffsets: [0, 2, 4], advantages: [1, NaN, 1, 1], completionMask: [1, 0, 1, 1] });
  t.ok(Number.isFinite(ok.loss), 'a masked row may carry a NaN per-token advantage');
});

t.test('§9.1: rollout correction brings the gradient closer to the on-policy one', async (t) => {
  // One categorical policy π = softmax(z) over V tokens, the current and the old policy at once
  // (ρ = 1). Tokens are sampled from a perturbed engine μ = softmax(z + ε) and their per-token
  // advantage is a fixed reward r(y). The on-policy gradient of the loss is
  // -Σ_y π(y) r(y) (e_y - π) (tokenMean aggregation); without correction the sample mean
  // estimates the same expression under μ instead of π.
  // A fixed seed: the figures this test prints are reproducible (and quoted in the change's notes).
  const rng = new Rng(20261205);
  const V = 12;
  const N = 20000;
  const z = Float64Array.from({ length: V }, () => rng.normal());
  const zs = Float64Array.from(z, (x) => x + 0.8 * rng.normal());
  const soft = (u: Float64Array) => {
    const m = Math.max(...u);
    const e = u.map((x) => Math.exp(x - m));
    const sum = e.reduce((a, b) => a + b, 0);
    return e.map((x) => x / sum);
  };
  const pi = soft(z);
  const mu = soft(zs);
  const reward = Float64Array.from({ length: V }, () => rng.normal());
  const truth = new Float64Array(V);
  for (let y = 0; y < V; y++) for (let j = 0; j < V; j++) truth[j]! -= pi[y]! * reward[y]! * ((j === y ? 1 : 0) - pi[j]!);
  const targets = new Int32Array(N);
  const samplerLogp = new Float32Array(N);
  const advantages = new Float32Array(N);
  for (let k = 0; k < N; k++) {
    let u = rng.next();
    let y = 0;
    while (y < V - 1 && u >= mu[y]!) u -= mu[y++]!;
    targets[k] = y;
    samplerLogp[k] = Math.log(mu[y]!);
    advantages[k] = reward[y]!;
  }
  const logits = gk.Tensor.from(Float32Array.from({ length: N * V }, (_, i) => z[i % V]!), { shape: [N, V] });
  const seqOffsets = Array.from({ length: N + 1 }, (_, k) => k); // one token per sequence
  const gradOf = async (options: gk.GrpoLossOptions, withSampler: boolean) => {
    const r = await gk.grpoLoss({ logits, targets, advantages, seqOffsets, ...(withSampler ? { samplerLogp } : {}) }, { ...options, aggregation: 'tokenMean', advantagesPerToken: true });
    const g = r.gradLogits.toFloat32();
    const sum = new Float64Array(V);
    for (let k = 0; k < N; k++) for (let j = 0; j < V; j++) sum[j]! += g[k * V + j]!;
    return { g: sum, m: r.metrics };
  };
  const dist = (g: Float64Array) => Math.sqrt(g.reduce((a, x, j) => a + (x - truth[j]!) ** 2, 0) / truth.reduce((a, x) => a + x * x, 0));
  const plain = await gradOf({}, false);
  const tis = await gradOf({ rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 1000 } }, true);
  const tis2 = await gradOf({ rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 2 } }, true);
  const seqMask = await gradOf({}, true); // TRL's default: sequence mask at 3 (one-token sequences here)
  const e0 = dist(plain.g);
  const e1 = dist(tis.g);
  const e2 = dist(tis2.g);
  const e3 = dist(seqMask.g);
  t.comment(`relative distance to the on-policy gradient (N = ${N}, V = ${V}, sampler KL k3 = ${tis.m.samplerKl!.toFixed(3)}): ` +
    `uncorrected ${e0.toFixed(4)}, token IS ${e1.toFixed(4)}, token TIS cap 2 ${e2.toFixed(4)}, sequence mask [0, 3] ${e3.toFixed(4)}`);
  t.ok(e1 < e0 / 2, `token IS weights: ${e1.toFixed(4)} < half of uncorrected ${e0.toFixed(4)}`);
  t.ok(e2 < e0, `truncated at 2: ${e2.toFixed(4)} < ${e0.toFixed(4)}`);
  t.ok(e3 < e0, `masked outside [0, 3]: ${e3.toFixed(4)} < ${e0.toFixed(4)}`);
  t.ok(tis.m.isWeightMax! > 1, 'the weights vary');
  t.equal(tis2.m.isTruncatedFraction! > 0, tis.m.isWeightMax! > 2, 'the cap at 2 binds exactly when some weight exceeds 2');
});

t.test('§9.1: the package sampler has no mismatch: samplerLogp from sampleTokens = tokenLogProbs, weights 1', async (t) => {
  const rng = new Rng(seed + 95);
  const n = 24;
  const v = 50;
  const logits = gk.Tensor.from(Float32Array.from({ length: n * v }, () => rng.normal() * 2), { shape: [n, v] });
  const s = await gk.sampleTokens(logits, { seed: 7 });
  const lp = await gk.tokenLogProbs(logits, s.tokens);
  // oldLogp: the log-probs stored with the rollout (tokenLogProbs' at sampling time).
  const r = await gk.grpoLoss({ logits, targets: s.tokens, advantages: Float32Array.from({ length: 4 }, () => rng.normal()), samplerLogp: s.logp, oldLogp: lp.logp, seqOffsets: [0, 6, 12, 18, 24] },
    { rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 2 } });
  t.same(Array.from(s.logp.data as Float32Array), Array.from(lp.logp.data as Float32Array), 'bit-identical log-probs');
  t.equal(r.metrics.isWeightMean, 1, 'every weight is 1');
  t.equal(r.metrics.samplerKl, 0, 'KL(sampler ‖ old) is 0');
});

t.test('§9.7: two data-parallel workers with the global entropy threshold and token normalizer reproduce the one-worker step', async (t) => {
  const rng = new Rng(seed + 97);
  const s = 8;
  const l = 9;
  const n = s * l;
  const logp = Float32Array.from({ length: n }, () => -Math.abs(rng.normal()) - 0.05);
  const oldLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.3);
  const samplerLogp = Float32Array.from(oldLogp, (x) => x + rng.normal() * 0.2);
  const entropy = Float32Array.from({ length: n }, () => rng.next() * 3);
  const advantages = Float32Array.from({ length: s }, () => rng.normal());
  const mask = Uint8Array.from({ length: n }, () => (rng.next() < 0.85 ? 1 : 0));
  const offsets = Array.from({ length: s + 1 }, (_, k) => k * l);
  const q = 0.4;
  const common: gk.GrpoLossOptions = {
    topEntropyQuantile: q, aggregation: 'tokenMean', entropyCoef: 0.02, entropyForm: 'tokenMean',
    rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 2 }, rolloutRejection: [{ statistic: 'token_k3', threshold: 0.05 }],
  };
  const one = await gk.grpoLoss({ logp, oldLogp, samplerLogp, entropy, advantages, completionMask: mask, seqOffsets: offsets }, { ...common, returnValidEntropies: true });
  // Two workers, half the sequences each: each returns its valid entropies and token count.
  const half = (s / 2) * l;
  const part = (k: number) => ({
    logp: logp.subarray(k * half, (k + 1) * half), oldLogp: oldLogp.subarray(k * half, (k + 1) * half), samplerLogp: samplerLogp.subarray(k * half, (k + 1) * half),
    entropy: entropy.subarray(k * half, (k + 1) * half), advantages: advantages.subarray((k * s) / 2, ((k + 1) * s) / 2),
    completionMask: mask.subarray(k * half, (k + 1) * half), seqOffsets: offsets.slice(0, s / 2 + 1),
  });
  const first = await Promise.all([0, 1].map((k) => gk.grpoLoss(part(k), { ...common, returnValidEntropies: true })));
  const all = Float32Array.from([...first[0]!.validEntropies!, ...first[1]!.validEntropies!]);
  t.same(Array.from(all), Array.from(one.validEntropies!), 'the workers\' valid entropies together are the batch\'s');
  const threshold = gk.entropyQuantile(all, q);
  const tokens = first[0]!.metrics.tokens + first[1]!.metrics.tokens; // the all-reduced token count
  t.equal(tokens, one.metrics.tokens);
  const second = await Promise.all([0, 1].map((k) => gk.grpoLoss(part(k), { ...common, entropyThreshold: threshold, normalizer: tokens })));
  const oneN = await gk.grpoLoss({ logp, oldLogp, samplerLogp, entropy, advantages, completionMask: mask, seqOffsets: offsets }, { ...common, normalizer: tokens });
  t.ok(Math.abs(second[0]!.loss + second[1]!.loss - oneN.loss) <= 1e-12 * Math.max(1, Math.abs(oneN.loss)), `loss ${second[0]!.loss + second[1]!.loss} = ${oneN.loss}`);
  const g = [...(second[0]!.gradLogp.data as Float32Array), ...(second[1]!.gradLogp.data as Float32Array)];
  t.same(g, Array.from(oneN.gradLogp.data as Float32Array), 'gradient bit-identical, every element');
  const ge = [...(second[0]!.gradEntropy!.data as Float32Array), ...(second[1]!.gradEntropy!.data as Float32Array)];
  t.same(ge, Array.from(oneN.gradEntropy!.data as Float32Array), 'entropy gradient bit-identical');
  // The local thresholds differ from the global one (the reason to pass it).
  const local = await gk.grpoLoss(part(0), { ...common, normalizer: tokens });
  t.comment(`global threshold ${threshold.toFixed(4)}; worker 0 alone would give a loss of ${local.loss.toFixed(6)} instead of ${second[0]!.loss.toFixed(6)}`);
  await rejectsCode(t, () => gk.grpoLoss({ logp, advantages, seqOffsets: offsets, entropy }, { entropyThreshold: 1 }), 'GK_INVALID_ARG', /entropyThreshold replaces the quantile/);
  await rejectsCode(t, () => gk.grpoLoss({ logp, advantages, seqOffsets: offsets, entropy }, { entropyThreshold: NaN, topEntropyQuantile: 0.5 }), 'GK_INVALID_ARG', /entropyThreshold/);
  await rejectsCode(t, () => gk.grpoLoss({ logp, advantages, seqOffsets: offsets }, { returnValidEntropies: true }), 'GK_INVALID_ARG', /entropy is required for returnValidEntropies/);
  t.equal(gk.entropyQuantile([NaN], 0.5), Infinity, 'nothing to rank: +Infinity (the backends\' rule)');
  t.equal(gk.entropyQuantile([1, 2, 3, NaN, 4], 0.5), 2.5, 'NaN left out, linear interpolation');
});
