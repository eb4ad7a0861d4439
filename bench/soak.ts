// `npm run bench -- --soak [--steps 10000] [--every 1000]`: a soak run, not a test. Repeats a
// small GRPO training step (sample tokens, their log-probs, group advantages, the fused loss with
// its gradient) and reports the process's memory every `every` steps, once with every result
// tensor disposed and once leaving them to the garbage collector. Memory should be flat after
// the warm-up in both: no native allocation outlives its op, and no tensor is retained.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as gk from '../lib/index';
import { Rng } from '../lib/random';

export interface SoakOptions {
  steps: number;
  every: number;
  out?: string;
}

interface Sample {
  step: number;
  rssMiB: number;
  heapUsedMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
}

// Shapes: 8 prompts x 4 completions of 16 tokens over a 256-token vocabulary (N = 512 rows).
const PROMPTS = 8;
const G = 4;
const L = 16;
const V = 256;
const S = PROMPTS * G;
const N = S * L;

const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;

async function sample(step: number): Promise<Sample> {
  // A full collection, a pause for V8's concurrent ArrayBuffer sweeper, and another collection.
  global.gc?.();
  await new Promise((r) => setTimeout(r, 20));
  global.gc?.();
  const m = process.memoryUsage();
  return { step, rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), externalMiB: mib(m.external), arrayBuffersMiB: mib(m.arrayBuffers) };
}

async function run(mode: 'dispose' | 'gc', o: SoakOptions): Promise<{ samples: Sample[]; seconds: number }> {
  const rng = new Rng(1);
  const values = new Float32Array(N * V);
  for (let i = 0; i < values.length; i++) values[i] = rng.normal() * 2;
  const refLogp = new Float32Array(N);
  const rewards = new Float64Array(S);
  const samples: Sample[] = [];
  const t0 = performance.now();
  for (let step = 0; step <= o.steps; step++) {
    // The policy moved a little: new logits every step (a fresh tensor over a fresh copy).
    for (let k = 0; k < 64; k++) values[rng.int(0, values.length)] = rng.normal() * 2;
    const logits = gk.Tensor.from(values.slice(), { shape: [S, L, V] });
    const s = await gk.sampleTokens(logits, { temperature: 0.9, topP: 0.95, seed: 7, step });
    const lp = await gk.tokenLogProbs(logits, s.tokens, { temperature: 0.9 });
    for (let i = 0; i < S; i++) rewards[i] = rng.next() < 0.5 ? 1 : 0;
    const adv = await gk.groupAdvantages(rewards, { groupSize: G });
    for (let i = 0; i < N; i++) refLogp[i] = lp.logp.data[i] as number;
    const loss = await gk.grpoLoss(
      { logits, targets: s.tokens, advantages: adv.advantages, oldLogp: s.logp, refLogp },
      { temperature: 0.9, beta: 0.04, lossType: 'dapo', inPlace: step % 2 === 0 },
    );
    if (!Number.isFinite(loss.loss)) throw new Error(`soak: non-finite loss at step ${step}`);
    if (mode === 'dispose') {
      for (const t of [s.tokens, s.logp, s.logpTruncated, lp.logp, lp.lse, adv.advantages, loss.gradLogits, loss.logp, loss.entropy, logits]) t.dispose();
    }
    if (step % o.every === 0) samples.push(await sample(step));
  }
  return { samples, seconds: (performance.now() - t0) / 1000 };
}

export async function runSoak(o: SoakOptions): Promise<void> {
  if (!global.gc) console.warn('soak: run with --expose-gc (npm run bench does) for comparable figures');
  console.log(`soak: ${o.steps} steps of sample + log-probs + advantages + fused loss, [${S}, ${L}, ${V}] logits, memory every ${o.every} steps (after a GC)`);
  const result: Record<string, unknown> = { steps: o.steps, every: o.every, shape: [S, L, V], node: process.version, date: new Date().toISOString() };
  for (const mode of ['dispose', 'gc'] as const) {
    const r = await run(mode, o);
    result[mode] = r;
    console.log(`\n${mode === 'dispose' ? 'with dispose()' : 'without dispose() (finalizers / GC only)'}: ${r.seconds.toFixed(1)} s`);
    console.log('   step    RSS MiB   heap MiB   external MiB   arrayBuffers MiB');
    for (const x of r.samples)
      console.log(`${String(x.step).padStart(7)} ${x.rssMiB.toFixed(1).padStart(10)} ${x.heapUsedMiB.toFixed(1).padStart(10)} ${x.externalMiB.toFixed(1).padStart(14)} ${x.arrayBuffersMiB.toFixed(1).padStart(18)}`);
    const warm = r.samples.find((x) => x.step >= o.every) ?? r.samples[0]!;
    const last = r.samples[r.samples.length - 1]!;
    console.log(`growth from step ${warm.step} to ${last.step}: RSS ${(last.rssMiB - warm.rssMiB).toFixed(1)} MiB, heap ${(last.heapUsedMiB - warm.heapUsedMiB).toFixed(1)} MiB, external ${(last.externalMiB - warm.externalMiB).toFixed(1)} MiB`);
  }
  if (o.out) {
    fs.mkdirSync(path.dirname(o.out), { recursive: true });
    fs.writeFileSync(o.out, JSON.stringify(result, null, 2) + '\n');
    console.log(`results: ${path.relative(process.cwd(), o.out)}`);
  }
}
