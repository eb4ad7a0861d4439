import t from 'tap';
import * as gk from '../lib/index';
import { backwardCases, logProbCases, makeLogits, makeTargets, runBackwardCase, runLogProbCase } from './reference/cases';
import { centralDiff } from './reference/fd';
import { refTokenLogProbs, refTokenLogProbsBackward } from './reference/logprobs';
import { Rng } from './reference/random';
import { assertCase, errorCode, rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'logprobs');

t.test('forward matches the float64 reference (dtypes x shapes)', async (t) => {
  let i = 0;
  for (const c of logProbCases(true)) assertCase(t, await runLogProbCase(seed + i++, c), seed);
});

t.test('backward matches the float64 reference (dtypes x shapes)', async (t) => {
  let i = 100;
  for (const c of backwardCases(true)) assertCase(t, await runBackwardCase(seed + i++, c), seed);
});

t.test('backward agrees with central finite differences of the reference', async (t) => {
  const rng = new Rng(seed + 7);
  const n = 4;
  const v = 9;
  for (const temperature of [1, 0.6]) {
    const { tensor, values } = makeLogits(rng, { n, v, dtype: 'float32', masked: 0.15 });
    const targets = makeTargets(rng, values, n, v, [2]);
    const gl = Float64Array.from({ length: n }, () => rng.normal());
    const gh = Float64Array.from({ length: n }, () => rng.normal());
    const loss = (z: Float64Array) => {
      const r = refTokenLogProbs(z, n, v, targets, { temperature });
      let s = 0;
      for (let k = 0; k < n; k++) s += gl[k]! * r.logp[k]! + gh[k]! * r.entropy[k]!;
      return s;
    };
    const fd = centralDiff(loss, values, 1e-6);
    const grad = await gk.tokenLogProbsBackward(tensor, targets, { gradLogp: gl, gradEntropy: gh }, { temperature });
    const g = grad.data as Float32Array;
    const analytic = refTokenLogProbsBackward(values, n, v, targets, gl, gh, { temperature });
    let num = 0;
    let den = 0;
    let refNum = 0;
    for (let k = 0; k < n * v; k++) {
      if (!Number.isFinite(values[k]!)) {
        t.equal(g[k], 0, `masked entry ${k} gets gradient 0`);
        continue;
      }
      num += (g[k]! - fd[k]!) ** 2;
      refNum += (analytic[k]! - fd[k]!) ** 2;
      den += fd[k]! ** 2;
    }
    t.ok(Math.sqrt(refNum / den) < 1e-7, `reference gradient vs FD (T=${temperature}): ${Math.sqrt(refNum / den).toExponential(2)}`);
    t.ok(Math.sqrt(num / den) < 1e-5, `native gradient vs FD (T=${temperature}): ${Math.sqrt(num / den).toExponential(2)}`);
  }
});

t.test('row semantics: ignored rows, log-probs never above 0, all -inf and NaN rows', async (t) => {
  const v = 6;
  const f = new Float32Array([
    1, 2, 3, 4, 5, 6,
    0, 0, 0, 0, 0, 0,
    -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity,
    1, NaN, 2, 3, 4, 5,
    50, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity,
  ]);
  const logits = gk.Tensor.from(f, { shape: [5, v] });
  const r = await gk.tokenLogProbs(logits, [-100, 3, 0, 2, 0], { entropy: true });
  const lp = r.logp.data as Float32Array;
  const h = r.entropy!.data as Float32Array;
  t.equal(lp[0], 0, 'ignored row: logp 0');
  t.equal(h[0], 0, 'ignored row: entropy 0');
  t.ok(Math.abs(lp[1]! + Math.log(6)) < 1e-6, 'uniform row: logp = -log V');
  t.ok(Number.isNaN(lp[2]) && Number.isNaN(h[2]), 'all -inf row: NaN');
  t.ok(Number.isNaN(lp[3]) && Number.isNaN(h[3]), 'row with a NaN: NaN');
  t.equal(lp[4], 0, 'single finite logit: logp exactly 0 (never above)');
  t.equal(h[4], 0, 'single finite logit: entropy 0');
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [-100, 3, 0, 2, 0], { checkFinite: true }), 'GK_NONFINITE', /row 2/);
  const grad = await gk.tokenLogProbsBackward(logits, [-100, 3, 0, 2, 0], { gradLogp: [1, 1, 1, 1, 1] });
  const g = grad.data as Float32Array;
  t.same(Array.from(g.subarray(0, v)), [0, 0, 0, 0, 0, 0], 'ignored row: zero gradient');
  t.same(Array.from(g.subarray(4 * v + 1, 5 * v)), [0, 0, 0, 0, 0], 'masked entries: zero gradient');
});

t.test('bfloat16 target gradient keeps 1 - p when p is close to 1', async (t) => {
  // p(target) = 0.999..: the gradient 1 - p must not be lost to bf16 rounding of p first.
  const v = 8;
  const f = new Float32Array(v).fill(-4);
  f[3] = 6;
  const logits = gk.Tensor.from(gk.toBFloat16(f), { dtype: 'bfloat16', shape: [1, v] });
  const values = Float64Array.from(gk.fromBFloat16(logits.data as Uint16Array));
  const ref = refTokenLogProbsBackward(values, 1, v, [3], [-1], null);
  const g = (await gk.tokenLogProbsBackward(logits, [3], { gradLogp: [-1] })).toFloat32();
  t.ok(Math.abs(g[3]! - ref[3]!) / Math.abs(ref[3]!) < 8e-3, `target gradient ${g[3]} vs ${ref[3]}`);
  t.not(g[3], 0, 'target gradient is not rounded away');
});

t.test('ops do not block the event loop', async (t) => {
  const rng = new Rng(seed + 11);
  const { tensor, values } = makeLogits(rng, { n: 512, v: 32000, dtype: 'float32' });
  const targets = makeTargets(rng, values, 512, 32000, []);
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const p = gk.tokenLogProbs(tensor, targets, { entropy: true });
  t.type(p.then, 'function', 'returns a Promise');
  await p;
  const ticksDuring = ticks;
  clearInterval(timer);
  await gk.tokenLogProbs(tensor, targets);
  t.ok(ticksDuring >= 1, `the event loop ran ${ticksDuring} timer callbacks while the op worked`);
});

t.test('sumP2: Σ_j p² per row from the same pass (spec §9.6)', async (t) => {
  // p = [1/3, 2/3, 0] (a masked -inf column): Σp² = 5/9; at T = 2: p ∝ [1, √2] -> (1 + 2) / (1 + √2)².
  const x = gk.Tensor.from(Float32Array.of(0, Math.log(2), -Infinity, 0, Math.log(2), -Infinity, 5, 1, 2), { shape: [3, 3] });
  const r = await gk.tokenLogProbs(x, Int32Array.of(0, -100, 1), { sumP2: true });
  const s = r.sumP2!.data as Float32Array;
  t.ok(Math.abs(s[0]! - 5 / 9) < 1e-6, `row 0: ${s[0]} ≈ 5/9`);
  t.equal(s[1], 0, 'an ignored row gives 0');
  const e = [5, 1, 2].map((u) => Math.exp(u - 5));
  const z = e.reduce((a, b) => a + b, 0);
  t.ok(Math.abs(s[2]! - e.reduce((a, b) => a + (b / z) ** 2, 0)) < 1e-6, `row 2: ${s[2]}`);
  const r2 = await gk.tokenLogProbs(x, Int32Array.of(0, 0, 0), { sumP2: true, temperature: 2 });
  t.ok(Math.abs((r2.sumP2!.data as Float32Array)[0]! - (1 + 2) / (1 + Math.SQRT2) ** 2) < 1e-6, 'temperature applies before the square');
  t.equal((await gk.tokenLogProbs(x, Int32Array.of(0, 0, 0))).sumP2, undefined, 'not computed unless asked');
  t.equal(await errorCode(() => gk.tokenLogProbs(x, Int32Array.of(0, 0, 0), { sumP2: 1 as unknown as boolean })), 'GK_INVALID_ARG', 'sumP2 must be a boolean');
});
