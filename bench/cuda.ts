// `npm run bench -- --device cuda`: every kernel at realistic shapes on the GPU, timed with CUDA
// events around its kernels (Device.lastOpMs), against the physical floor: the bytes it must
// move over the device-to-device copy bandwidth measured in the same run. Then the PyTorch peers
// (bench/peers/peers.py) on the same GPU, with an agreement check on shared inputs; one JSON
// under bench/results/ and an SVG chart of achieved bandwidth, ours against the peers.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as gk from '../lib/index';
import { writeVegaLite } from '../lib/demos/chart';
import { addon } from '../lib/native';
import { Rng } from '../lib/random';

export interface CudaBenchOptions {
  /**
   * full: N = 4096/16384 x V = 32000..262144 x float32/bfloat16; quick: 4096 x 32000/151936 bf16;
   * headline: the README's shapes only (bf16, V = 151936, N = 8192 and 16384), for a short GPU
   * lease; smoke: tiny shapes, one repetition, no peers, for the emulated build (checks that
   * every path of the benchmark runs; its times mean nothing).
   */
  mode: 'full' | 'quick' | 'headline' | 'smoke';
  out?: string;
  /** Skip the PyTorch peers. */
  noPeers?: boolean;
  /** Skip the peers' torch.compile variants (their compile time is long). */
  noCompile?: boolean;
  python?: string;
}

interface CudaRow {
  op: string;
  impl: string;
  n: number;
  v: number;
  dtype: string;
  ms: number;
  msMin: number;
  /** The floor's bytes: what the op must read and write at least. */
  bytes: number;
  /** What the floor counts, in words. */
  floor: string;
  gbs: number;
  fracOfCopy: number;
  /** Device memory beyond inputs and outputs (pool peak minus what was live plus the outputs). */
  extraBytes?: number;
  error?: string | null;
}

const ELEM: Record<string, number> = { float32: 4, bfloat16: 2 };

function commit(): string {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: path.resolve(__dirname, '..', '..'), stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return 'unknown';
  }
}

/** Median and minimum GPU time (ms) of `reps` runs of `f` after a warm-up run. */
async function timeOp(dev: gk.Device, reps: number, f: () => Promise<unknown>): Promise<{ ms: number; msMin: number }> {
  await f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    await f();
    ts.push(dev.lastOpMs());
  }
  ts.sort((a, b) => a - b);
  return { ms: ts[Math.floor(ts.length / 2)]!, msMin: ts[0]! };
}

/**
 * A device tensor of random logits: a 64 MiB random block uploaded once and tiled over the
 * whole buffer with device-to-device copies (generating gigabytes on the host would dominate).
 */
async function randomDeviceLogits(dev: gk.Device, n: number, v: number, dtype: 'float32' | 'bfloat16', rng: Rng): Promise<gk.Tensor> {
  const elem = ELEM[dtype]!;
  const total = n * v;
  const blockElems = Math.min(total, (64 * 2 ** 20) / elem);
  const f = Float32Array.from({ length: blockElems }, () => rng.normal() * 2);
  const block = await dev.upload(dtype === 'float32' ? f : gk.toBFloat16(f), { dtype });
  const t = dev.empty([n, v], dtype);
  for (let off = 0; off < total; off += blockElems) {
    const len = Math.min(blockElems, total - off);
    const src = len === blockElems ? block : await dev.upload(dtype === 'float32' ? f.subarray(0, len) : gk.toBFloat16(f.subarray(0, len)), { dtype });
    await addon().deviceCopy(t.handle, src.handle, off * elem);
    if (src !== block) src.dispose();
  }
  block.dispose();
  return t;
}

const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

export async function runCudaBench(o: CudaBenchOptions): Promise<void> {
  const dev = gk.Device.open('cuda');
  const info = gk.backendInfo();
  const gpu = info.cuda.devices[dev.index]!;
  const smoke = o.mode === 'smoke';
  const quick = o.mode !== 'full';
  const reps = smoke ? 1 : quick ? 5 : 20;
  console.log(`grpo-kernels CUDA bench (${o.mode}): ${gpu.name} (sm_${gpu.computeCapability.replace('.', '')}, ${(gpu.memoryBytes / 2 ** 30).toFixed(0)} GiB); node ${process.version}`);
  if (info.cuda.emulated) console.log('the CUDA backend is EMULATED on the CPU here: the figures below are not GPU times');
  const rng = new Rng(7);
  const slug = gpu.name.replace(/[^\w.-]+/g, '_').slice(0, 60);
  const outFile = o.out ?? path.resolve(__dirname, '..', '..', 'bench', 'results', `cuda-${slug}${o.mode === 'full' ? '' : `-${o.mode}`}.json`);
  fs.mkdirSync(path.dirname(outFile), { recursive: true });

  // 1. The ceiling: a large device-to-device copy (bytes read + bytes written per second).
  const copyBytes = smoke ? 4 * 2 ** 20 : 2 * 2 ** 30;
  const src = await randomDeviceLogits(dev, copyBytes / 4 / 4096, 4096, 'float32', rng);
  const dst = dev.empty([copyBytes / 4], 'float32');
  const copy = await timeOp(dev, reps, () => addon().deviceCopy(dst.handle, src.handle));
  const copyGbs = (2 * copyBytes) / (copy.msMin / 1e3) / 1e9;
  console.log(`device-to-device copy of ${mib(copyBytes)}: ${copy.ms.toFixed(3)} ms median, ${copyGbs.toFixed(0)} GB/s (best; read + write)`);
  src.dispose();
  dst.dispose();

  const rows: CudaRow[] = [];
  const result = {
    device: gpu.name,
    computeCapability: gpu.computeCapability,
    backend: 'cuda',
    emulated: info.cuda.emulated,
    commit: commit(),
    date: new Date().toISOString(),
    node: process.version,
    packageVersion: info.packageVersion,
    mode: o.mode,
    quick,
    /** True until the run ends: a run cut short still leaves the rows measured so far. */
    partial: true,
    copyGbs,
    copyMs: copy.ms,
    rows,
    peers: null as unknown,
  };
  const save = () => fs.writeFileSync(outFile, JSON.stringify(result, null, 2) + '\n');
  save();
  const add = (r: Omit<CudaRow, 'gbs' | 'fracOfCopy'>) => {
    const gbs = r.bytes / (r.ms / 1e3) / 1e9;
    const row: CudaRow = { ...r, gbs, fracOfCopy: gbs / copyGbs };
    rows.push(row);
    save();
    console.log(
      `${r.op.padEnd(30)} ${`${r.n}x${r.v}`.padEnd(13)} ${r.dtype.padEnd(9)} ${r.ms.toFixed(3).padStart(9)} ms  ${gbs.toFixed(0).padStart(5)} GB/s  ${(100 * row.fracOfCopy).toFixed(1).padStart(5)}% of copy` +
        `  [${r.floor}]${r.extraBytes !== undefined ? `  extra ${mib(r.extraBytes)}` : ''}`,
    );
  };

  const shapes = {
    full: { ns: [4096, 16384], vs: [32000, 128256, 151936, 262144], dtypes: ['float32', 'bfloat16'] },
    quick: { ns: [4096], vs: [32000, 151936], dtypes: ['bfloat16'] },
    headline: { ns: [8192, 16384], vs: [151936], dtypes: ['bfloat16'] },
    smoke: { ns: [64], vs: [1000, 4099], dtypes: ['float32', 'bfloat16'] },
  }[o.mode] as { ns: number[]; vs: number[]; dtypes: ('float32' | 'bfloat16')[] };
  const { ns, vs, dtypes } = shapes;
  for (const n of ns)
    for (const v of vs)
      for (const dtype of dtypes) {
        const elem = ELEM[dtype]!;
        const nv = n * v * elem;
        const mem = await dev.memory();
        if (2 * nv + 2 ** 30 > mem.freeBytes) {
          console.log(`skip ${n}x${v} ${dtype}: needs ${mib(2 * nv)}, ${mib(mem.freeBytes)} free`);
          continue;
        }
        const logits = await randomDeviceLogits(dev, n, v, dtype, rng);
        const targets = await dev.upload(Int32Array.from({ length: n }, () => Math.floor(rng.next() * v)));
        const base = { impl: 'grpo-kernels', n, v, dtype };

        const fwd = await timeOp(dev, reps, () => gk.tokenLogProbs(logits, targets));
        add({ ...base, op: 'logprobs', ...fwd, bytes: nv, floor: '1 read' });
        const fwdH = await timeOp(dev, reps, () => gk.tokenLogProbs(logits, targets, { entropy: true }));
        add({ ...base, op: 'logprobs+entropy', ...fwdH, bytes: nv, floor: '1 read' });

        const fw = await gk.tokenLogProbs(logits, targets);
        const gl = await dev.upload(Float32Array.from({ length: n }, () => rng.normal()));
        const bwd = await timeOp(dev, reps, async () => (await gk.tokenLogProbsBackward(logits, targets, { gradLogp: gl }, { lse: fw.lse })).dispose());
        add({ ...base, op: 'logprobs backward', ...bwd, bytes: 2 * nv, floor: '1 read + 1 write' });

        // Fused GRPO loss + gradient: S sequences of L = 1024 tokens.
        const l = n % 1024 === 0 ? 1024 : n;
        const s = n / l;
        const lp = (await fw.logp.toArray()) as Float32Array;
        const old = await dev.upload(Float32Array.from(lp, (x) => x + (rng.next() - 0.5) * 0.1));
        const ref = await dev.upload(Float32Array.from(lp, (x) => x + (rng.next() - 0.5) * 0.1));
        const adv = await dev.upload(Float32Array.from({ length: s }, () => rng.normal()));
        const inputs = { logits, targets, advantages: adv, oldLogp: old, refLogp: ref };
        await dev.synchronize();
        const live = (await dev.memory()).usedBytes;
        await dev.resetPeakMemory();
        const fused = await timeOp(dev, reps, async () => {
          const r = await gk.grpoLoss(inputs, { beta: 0.04 });
          r.gradLogits.dispose();
          r.logp.dispose();
          r.entropy.dispose();
        });
        const peak = (await dev.memory()).peakBytes;
        // Beyond the live inputs: the gradient (N·V) and the op's O(N) outputs and scratch.
        add({ ...base, op: 'grpo loss+grad (fused)', ...fused, bytes: 3 * nv, floor: '2 reads + 1 write', extraBytes: peak - live - nv });
        for (const t of [fw.logp, fw.lse, gl, old, ref, adv]) t.dispose();

        if (n <= 8192 || o.mode === 'quick') {
          const sample = await timeOp(dev, reps, async () => {
            const r = await gk.sampleTokens(logits, { seed: 1 });
            r.tokens.dispose();
            r.logp.dispose();
            r.logpTruncated.dispose();
          });
          add({ ...base, op: 'sample', ...sample, bytes: nv, floor: '1 read' });
          const sampleTop = await timeOp(dev, smoke ? 1 : quick ? 2 : 5, async () => {
            const r = await gk.sampleTokens(logits, { seed: 1, topK: 50, topP: 0.9 });
            r.tokens.dispose();
            r.logp.dispose();
            r.logpTruncated.dispose();
          });
          add({ ...base, op: 'sample topK 50 topP 0.9', ...sampleTop, bytes: nv, floor: '1 read' });
        }
        targets.dispose();

        // Distillation at N = 8192 (student = these logits' first 8192 rows' worth, teacher a second tensor).
        if (n === ns[0]) {
          const nd = smoke ? 64 : 8192;
          if (3 * nd * v * elem + 2 ** 30 < (await dev.memory()).freeBytes) {
            const student = await randomDeviceLogits(dev, nd, v, dtype, rng);
            const teacher = await randomDeviceLogits(dev, nd, v, dtype, rng);
            const nvd = nd * v * elem;
            for (const divergence of ['forwardKL', 'jsd'] as const) {
              const d = await timeOp(dev, reps, async () => {
                const r = await gk.distillationLoss({ student, teacher }, { divergence });
                r.gradStudent?.dispose();
              });
              add({ ...base, n: nd, op: `distill ${divergence}+grad`, ...d, bytes: 3 * nvd, floor: '1 read of each + 1 write' });
            }
            student.dispose();
            teacher.dispose();
          }
        }
        logits.dispose();
        await dev.synchronize();
      }

  // 2. The PyTorch peers on the same GPU, with the agreement check on shared inputs.
  if (!o.noPeers && !smoke) {
    result.peers = await runPeers(dev, o, rng);
    save();
  }
  result.partial = false;
  save();
  console.log(`results: ${path.relative(process.cwd(), outFile)}`);
  if (smoke) return;
  const chart = outFile.replace(/\.json$/, '.svg');
  try {
    await writeChart(chart, result);
    console.log(`chart:   ${path.relative(process.cwd(), chart)}`);
  } catch (e) {
    // A GPU host may carry the package without the charting libraries.
    console.log(`chart:   not drawn here (${(e as Error).message.split('\n')[0]}); draw it with \`node dist/bench/chart.js ${path.relative(process.cwd(), outFile)}\``);
  }
}

export interface CudaResult {
  device: string;
  copyGbs: number;
  rows: CudaRow[];
  peers: unknown;
}

interface PeerRow {
  op: string;
  impl: string;
  n: number;
  v: number;
  dtype: string;
  ms: number | null;
  gbs: number | null;
  error?: string | null;
}

const SAME_WORK: Record<string, string> = {
  logprobs: 'logprobs',
  'grpo loss+grad (fused)': 'grpo',
  'distill forwardKL+grad': 'distill',
  sample: 'sample',
};

/** The SVG chart of a CUDA result: achieved GB/s per kernel and shape, ours and the peers', with the copy bandwidth as a rule. */
export async function writeChart(file: string, r: CudaResult): Promise<void> {
  const { device, copyGbs, rows, peers } = r;
  const peerRows = ((peers as { results?: PeerRow[] } | null)?.results ?? []).filter((r) => r.gbs !== null && !r.error);
  const values = [
    // Our rows under the peers' kernel names where the work is the same.
    ...rows.map((r) => ({ kernel: SAME_WORK[r.op] ?? r.op, shape: `${r.n}x${r.v} ${r.dtype}`, impl: r.impl, gbs: r.gbs })),
    ...peerRows.map((r) => ({ kernel: r.op, shape: `${r.n}x${r.v} ${r.dtype}`, impl: r.impl, gbs: r.gbs })),
  ];
  await writeVegaLite(file, {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: `Achieved bandwidth against the floor's bytes, ${device} (copy: ${copyGbs.toFixed(0)} GB/s)`,
    background: 'white',
    data: { values },
    facet: { row: { field: 'kernel', type: 'nominal', title: null } },
    spec: {
      width: 720,
      height: 160,
      layer: [
        {
          mark: 'bar',
          encoding: {
            x: { field: 'shape', type: 'nominal', title: null },
            xOffset: { field: 'impl' },
            y: { field: 'gbs', type: 'quantitative', title: 'GB/s' },
            color: { field: 'impl', type: 'nominal', title: null },
          },
        },
        { mark: { type: 'rule', strokeDash: [4, 4] }, encoding: { y: { datum: copyGbs } } },
      ],
    },
    resolve: { scale: { x: 'independent' } },
  });
}

/** Writes small shared cases (inputs and our outputs) for the peers' agreement check, then runs peers.py. */
async function runPeers(dev: gk.Device, o: CudaBenchOptions, rng: Rng): Promise<unknown> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-peers-'));
  const manifest: unknown[] = [];
  const write = (name: string, a: ArrayBufferView) => {
    fs.writeFileSync(path.join(dir, name), Buffer.from(a.buffer, a.byteOffset, a.byteLength));
    return name;
  };
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const n = 512;
    const v = 32000;
    const f = Float32Array.from({ length: n * v }, () => rng.normal() * 2);
    const raw = dtype === 'float32' ? f : gk.toBFloat16(f);
    const logits = await dev.upload(raw, { dtype, shape: [n, v] });
    const targets = BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rng.next() * v)));
    const dT = await dev.upload(targets);
    const fw = await gk.tokenLogProbs(logits, dT);
    const logp = (await fw.logp.toArray()) as Float32Array;
    const lf = write(`logits-${dtype}.bin`, raw);
    const tf = write(`targets-${dtype}.bin`, targets);
    manifest.push({
      op: 'logprobs', n, v, dtype,
      inputs: { logits: { file: lf, dtype, shape: [n, v] }, targets: { file: tf, dtype: 'int64', shape: [n] } },
      outputs: { logp: { file: write(`logp-${dtype}.bin`, logp), dtype: 'float32', shape: [n] } },
      options: { temperature: 1, ignoreIndex: -100 }, scalars: {},
    });
    const s = 4;
    const old = Float32Array.from(logp, (x) => x + (rng.next() - 0.5) * 0.1);
    const ref = Float32Array.from(logp, (x) => x + (rng.next() - 0.5) * 0.1);
    const adv = Float32Array.from({ length: s }, () => rng.normal());
    const r = await gk.grpoLoss({ logits, targets: dT, advantages: adv, oldLogp: old, refLogp: ref }, { beta: 0.04, epsilonLow: 0.2, epsilonHigh: 0.2, klEstimator: 'k3', aggregation: 'seqMeanTokenMean' });
    manifest.push({
      op: 'grpo', n, v, dtype,
      inputs: {
        logits: { file: lf, dtype, shape: [n, v] }, targets: { file: tf, dtype: 'int64', shape: [n] },
        oldLogp: { file: write(`old-${dtype}.bin`, old), dtype: 'float32', shape: [n] },
        refLogp: { file: write(`ref-${dtype}.bin`, ref), dtype: 'float32', shape: [n] },
        advantages: { file: write(`adv-${dtype}.bin`, adv), dtype: 'float32', shape: [s] },
        seqLengths: { file: write(`len-${dtype}.bin`, BigInt64Array.from({ length: s }, () => BigInt(n / s))), dtype: 'int64', shape: [s] },
      },
      outputs: { grad: { file: write(`grad-${dtype}.bin`, (await r.gradLogits.toArray()) as ArrayBufferView), dtype, shape: [n, v] } },
      options: { epsilonLow: 0.2, epsilonHigh: 0.2, beta: 0.04, klEstimator: 'k3', aggregation: 'seqMeanTokenMean' },
      scalars: { loss: r.loss },
    });
    const teacherF = Float32Array.from({ length: n * v }, () => rng.normal() * 2);
    const teacherRaw = dtype === 'float32' ? teacherF : gk.toBFloat16(teacherF);
    const teacher = await dev.upload(teacherRaw, { dtype, shape: [n, v] });
    for (const divergence of ['forwardKL', 'reverseKL', 'jsd'] as const) {
      const d = await gk.distillationLoss({ student: logits, teacher }, { divergence, beta: 0.5 });
      manifest.push({
        op: 'distill', n, v, dtype,
        inputs: { student: { file: lf, dtype, shape: [n, v] }, teacher: { file: write(`teacher-${dtype}.bin`, teacherRaw), dtype, shape: [n, v] } },
        outputs: { grad: { file: write(`dgrad-${divergence}-${dtype}.bin`, (await d.gradStudent!.toArray()) as ArrayBufferView), dtype, shape: [n, v] } },
        options: { divergence, beta: 0.5, temperature: 1 },
        scalars: { loss: d.loss },
      });
      d.gradStudent!.dispose();
    }
    for (const t of [logits, dT, fw.logp, fw.lse, r.gradLogits, r.logp, r.entropy, teacher]) t.dispose();
  }
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2));
  const outJson = path.join(dir, 'peers.json');
  const py = o.python ?? 'python3';
  const script = path.resolve(__dirname, '..', '..', 'bench', 'peers', 'peers.py');
  // The spec's gradient tolerance for bfloat16 (docs/grpo-math.md): a correctly rounded bf16
  // gradient alone is ~1.5e-3 from the float64 one.
  const args = [script, '--out', outJson, '--check-dir', dir, '--grad-tol-16bit', '8e-3', ...(o.mode !== 'full' ? ['--quick'] : []), ...(o.noCompile ? ['--no-compile'] : [])];
  console.log(`\npeers: ${py} ${args.map((a) => path.relative(process.cwd(), a) || a).join(' ')}`);
  const run = spawnSync(py, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (run.status !== 0 || !fs.existsSync(outJson)) {
    console.log(`peers: failed (exit ${run.status}${run.error ? `, ${run.error.message}` : ''}); the JSON records it`);
    return { error: `peers.py exit ${run.status}${run.error ? `: ${run.error.message}` : ''}` };
  }
  const peers = JSON.parse(fs.readFileSync(outJson, 'utf8')) as {
    checks?: { op: string; case: string; quantity: string; rel_err: number | null; tol: number; ok: boolean; detail?: string }[];
  };
  for (const c of peers.checks ?? [])
    console.log(
      `agreement ${c.op.padEnd(9)} ${String(c.case).padEnd(28)} ${c.quantity.padEnd(6)} rel err ${c.rel_err === null ? 'n/a' : c.rel_err.toExponential(2)}` +
        ` (tol ${c.tol}) ${c.ok ? 'ok' : `MISMATCH${c.detail ? ` ${c.detail}` : ''}`}`,
    );
  fs.rmSync(dir, { recursive: true, force: true });
  return peers;
}
