import t from 'tap';
import * as gk from '../lib/index';
import { fusedCases, makeLogits, makeTargets, runFusedCase } from './reference/cases';
import { centralDiff } from './reference/fd';
import { refGrpoLossFromLogits } from './reference/fused';
import { refTokenLogProbs } from './reference/logprobs';
import { Rng } from './reference/random';
import { assertCase, rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'fused');

t.test('fused loss from logits matches the float64 reference (dtypes x shapes x options)', async (t) => {
  let i = 0;
  for (const c of fusedCases(true)) assertCase(t, await runFusedCase(seed + i++, c), seed);
});

t.test('∂loss/∂logits agrees with central finite differences of the reference loss', async (t) => {
  const rng = new Rng(seed + 1);
  const s = 2;
  const l = 3;
  const n = s * l;
  const v = 7;
  const combos: gk.GrpoLossFromLogitsOptions[] = [
    { beta: 0.1 },
    { surrogate: 'sapo', entropyCoef: 0.05, temperature: 0.7 },
    { lossType: 'gspo', beta: 0.05, klEstimator: 'k2' },
    { lossType: 'dapo', topEntropyQuantile: 0.5, entropyCoef: -0.02 },
  ];
  for (const options of combos) {
    const { tensor, values } = makeLogits(rng, { n, v, dtype: 'float32', masked: 0.1 });
    const targets = makeTargets(rng, values, n, v, [4]);
    const T = options.temperature ?? 1;
    const base = refTokenLogProbs(values, n, v, targets, { temperature: T });
    const oldLogp = Float32Array.from(base.logp, (x) => x + rng.normal() * 0.3);
    const refLogp = Float32Array.from(base.logp, (x) => x + rng.normal() * 0.3);
    const advantages = Float32Array.from({ length: s }, () => rng.normal());
    const out = await gk.grpoLoss({ logits: tensor, targets, oldLogp, refLogp, advantages }, options);
    const offsets = [0, l, 2 * l];
    const f = (z: Float64Array) =>
      refGrpoLossFromLogits(z, n, v, targets, { advantages, seqOffsets: offsets, oldLogp, refLogp }, {
        ...out.options, maxCompletionLength: l, temperature: T, ignoreIndex: -100,
      }).loss;
    const fd = centralDiff(f, values, 1e-6);
    const g = out.gradLogits.data as Float32Array;
    let num = 0;
    let den = 0;
    for (let k = 0; k < n * v; k++) {
      if (!Number.isFinite(values[k]!)) continue;
      num += (g[k]! - fd[k]!) ** 2;
      den += fd[k]! ** 2;
    }
    t.ok(Math.sqrt(num / den) < 1e-5, `${JSON.stringify(options)}: native ∂L/∂z vs FD ${Math.sqrt(num / den).toExponential(2)}`);
  }
});

t.test('in place: the gradient overwrites the logits and equals the out-of-place one', async (t) => {
  const rng = new Rng(seed + 2);
  for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
    const { tensor, values } = makeLogits(rng, { n: 8, v: 300, dtype });
    const copy = gk.Tensor.from((tensor.data as Float32Array | Uint16Array).slice(), { dtype, shape: tensor.shape });
    const targets = makeTargets(rng, values, 8, 300, [1]);
    const inputs = { targets, advantages: [0.5, -1], oldLogp: Float32Array.from({ length: 8 }, () => -5) };
    const a = await gk.grpoLoss({ ...inputs, logits: copy });
    const b = await gk.grpoLoss({ ...inputs, logits: tensor }, { inPlace: true });
    t.equal(b.gradLogits, tensor, `${dtype}: returns the logits tensor`);
    t.same(Array.from(b.gradLogits.data as Float32Array | Uint16Array), Array.from(a.gradLogits.data as Float32Array | Uint16Array), `${dtype}: identical to out of place`);
    t.equal(a.loss, b.loss);
  }
});

t.test('padded [S, L, V] logits, masks and ignored rows leave the loss', async (t) => {
  const rng = new Rng(seed + 4);
  const { values } = makeLogits(rng, { n: 6, v: 5, dtype: 'float32' });
  const logits = gk.Tensor.from(Float32Array.from(values), { shape: [2, 3, 5] });
  const out = await gk.grpoLoss({
    logits, targets: [1, 2, -100, 0, 4, 3], advantages: [1, -1], completionMask: [1, 1, 1, 1, 0, 0],
  });
  t.equal(out.metrics.tokens, 3, 'masked and ignored rows do not count');
  t.same(out.logp.shape, [2, 3]);
  const g = out.gradLogits.data as Float32Array;
  t.same(Array.from(g.subarray(2 * 5, 3 * 5)), [0, 0, 0, 0, 0], 'ignored row: zero gradient');
  t.same(Array.from(g.subarray(4 * 5, 6 * 5)), new Array(10).fill(0), 'masked rows: zero gradient');
});

t.test('bad inputs', async (t) => {
  const logits = gk.Tensor.from(new Float32Array(12).fill(0.5), { shape: [4, 3] });
  const base = { logits, targets: [0, 1, 2, 0], advantages: [1, -1] };
  await rejectsCode(t, () => gk.grpoLoss({ ...base, targets: [0, 1, 3, 0] }), 'GK_TARGET_RANGE', /targets\[2\] = 3 is outside \[0, 3\)/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, targets: [0, 1] }), 'GK_SHAPE', /targets must have 4 elements/);
  await rejectsCode(t, () => gk.grpoLoss(base, { temperature: -1 }), 'GK_INVALID_ARG', /temperature must be > 0, got -1/);
  await rejectsCode(t, () => gk.grpoLoss(base, { inPlace: 'yes' as never }), 'GK_INVALID_ARG', /inPlace must be a boolean/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, logits: new Float32Array(12) as never }), 'GK_INVALID_ARG', /logits must be a Tensor/);
  await rejectsCode(t, () => gk.grpoLoss({ ...base, logp: [1] } as never), 'GK_INVALID_ARG', /unknown input 'logp'/);
  const nan = gk.Tensor.from(Float32Array.from([0, 1, 2, 0, NaN, 1, 0, 0, 0, 1, 1, 1]), { shape: [4, 3] });
  await rejectsCode(t, () => gk.grpoLoss({ ...base, logits: nan }, { checkFinite: true }), 'GK_NONFINITE', /row 1/);
});

t.test('§9.7: returnValidEntropies from logits: the entropies of the rows in the loss', async (t) => {
  const logits = gk.Tensor.from(Float32Array.from({ length: 6 * 7 }, (_, i) => Math.sin(i * 1.7) * 3), { shape: [2, 3, 7] });
  const r = await gk.grpoLoss({ logits, targets: [1, -100, 3, 4, 5, 6], advantages: [1, -1], completionMask: [1, 1, 1, 0, 1, 1] },
    { returnValidEntropies: true, topEntropyQuantile: 0.5 });
  const h = r.entropy.data as Float32Array;
  t.same(Array.from(r.validEntropies!), [h[0]!, h[2]!, h[4]!, h[5]!], 'ignored and masked rows left out, row order');
  t.equal(r.validEntropies!.length, r.metrics.tokens);
});

t.test('sumP2 from the fused step is the forward pass\'s, bit for bit (spec §9.6)', async (t) => {
  const rng = new Rng(4242);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const n = 12, v = 997;
    const z = Float32Array.from({ length: n * v }, () => rng.normal() * 2);
    const x = gk.Tensor.from(dtype === 'float32' ? z : gk.toBFloat16(z), { dtype, shape: [n, v] });
    const y = Int32Array.from({ length: n }, (_, i) => (i === 3 ? -100 : Math.floor(rng.next() * v)));
    const inputs = { logits: x, targets: y, advantages: Float32Array.from({ length: n }, () => rng.normal()) };
    const r = await gk.grpoLoss({ ...inputs }, { sumP2: true, temperature: 0.9 });
    const f = await gk.tokenLogProbs(x, y, { sumP2: true, temperature: 0.9 });
    t.same(Array.from(r.sumP2!.data), Array.from(f.sumP2!.data), `${dtype}: fused sumP2 === tokenLogProbs sumP2`);
    t.ok(Array.from(r.sumP2!.data).every((s, i) => (i === 3 ? s === 0 : s > 0 && s <= 1)), `${dtype}: in (0, 1], 0 for the ignored row`);
    t.equal((await gk.grpoLoss({ ...inputs })).sumP2, undefined, 'not computed unless asked');
  }
  await rejectsCode(t, () => gk.grpoLoss({ logits: gk.Tensor.zeros([2, 3]), targets: [0, 1], advantages: [1] }, { sumP2: 'yes' as unknown as boolean }), 'GK_INVALID_ARG');
});
