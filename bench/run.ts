// `npm run bench [-- --quick] [-- --device cpu|cuda]`: on the CPU (default) times each op against a
// (`npm run bench -- --soak`: the memory soak run of bench/soak.ts instead.)
// plain TypeScript float32 loop doing the same work, prints elements/s and the ratio, shows the
// peak RSS growth of the fused GRPO step, and writes JSON under bench/results/.
import { execSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as gk from '../lib/index';
import { Rng } from '../lib/random';
import { runCudaBench } from './cuda';
import { runSoak } from './soak';
import { plainAdvantages, plainBackward, plainForwardKl, plainLogProbs, plainLossStep, plainSample } from './plain';

interface Row {
  op: string;
  shape: string;
  dtype: string;
  elements: number;
  nativeMs: number;
  plainMs: number | null;
  nativeElemsPerSec: number;
  plainElemsPerSec: number | null;
  ratio: number | null;
}

function randomLogits(n: number, v: number, seed: number): Float32Array {
  const r = new Rng(seed);
  const z = new Float32Array(n * v);
  for (let i = 0; i < z.length; i++) z[i] = r.normal() * 2;
  return z;
}

async function median(reps: number, f: () => unknown): Promise<number> {
  await f(); // warm-up
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    await f();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ts.sort((a, b) => a - b);
  return ts[Math.floor(ts.length / 2)]!;
}

/** Peak RSS growth (bytes) while `f` runs, sampled every millisecond on the event loop. */
async function peakRssGrowth(f: () => Promise<unknown>): Promise<number> {
  if (global.gc) global.gc();
  await new Promise((r) => setTimeout(r, 20));
  const base = process.memoryUsage.rss();
  let peak = base;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 1);
  await f();
  peak = Math.max(peak, process.memoryUsage.rss());
  clearInterval(timer);
  return peak - base;
}

function commit(): string {
  try {
    return execSync('git rev-parse HEAD', { cwd: path.resolve(__dirname, '..', '..'), stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

function fmt(x: number): string {
  return x >= 1e9 ? `${(x / 1e9).toFixed(2)} G` : x >= 1e6 ? `${(x / 1e6).toFixed(1)} M` : `${(x / 1e3).toFixed(1)} K`;
}

async function main() {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false }, device: { type: 'string', default: 'cpu' }, out: { type: 'string' },
      'no-peers': { type: 'boolean', default: false }, 'no-compile': { type: 'boolean', default: false }, python: { type: 'string' },
      headline: { type: 'boolean', default: false }, smoke: { type: 'boolean', default: false },
      soak: { type: 'boolean', default: false }, steps: { type: 'string', default: '10000' }, every: { type: 'string', default: '1000' },
    },
  });
  if (values.soak) {
    const steps = Number(values.steps);
    const every = Number(values.every);
    if (!Number.isInteger(steps) || steps < 1 || !Number.isInteger(every) || every < 1) throw new Error('--steps and --every must be positive integers');
    await runSoak({ steps, every, ...(values.out ? { out: values.out } : {}) });
    return;
  }
  if (gk.resolveDevice(values.device as gk.DeviceRequest) === 'cuda') {
    const mode = values.smoke ? 'smoke' : values.headline ? 'headline' : values.quick ? 'quick' : 'full';
    await runCudaBench({
      mode, noPeers: values['no-peers']!, noCompile: values['no-compile']!,
      ...(values.out ? { out: values.out } : {}), ...(values.python ? { python: values.python } : {}),
    });
    return;
  }
  const quick = values.quick!;
  const reps = quick ? 3 : 5;
  const plainReps = quick ? 1 : 3;
  const info = gk.backendInfo();
  const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`grpo-kernels bench: ${cpuModel}, ${info.cpu.threads} threads, ${info.cpu.simd}; node ${process.version}`);
  const rows: Row[] = [];
  const add = (op: string, shape: string, dtype: string, elements: number, nativeMs: number, plainMs: number | null) => {
    const row: Row = {
      op, shape, dtype, elements, nativeMs, plainMs,
      nativeElemsPerSec: elements / (nativeMs / 1e3),
      plainElemsPerSec: plainMs === null ? null : elements / (plainMs / 1e3),
      ratio: plainMs === null ? null : plainMs / nativeMs,
    };
    rows.push(row);
    console.log(
      `${op.padEnd(34)} ${shape.padEnd(18)} ${dtype.padEnd(9)} native ${nativeMs.toFixed(2).padStart(9)} ms ${fmt(row.nativeElemsPerSec).padStart(9)}el/s` +
        (plainMs === null ? '' : `   plain TS ${plainMs.toFixed(1).padStart(8)} ms ${fmt(row.plainElemsPerSec!).padStart(9)}el/s   ×${row.ratio!.toFixed(1)}`),
    );
  };

  const n = 1024;
  const v = 32000;
  const z = randomLogits(n, v, 1);
  const rng2 = new Rng(2);
  const r0 = () => rng2.next();
  const y = Int32Array.from({ length: n }, () => Math.floor(r0() * v));
  const logits32 = gk.Tensor.from(z, { shape: [n, v] });
  const logitsBf = gk.Tensor.from(gk.toBFloat16(z), { dtype: 'bfloat16', shape: [n, v] });
  const logp = new Float32Array(n);
  const ent = new Float32Array(n);
  const shape = `${n}x${v}`;

  const pFwd = await median(plainReps, () => plainLogProbs(z, n, v, y, logp));
  add('tokenLogProbs', shape, 'float32', n * v, await median(reps, () => gk.tokenLogProbs(logits32, y)), pFwd);
  const pFwdH = await median(plainReps, () => plainLogProbs(z, n, v, y, logp, ent));
  add('tokenLogProbs +entropy', shape, 'float32', n * v, await median(reps, () => gk.tokenLogProbs(logits32, y, { entropy: true })), pFwdH);
  add('tokenLogProbs', shape, 'bfloat16', n * v, await median(reps, () => gk.tokenLogProbs(logitsBf, y)), null);

  const gl = Float32Array.from({ length: n }, () => r0() - 0.5);
  const grad = new Float32Array(n * v);
  const pBwd = await median(plainReps, () => plainBackward(z, n, v, y, gl, grad));
  add('tokenLogProbsBackward', shape, 'float32', n * v, await median(reps, () => gk.tokenLogProbsBackward(logits32, y, { gradLogp: gl })), pBwd);

  // Fused GRPO step from logits: S = 64 sequences of L = 16 tokens.
  const s = 64;
  const l = n / s;
  const adv = Float32Array.from({ length: s }, () => r0() * 2 - 1);
  const old = new Float32Array(n);
  plainLogProbs(z, n, v, y, old);
  for (let i = 0; i < n; i++) old[i] = old[i]! + (r0() - 0.5) * 0.2;
  const ref = Float32Array.from(old, (x) => x + (r0() - 0.5) * 0.2);
  const dlogp = new Float32Array(n);
  const pFused = await median(plainReps, () => {
    plainLogProbs(z, n, v, y, logp);
    plainLossStep(logp, old, ref, adv, s, l, 0.04, 0.2, dlogp);
    plainBackward(z, n, v, y, dlogp, grad);
  });
  const fusedInputs = { targets: y, advantages: adv, oldLogp: old, refLogp: ref };
  add('grpoLoss from logits (+grad)', shape, 'float32', n * v, await median(reps, () => gk.grpoLoss({ logits: logits32, ...fusedInputs }, { beta: 0.04 })), pFused);
  add('grpoLoss from logits (+grad)', shape, 'bfloat16', n * v, await median(reps, () => gk.grpoLoss({ logits: logitsBf, ...fusedInputs }, { beta: 0.04 })), null);

  // Distillation (forward KL + student gradient) and sampling over the same logits.
  const zT = randomLogits(n, v, 3);
  const teacher32 = gk.Tensor.from(zT, { shape: [n, v] });
  const pKl = await median(plainReps, () => plainForwardKl(z, zT, n, v, grad));
  add('distillationLoss fwd KL (+grad)', shape, 'float32', n * v, await median(reps, () => gk.distillationLoss({ student: logits32, teacher: teacher32 })), pKl);
  const sampled = new Int32Array(n);
  const pSample = await median(plainReps, () => plainSample(z, n, v, r0, sampled));
  add('sampleTokens', shape, 'float32', n * v, await median(reps, () => gk.sampleTokens(logits32, { seed: 1 })), pSample);
  add('sampleTokens topP 0.9', shape, 'float32', n * v, await median(reps, () => gk.sampleTokens(logits32, { seed: 1, topP: 0.9 })), null);

  // Per-token loss step and advantages at large token counts.
  const nt = 1 << 20;
  const st = nt / 512;
  const lpT = Float32Array.from({ length: nt }, () => -r0() * 3);
  const oldT = Float32Array.from(lpT, (x) => x + (r0() - 0.5) * 0.2);
  const refT = Float32Array.from(lpT, (x) => x + (r0() - 0.5) * 0.2);
  const advT = Float32Array.from({ length: st }, () => r0() - 0.5);
  const dT = new Float32Array(nt);
  const pStep = await median(plainReps, () => plainLossStep(lpT, oldT, refT, advT, st, 512, 0.04, 0.2, dT));
  add('grpoLoss from logp (+grad)', `${st}x512`, 'float32', nt, await median(reps, () => gk.grpoLoss({ logp: lpT, oldLogp: oldT, refLogp: refT, advantages: advT }, { beta: 0.04 })), pStep);
  const rewards = Float32Array.from({ length: nt }, () => r0());
  const advOut = new Float32Array(nt);
  const pAdv = await median(plainReps, () => plainAdvantages(rewards, 16, 1e-4, advOut));
  add('groupAdvantages', `${nt / 16}x16`, 'float32', nt, await median(reps, () => gk.groupAdvantages(rewards, { groupSize: 16 })), pAdv);

  // Memory: the fused step allocates its gradient (N·V in the logits' dtype) and O(N) besides;
  // in place it allocates O(N) only. An N×V float32 temporary would show as +N·V·4 bytes.
  const nxv4 = n * v * 4;
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const memory: Record<string, number> = { nxvFloat32Bytes: nxv4 };
  console.log(`\nfused GRPO step ${shape}: peak RSS growth (an N×V float32 array is ${mib(nxv4)})`);
  for (const [dtype, src] of [['float32', logits32], ['bfloat16', logitsBf]] as const) {
    const gradBytes = n * v * (dtype === 'float32' ? 4 : 2);
    const outOfPlace = await peakRssGrowth(() => gk.grpoLoss({ logits: src, ...fusedInputs }, { beta: 0.04 }));
    const copy = gk.Tensor.from((src.data as Float32Array | Uint16Array).slice(), { dtype, shape: [n, v] });
    const inPlace = await peakRssGrowth(() => gk.grpoLoss({ logits: copy, ...fusedInputs }, { beta: 0.04, inPlace: true }));
    copy.dispose();
    memory[`${dtype}GradientBytes`] = gradBytes;
    memory[`${dtype}PeakRssGrowthOutOfPlace`] = outOfPlace;
    memory[`${dtype}PeakRssGrowthInPlace`] = inPlace;
    console.log(`  ${dtype.padEnd(9)} gradient in a new buffer: ${mib(outOfPlace).padStart(10)} (the gradient itself: ${mib(gradBytes)}); over the logits (inPlace): ${mib(inPlace)}`);
  }
  if (!global.gc) console.log('  (run node with --expose-gc for steadier figures; npm run bench does)');

  const fwd = rows.find((r) => r.op === 'tokenLogProbs' && r.dtype === 'float32')!;
  console.log(`\nlog-prob forward, float32 ${shape}: ${fwd.ratio!.toFixed(1)}× the plain TypeScript loop`);

  const result = {
    device: `${cpuModel} (${info.cpu.threads} threads, ${info.cpu.simd})`,
    backend: 'cpu',
    commit: commit(),
    date: new Date().toISOString(),
    node: process.version,
    packageVersion: info.packageVersion,
    quick,
    rows,
    memory: { shape, ...memory },
  };
  const outFile = values.out ?? path.resolve(__dirname, '..', '..', 'bench', 'results', `cpu-${os.hostname().replace(/[^\w.-]/g, '_')}.json`);
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n');
  console.log(`results: ${path.relative(process.cwd(), outFile)}`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
