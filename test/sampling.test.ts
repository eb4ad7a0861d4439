import t from 'tap';
import * as gk from '../lib/index';
import { makeLogits, TOLERANCE, compare } from './reference/cases';
import { Rng } from './reference/random';
import { keptTokens, philox4x32_10, refSampleTokens, type RefSampleOptions } from './reference/sampling';
import { rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'sampling');
const base: RefSampleOptions = { temperature: 1, greedy: false, topK: 0, topP: 1, minP: 0, seed: 0, step: 0, rowOffset: 0 };

t.test('Philox-4x32-10 known-answer vectors', async (t) => {
  t.same(philox4x32_10([0, 0, 0, 0], [0, 0]).map((x) => x.toString(16)), ['6627e8d5', 'e169c58d', 'bc57ac4c', '9b00dbd8']);
  t.same(philox4x32_10([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff]).map((x) => x.toString(16)), ['408f276d', '41c83b0e', 'a20bc7c6', '6d5451fd']);
  t.same(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]).map((x) => x.toString(16)), ['d16cfe09', '94fdcceb', '5001e420', '24126ea1']);
});

t.test('draws the reference tokens exactly, with matching log-probs (dtypes x filters)', async (t) => {
  const rng = new Rng(seed);
  const combos: Partial<RefSampleOptions>[] = [
    {}, { temperature: 0.7 }, { topK: 5 }, { topP: 0.9 }, { minP: 0.05 }, { topK: 20, topP: 0.8, minP: 0.01, temperature: 1.3 },
    { greedy: true }, { topK: 1 }, { seed: 123456789, step: 7, rowOffset: 1000 },
  ];
  for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
    for (const c of combos) {
      const n = 40;
      const v = c.topK === 20 ? 5000 : 37;
      const { tensor, values } = makeLogits(rng, { n, v, dtype, masked: 0.1 });
      const o = { ...base, seed: seed % 1000, ...c };
      const out = await gk.sampleTokens(tensor, o);
      const ref = refSampleTokens(values, n, v, o);
      const label = `${dtype} ${JSON.stringify(c)}`;
      t.same(Array.from(out.tokens.data as Int32Array), Array.from(ref.tokens), `${label}: identical tokens`);
      const lp = compare('logp', out.logp.data as Float32Array, ref.logp, TOLERANCE[dtype].value);
      t.ok(lp.pass, `${label}: logp err ${lp.err.toExponential(2)}`);
      const lt = compare('logpTruncated', out.logpTruncated.data as Float32Array, ref.logpTruncated, 1e-5);
      t.ok(lt.pass, `${label}: logpTruncated err ${lt.err.toExponential(2)} ${lt.detail ?? ''}`);
      const full = out.logp.data as Float32Array;
      const trunc = out.logpTruncated.data as Float32Array;
      t.ok(full.every((x, i) => x <= trunc[i]! + 1e-6 && trunc[i]! <= 1e-7), `${label}: log p_full <= log p_truncated <= 0`);
    }
  }
});

t.test('empirical frequencies follow the truncated softmax (chi-square, fixed seed)', async (t) => {
  const v = 8;
  const row = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0];
  const n = 40000;
  const z = new Float32Array(n * v);
  for (let r = 0; r < n; r++) z.set(row, r * v);
  const logits = gk.Tensor.from(z, { shape: [n, v] });
  // Critical values of χ² at p = 0.001 for df = 1..7.
  const crit = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32];
  for (const o of [{}, { topK: 4 }, { topP: 0.7 }, { minP: 0.1, temperature: 0.8 }] as Partial<RefSampleOptions>[]) {
    const opts = { ...base, seed: 2024, ...o };
    const out = await gk.sampleTokens(logits, opts);
    const u = Float64Array.from(row, (x) => x / opts.temperature);
    const keep = keptTokens(u, opts);
    const m = Math.max(...u);
    const zk = [...u].reduce((s, x, j) => s + (keep[j] ? Math.exp(x - m) : 0), 0);
    const counts = new Array<number>(v).fill(0);
    for (const tok of out.tokens.data as Int32Array) counts[tok]!++;
    let chi = 0;
    let df = -1;
    for (let j = 0; j < v; j++) {
      if (!keep[j]) {
        t.equal(counts[j], 0, `${JSON.stringify(o)}: token ${j} is filtered out and never drawn`);
        continue;
      }
      const expected = (n * Math.exp(u[j]! - m)) / zk;
      chi += (counts[j]! - expected) ** 2 / expected;
      df++;
    }
    t.ok(chi < crit[df - 1]!, `${JSON.stringify(o)}: χ² = ${chi.toFixed(2)} < ${crit[df - 1]} (df ${df})`);
  }
});

t.test('deterministic for (seed, row, step); different steps and seeds differ', async (t) => {
  const rng = new Rng(seed + 1);
  const { tensor } = makeLogits(rng, { n: 256, v: 50, dtype: 'float32', scale: 0.5 });
  const a = Array.from((await gk.sampleTokens(tensor, { seed: 5, step: 1 })).tokens.data as Int32Array);
  const b = Array.from((await gk.sampleTokens(tensor, { seed: 5, step: 1 })).tokens.data as Int32Array);
  const c = Array.from((await gk.sampleTokens(tensor, { seed: 5, step: 2 })).tokens.data as Int32Array);
  const d = Array.from((await gk.sampleTokens(tensor, { seed: 6, step: 1 })).tokens.data as Int32Array);
  t.same(a, b);
  t.not(a.join(), c.join());
  t.not(a.join(), d.join());
  const half = gk.Tensor.from((tensor.data as Float32Array).slice(128 * 50), { shape: [128, 50] });
  const tail = Array.from((await gk.sampleTokens(half, { seed: 5, step: 1, rowOffset: 128 })).tokens.data as Int32Array);
  t.same(tail, a.slice(128), 'rowOffset samples a batch in pieces with the same draws');
});

t.test('the sampled log-prob is bit-identical to tokenLogProbs on the same logits', async (t) => {
  const rng = new Rng(seed + 2);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const { tensor } = makeLogits(rng, { n: 64, v: 1000, dtype });
    const s = await gk.sampleTokens(tensor, { seed: 1, temperature: 0.9 });
    const r = await gk.tokenLogProbs(tensor, s.tokens, { temperature: 0.9 });
    t.same(Array.from(s.logp.data as Float32Array), Array.from(r.logp.data as Float32Array), dtype);
  }
});

t.test('bad inputs', async (t) => {
  const logits = gk.Tensor.from(new Float32Array(6), { shape: [2, 3] });
  await rejectsCode(t, () => gk.sampleTokens(logits, { topK: -1 }), 'GK_INVALID_ARG', /topK must be >= 0/);
  await rejectsCode(t, () => gk.sampleTokens(logits, { topP: 0 }), 'GK_INVALID_ARG', /topP must be > 0/);
  await rejectsCode(t, () => gk.sampleTokens(logits, { minP: 1 }), 'GK_INVALID_ARG', /minP/);
  await rejectsCode(t, () => gk.sampleTokens(logits, { temperature: 0 }), 'GK_INVALID_ARG', /temperature/);
  await rejectsCode(t, () => gk.sampleTokens(logits, { seed: -1 }), 'GK_INVALID_ARG', /seed/);
  await rejectsCode(t, () => gk.sampleTokens(logits, { top_k: 3 } as never), 'GK_INVALID_ARG', /unknown option 'top_k'/);
  const nan = gk.Tensor.from(Float32Array.from([0, 1, 2, -Infinity, -Infinity, -Infinity]), { shape: [2, 3] });
  await rejectsCode(t, () => gk.sampleTokens(nan), 'GK_NONFINITE', /row 1/);
});
