// `npm run bench [-- --quick] [-- --device cpu|cuda]`: on the CPU (default) times each op against a
// (`npm run bench -- --soak`: the memory soak run of bench/soak.ts instead.)
// plain TypeScript float32 loop doing the same work, prints elements/s and the ratio, shows the
// peak RSS growth of the fused GRPO step, and writes JSON under bench/results/.
import { execSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import * as gk from '../lib/index';
import { addon } from '../lib/native';
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
  /** The passes over memory the op makes by design, and their time at the bandwidth measured in this run. */
  passes: string;
  floorMs: number;
  /** floorMs / nativeMs: 1 is the memory-bandwidth floor. */
  floorFraction: number;
  /** Time of the op's exps alone at the exp throughput measured in this run (the compute bound). */
  expMs: number;
  peer: string | null;
  peerMs: number | null;
  /** peerMs / nativeMs. */
  speedup: number | null;
}

interface Floor { readGBs: number; copyGBs: number; expGElems: number; threads: number }

/** Memory traffic of an op: `read` bytes read in read-only passes, `rw` bytes read or written in read + write passes. */
function floorMs(f: Floor, read: number, rw: number): number {
  return (read / (f.readGBs * 1e9) + rw / (f.copyGBs * 1e9)) * 1e3;
}

interface PeerResult {
  available: boolean;
  why?: string;
  torch?: string;
  threads?: number;
  rows?: Record<string, { ms: number; msMin: number; reps: number }>;
  check?: { logp: number[]; logpSum: number; entropySum: number; grpoLoss: number; forwardKl: number };
}

/** Runs bench/peers/cpu_peers.py (PyTorch eager on the CPU) over the benchmark's own inputs. */
function runPeers(python: string | undefined, threads: number, inputs: Record<string, ArrayBufferView>, header: object): PeerResult {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-bench-'));
  try {
    for (const [name, a] of Object.entries(inputs)) fs.writeFileSync(path.join(dir, name), Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    fs.writeFileSync(path.join(dir, 'header.json'), JSON.stringify(header));
    const out = path.join(dir, 'peers.json');
    const script = path.resolve(__dirname, '..', '..', 'bench', 'peers', 'cpu_peers.py');
    const candidates = python ? [python] : ['/usr/bin/python3', 'python3'];
    let why = 'no python3';
    for (const py of candidates) {
      const r = spawnSync(py, [script, '--in', dir, '--out', out, '--threads', String(threads)], { stdio: ['ignore', 'inherit', 'inherit'] });
      if (r.error || r.status !== 0 || !fs.existsSync(out)) {
        why = r.error ? r.error.message : `${py} exited with ${r.status}`;
        continue;
      }
      const res = JSON.parse(fs.readFileSync(out, 'utf8')) as PeerResult;
      if (res.available || py === candidates[candidates.length - 1]) return res;
      why = res.why ?? why;
    }
    return { available: false, why };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
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
  const reps = quick ? 3 : 7;
  const plainReps = quick ? 1 : 3;
  const info = gk.backendInfo();
  const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log(`grpo-kernels bench: ${cpuModel}, ${info.cpu.threads} threads, ${info.cpu.simd}; node ${process.version}`);
  const floor: Floor = addon().cpuFloor(quick ? 2 ** 28 : 2 ** 29);
  console.log(
    `floor, measured now: read ${floor.readGBs.toFixed(1)} GB/s, copy ${floor.copyGBs.toFixed(1)} GB/s (read + write), ` +
      `exp ${floor.expGElems.toFixed(2)} G elements/s (${floor.threads} threads)\n`,
  );

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
  const nv = n * v;

  // Inputs of the fused step and the distillation, shared with the PyTorch peers.
  const s = 64;
  const l = n / s;
  const beta = 0.04;
  const eps = 0.2;
  const gl = Float32Array.from({ length: n }, () => r0() - 0.5);
  const adv = Float32Array.from({ length: s }, () => r0() * 2 - 1);
  const old = new Float32Array(n);
  plainLogProbs(z, n, v, y, old);
  for (let i = 0; i < n; i++) old[i] = old[i]! + (r0() - 0.5) * 0.2;
  const ref = Float32Array.from(old, (x) => x + (r0() - 0.5) * 0.2);
  const zT = randomLogits(n, v, 3);
  const teacher32 = gk.Tensor.from(zT, { shape: [n, v] });

  let peers: PeerResult = { available: false, why: '--no-peers' };
  if (!values['no-peers']) {
    console.log('PyTorch eager peers (bench/peers/cpu_peers.py) on the same inputs and threads ...');
    peers = runPeers(values.python, info.cpu.threads, {
      'logits.f32': z, 'teacher.f32': zT, 'targets.i64': BigInt64Array.from(y, (t) => BigInt(t)), 'gradlogp.f32': gl,
      'advantages.f32': adv, 'oldlogp.f32': old, 'reflogp.f32': ref,
    }, { n, v, s, beta, eps });
    console.log(peers.available ? `PyTorch ${peers.torch} on ${peers.threads} threads\n` : `no PyTorch peers: ${peers.why}\n`);
  }
  const peerMs = (key: string) => (peers.available ? peers.rows?.[key]?.ms ?? null : null);

  const rows: Row[] = [];
  const add = (
    op: string, shp: string, dtype: string, elements: number, nativeMs: number, plainMs: number | null,
    passes: string, fMs: number, exps: number, peer: string | null,
  ) => {
    const pMs = peer ? peerMs(peer) : null;
    const row: Row = {
      op, shape: shp, dtype, elements, nativeMs, plainMs,
      nativeElemsPerSec: elements / (nativeMs / 1e3),
      plainElemsPerSec: plainMs === null ? null : elements / (plainMs / 1e3),
      ratio: plainMs === null ? null : plainMs / nativeMs,
      passes, floorMs: fMs, floorFraction: fMs / nativeMs, expMs: (exps / (floor.expGElems * 1e9)) * 1e3,
      peer: pMs === null ? null : peer, peerMs: pMs, speedup: pMs === null ? null : pMs / nativeMs,
    };
    rows.push(row);
    console.log(
      `${op.padEnd(34)} ${shp.padEnd(12)} ${dtype.padEnd(9)} ${nativeMs.toFixed(2).padStart(8)} ms  floor ${fMs.toFixed(2).padStart(7)} ms ` +
        `(${(row.floorFraction * 100).toFixed(0).padStart(3)}%)  exp-bound ${row.expMs.toFixed(1).padStart(6)} ms` +
        (pMs === null ? '' : `  PyTorch ${pMs.toFixed(1).padStart(7)} ms ×${row.speedup!.toFixed(2)}`) +
        (plainMs === null ? '' : `  plain TS ×${row.ratio!.toFixed(1)}`),
    );
  };
  const R = (bytes: number) => floorMs(floor, bytes, 0);
  const RW = (read: number, written: number) => floorMs(floor, read, read + written);

  const pFwd = await median(plainReps, () => plainLogProbs(z, n, v, y, logp));
  add('tokenLogProbs', shape, 'float32', nv, await median(reps, () => gk.tokenLogProbs(logits32, y)), pFwd,
    '1 read', R(nv * 4), nv, 'tokenLogProbs:trl');
  const pFwdH = await median(plainReps, () => plainLogProbs(z, n, v, y, logp, ent));
  add('tokenLogProbs +entropy', shape, 'float32', nv, await median(reps, () => gk.tokenLogProbs(logits32, y, { entropy: true })), pFwdH,
    '1 read', R(nv * 4), nv, 'tokenLogProbs+entropy');
  add('tokenLogProbs', shape, 'bfloat16', nv, await median(reps, () => gk.tokenLogProbs(logitsBf, y)), null,
    '1 read', R(nv * 2), nv, 'tokenLogProbs:bf16:logSoftmaxGather');
  {
    // The large-vocabulary shape of the targets, and few rows (the rows split across threads).
    for (const [nn, vv] of [[256, 151936], [2, 151936]] as const) {
      const zz = randomLogits(nn, vv, 5);
      const yy = Int32Array.from({ length: nn }, () => Math.floor(r0() * vv));
      const t32 = gk.Tensor.from(zz, { shape: [nn, vv] });
      const tbf = gk.Tensor.from(gk.toBFloat16(zz), { dtype: 'bfloat16', shape: [nn, vv] });
      const r = nn < 16 ? Math.max(reps, 50) : reps;
      add('tokenLogProbs', `${nn}x${vv}`, 'float32', nn * vv, await median(r, () => gk.tokenLogProbs(t32, yy)), null, '1 read', R(nn * vv * 4), nn * vv, null);
      add('tokenLogProbs', `${nn}x${vv}`, 'bfloat16', nn * vv, await median(r, () => gk.tokenLogProbs(tbf, yy)), null, '1 read', R(nn * vv * 2), nn * vv, null);
    }
  }

  const grad = new Float32Array(nv);
  const pBwd = await median(plainReps, () => plainBackward(z, n, v, y, gl, grad));
  add('tokenLogProbsBackward', shape, 'float32', nv, await median(reps, () => gk.tokenLogProbsBackward(logits32, y, { gradLogp: gl })), pBwd,
    '1 read; 1 read + 1 write', R(nv * 4) + RW(nv * 4, nv * 4), 2 * nv, 'tokenLogProbsBackward');

  // Fused GRPO step from logits: S = 64 sequences of L = 16 tokens.
  const dlogp = new Float32Array(n);
  const pFused = await median(plainReps, () => {
    plainLogProbs(z, n, v, y, logp);
    plainLossStep(logp, old, ref, adv, s, l, beta, eps, dlogp);
    plainBackward(z, n, v, y, dlogp, grad);
  });
  const fusedInputs = { targets: y, advantages: adv, oldLogp: old, refLogp: ref };
  const fusedPasses = '1 read; 1 read + 1 write';
  add('grpoLoss from logits (+grad)', shape, 'float32', nv, await median(reps, () => gk.grpoLoss({ logits: logits32, ...fusedInputs }, { beta })), pFused,
    fusedPasses, R(nv * 4) + RW(nv * 4, nv * 4), 2 * nv, 'grpoLoss+grad');
  {
    const work = gk.Tensor.from(z.slice(), { shape: [n, v] });
    add('grpoLoss from logits, in place', shape, 'float32', nv,
      await median(reps, async () => {
        (work.data as Float32Array).set(z); // fresh logits each call (the copy is outside the op, timed below and subtracted)
        return gk.grpoLoss({ logits: work, ...fusedInputs }, { beta, inPlace: true });
      }) - await median(reps, () => { (work.data as Float32Array).set(z); }),
      null, fusedPasses, R(nv * 4) + RW(nv * 4, nv * 4), 2 * nv, 'grpoLoss+grad');
    work.dispose();
  }
  add('grpoLoss from logits (+grad)', shape, 'bfloat16', nv, await median(reps, () => gk.grpoLoss({ logits: logitsBf, ...fusedInputs }, { beta })), null,
    fusedPasses, R(nv * 2) + RW(nv * 2, nv * 2), 2 * nv, null);

  // Distillation (forward KL + student gradient) and sampling over the same logits.
  const pKl = await median(plainReps, () => plainForwardKl(z, zT, n, v, grad));
  add('distillationLoss fwd KL (+grad)', shape, 'float32', nv, await median(reps, () => gk.distillationLoss({ student: logits32, teacher: teacher32 }, { aggregation: 'seqMeanTokenMean' })), pKl,
    '2 reads; 2 reads + 1 write', R(2 * nv * 4) + RW(2 * nv * 4, nv * 4), 4 * nv, 'distillationLoss:forwardKL+grad');
  const sampled = new Int32Array(n);
  const pSample = await median(plainReps, () => plainSample(z, n, v, r0, sampled));
  add('sampleTokens', shape, 'float32', nv, await median(reps, () => gk.sampleTokens(logits32, { seed: 1 })), pSample,
    '1 read (a second from cache)', R(nv * 4), 2 * nv, 'sampleTokens:multinomial');
  add('sampleTokens topP 0.9', shape, 'float32', nv, await median(reps, () => gk.sampleTokens(logits32, { seed: 1, topP: 0.9 })), null,
    '1 read (more from cache)', R(nv * 4), 3 * nv, null);

  // Per-token loss step and advantages at large token counts.
  const nt = 1 << 20;
  const st = nt / 512;
  const lpT = Float32Array.from({ length: nt }, () => -r0() * 3);
  const oldT = Float32Array.from(lpT, (x) => x + (r0() - 0.5) * 0.2);
  const refT = Float32Array.from(lpT, (x) => x + (r0() - 0.5) * 0.2);
  const advT = Float32Array.from({ length: st }, () => r0() - 0.5);
  const dT = new Float32Array(nt);
  const pStep = await median(plainReps, () => plainLossStep(lpT, oldT, refT, advT, st, 512, beta, eps, dT));
  add('grpoLoss from logp (+grad)', `${st}x512`, 'float32', nt, await median(reps, () => gk.grpoLoss({ logp: lpT, oldLogp: oldT, refLogp: refT, advantages: advT }, { beta })), pStep,
    '3 reads + 1 write of N floats', RW(3 * nt * 4, nt * 4), 2 * nt, null);
  const rewards = Float32Array.from({ length: nt }, () => r0());
  const advOut = new Float32Array(nt);
  const pAdv = await median(plainReps, () => plainAdvantages(rewards, 16, 1e-4, advOut));
  add('groupAdvantages', `${nt / 16}x16`, 'float32', nt, await median(reps, () => gk.groupAdvantages(rewards, { groupSize: 16 })), pAdv,
    '1 read + 1 write of N', RW(nt * 4, nt * 4), 0, null);

  // Agreement with the peers on the same inputs.
  const agreement: Record<string, number> = {};
  if (peers.available && peers.check) {
    const c = peers.check;
    const mine = await gk.tokenLogProbs(logits32, y, { entropy: true });
    const lpArr = mine.logp.data as Float32Array;
    agreement.logpMaxAbsDiff = Math.max(...c.logp.map((x, i) => Math.abs(x - lpArr[i]!)));
    agreement.logpSumRelDiff = Math.abs(lpArr.reduce((a, b) => a + b, 0) - c.logpSum) / Math.abs(c.logpSum);
    const entArr = mine.entropy!.data as Float32Array;
    agreement.entropySumRelDiff = Math.abs(entArr.reduce((a, b) => a + b, 0) - c.entropySum) / Math.abs(c.entropySum);
    const g = await gk.grpoLoss({ logits: logits32, ...fusedInputs }, { beta });
    agreement.grpoLossRelDiff = Math.abs(g.loss - c.grpoLoss) / Math.abs(c.grpoLoss);
    const d = await gk.distillationLoss({ student: logits32, teacher: teacher32 }, { aggregation: 'seqMeanTokenMean' });
    agreement.forwardKlRelDiff = Math.abs(d.loss - c.forwardKl) / Math.abs(c.forwardKl);
    const worst = Math.max(...Object.values(agreement));
    console.log(`\nagreement with PyTorch: ${Object.entries(agreement).map(([k, x]) => `${k} ${x.toExponential(1)}`).join(', ')}`);
    if (!(worst < 1e-4)) {
      console.error('the results disagree with PyTorch beyond 1e-4: the timings are not comparable');
      process.exitCode = 1;
    }
  }

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
  console.log(`\nlog-prob forward, float32 ${shape}: ${(fwd.floorFraction * 100).toFixed(0)}% of the read floor, ${fwd.ratio!.toFixed(1)}× the plain TypeScript loop` +
    (fwd.speedup === null ? '' : `, ${fwd.speedup.toFixed(2)}× PyTorch (TRL's selective log-softmax)`));

  const result = {
    device: `${cpuModel} (${info.cpu.threads} threads, ${info.cpu.simd})`,
    machine: { cpu: cpuModel, threads: info.cpu.threads, simd: info.cpu.simd, hostname: os.hostname(), memoryBytes: os.totalmem() },
    backend: 'cpu',
    floor,
    peers: peers.available ? { torch: peers.torch, threads: peers.threads, rows: peers.rows, agreement } : { absent: peers.why },
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
