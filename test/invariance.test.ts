// Bit-for-bit invariance of the CPU backend: a row's log-prob, entropy, gradient, sample and
// divergence do not depend on the ISA level of the row loops (x86-64-v4, v3, baseline), on the
// thread count, or on the batch the row is in (its position, N, the other rows: few long rows are
// split across threads by segment, many are not). And sampleTokens' log-prob of a token is
// tokenLogProbs' log-prob of it, bit for bit.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import t from 'tap';
import * as gk from '../lib/index';
import { Rng } from '../lib/random';

const root = path.resolve(__dirname, '..');

function run(env: Record<string, string>): Record<string, string> {
  const r = spawnSync(process.execPath, [...process.execArgv, path.join(root, 'test/invariance/run.ts')], {
    cwd: root, encoding: 'utf8', timeout: 300_000, env: { ...process.env, ...env }, maxBuffer: 16 * 2 ** 20,
  });
  if (r.status !== 0) throw new Error(`invariance child ${JSON.stringify(env)} failed: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, string>;
}

t.test('the same bits on every ISA level and thread count', async (t) => {
  const base = run({});
  t.ok(Object.keys(base).length >= 60, `${Object.keys(base).length} outputs digested`);
  for (const env of [{ GK_SIMD_ISA: 'v3' }, { GK_SIMD_ISA: 'base' }, { GK_NUM_THREADS: '1' }, { GK_NUM_THREADS: '3' }] as Record<string, string>[]) {
    const other = run(env);
    const differ = Object.keys(base).filter((k) => base[k] !== other[k]);
    t.same(differ, [], `${JSON.stringify(env)}: every output identical to the default run's`);
  }
});

t.test("a row's results do not depend on its batch", async (t) => {
  const r = new Rng(99);
  const v = 70001;
  const rows = Array.from({ length: 6 }, () => Float32Array.from({ length: v }, () => r.normal() * 2.5));
  const y = Int32Array.from({ length: 6 }, () => Math.floor(r.next() * v));
  const gl = Float32Array.from({ length: 6 }, () => r.next() - 0.5);
  const gh = Float32Array.from({ length: 6 }, () => r.next() - 0.5);
  async function batch(ids: number[], dtype: 'float32' | 'bfloat16') {
    const z = new Float32Array(ids.length * v);
    ids.forEach((id, i) => z.set(rows[id]!, i * v));
    const x = gk.Tensor.from(dtype === 'float32' ? z : gk.toBFloat16(z), { dtype, shape: [ids.length, v] });
    const yy = Int32Array.from(ids, (id) => y[id]!);
    const f = await gk.tokenLogProbs(x, yy, { entropy: true, temperature: 0.9 });
    const g = await gk.tokenLogProbsBackward(x, yy, { gradLogp: Float32Array.from(ids, (id) => gl[id]!), gradEntropy: Float32Array.from(ids, (id) => gh[id]!) }, { temperature: 0.9 });
    const s = await gk.sampleTokens(x, { seed: 3, temperature: 0.9, rowIds: ids });
    return { ids, f, g, s, x };
  }
  for (const dtype of ['float32', 'bfloat16'] as const) {
    // 6 rows: one per chunk; 3 rows and 1 row: split across threads by segment.
    const all = await batch([0, 1, 2, 3, 4, 5], dtype);
    for (const ids of [[4], [2, 4, 0], [5, 3, 1, 4, 0, 2]]) {
      const b = await batch(ids, dtype);
      for (let i = 0; i < ids.length; i++) {
        const id = ids[i]!;
        const tag = `${dtype} row ${id} at ${i} of [${ids.join(',')}]`;
        t.equal(b.f.logp.data[i], all.f.logp.data[id], `${tag}: logp`);
        t.equal(b.f.entropy!.data[i], all.f.entropy!.data[id], `${tag}: entropy`);
        const ga = all.g.data.subarray(id * v, (id + 1) * v), gb = b.g.data.subarray(i * v, (i + 1) * v);
        t.ok(Buffer.from(ga.buffer, ga.byteOffset, ga.byteLength).equals(Buffer.from(gb.buffer, gb.byteOffset, gb.byteLength)), `${tag}: gradient row`);
        t.equal(b.s.tokens.data[i], all.s.tokens.data[id], `${tag}: sampled token`);
        t.equal(b.s.logp.data[i], all.s.logp.data[id], `${tag}: sampled log-prob`);
      }
    }
    // The sampler's log-prob is tokenLogProbs' log-prob of the sampled token.
    const lp = await gk.tokenLogProbs(all.x, all.s.tokens.data as Int32Array, { temperature: 0.9 });
    for (let i = 0; i < 6; i++) t.equal(all.s.logp.data[i], lp.logp.data[i], `${dtype} row ${i}: sampleTokens logp === tokenLogProbs logp`);
  }
});
