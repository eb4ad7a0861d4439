// Cross-backend checks, run by `grpo-kernels selftest --device cuda` after the device-runtime
// checks (device-cases.ts): every op runs through the public API on the CPU backend (host
// tensors) and on the GPU (device tensors, some of them wrapped at an element offset so that
// rows start off a 16-byte boundary) with the same inputs, and the results are compared with
// the CPU's:
//  * sampleTokens: every token identical (spec §8: the same seed, row and step draw the same
//    token on every backend), log-probs within 2e-6 (relative, per element);
//  * groupAdvantages: combined rewards, group means/stds and advantages bit-identical (scale
//    'batch': advantages within 1e-6, the batch std is a parallel sum), the same zero-variance
//    count;
//  * bradleyTerryLoss: gradients within 1 float ulp, loss and mean margin within 1e-12, accuracy
//    exact;
//  * tokenLogProbs(+Backward), grpoLoss (from log-probs and fused from logits),
//    distillationLoss: values within docs/grpo-math.md's tolerances of the CPU's (1e-5;
//    gradients 1e-5 / 1e-3 / 8e-3 by dtype), NaN/inf exactly where the CPU has them;
//  * errors: the same code and index (row) as the CPU, and the same message where both come
//    from native code (non-finite rows); a failed in-place op leaves the buffer as the CPU does;
//  * determinism: the GPU runs every op twice; the outputs must be bit-identical.
// Every output element is compared, so an element a kernel leaves unwritten fails (device
// memory is uninitialised; the emulator fills it with 0xFF, NaN in every float dtype).
// When a value check fails, its detail also gives each backend's distance to the float64
// reference (which backend is off: the spec's tolerances are relative to float64).
// The sizes take every kernel layout past one full grid (grid-stride loops): computed from the
// multiprocessor count (the emulator's EMU_SM_COUNT, default 2; on a real GPU an upper bound).
import * as gk from '../../lib/index';
import type { FloatDType } from '../../lib/index';
import type { CaseResult, Check } from './cases';
import { compare, lossCheck, TOLERANCE } from './cases';
import { refDistill } from './distill';
import { refGrpoLossFromLogits } from './fused';
import { refTokenLogProbs, refTokenLogProbsBackward } from './logprobs';
import { refGrpoLoss } from './loss';
import { Rng } from './random';

type HostArray = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;
type Logits = Float32Array | Uint16Array;

const DT: FloatDType[] = ['float32', 'bfloat16', 'float16'];
const SHORT: Record<FloatDType, string> = { float32: 'f32', bfloat16: 'bf16', float16: 'f16' };
const BYTES: Record<FloatDType, number> = { float32: 4, bfloat16: 2, float16: 2 };

// ------------------------------------------------------------------------------------------------
// Comparisons.

function ok(label: string, pass: boolean, detail?: string): Check {
  return { label, err: pass ? 0 : Infinity, tol: 0, pass, ...(pass ? {} : { detail: detail ?? 'failed' }) };
}

function bytes(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function show(a: HostArray, i: number): string {
  return a instanceof Uint16Array ? `0x${a[i]!.toString(16)}` : String(a[i]);
}

/** Bit-for-bit equality of two arrays of the same type (err: the count of differing elements). */
function sameBits(label: string, got: HostArray, want: HostArray): Check {
  if (got.length !== want.length || got.BYTES_PER_ELEMENT !== want.BYTES_PER_ELEMENT)
    return ok(label, false, `length ${got.length} != ${want.length}`);
  const a = bytes(got);
  const b = bytes(want);
  const w = got.BYTES_PER_ELEMENT;
  let count = 0;
  let first = -1;
  for (let i = 0; i < a.length; i += w) {
    for (let k = 0; k < w; k++) {
      if (a[i + k] !== b[i + k]) {
        if (first < 0) first = i / w;
        count++;
        break;
      }
    }
  }
  return {
    label, err: count, tol: 0, pass: count === 0,
    ...(count ? { detail: `${count} of ${got.length} elements differ; first [${first}]: ${show(got, first)} vs ${show(want, first)}` } : {}),
  };
}

/** Several outputs of two runs, bit for bit, as one check. */
function sameRuns(label: string, a: HostArray[], b: HostArray[]): Check {
  for (let i = 0; i < a.length; i++) {
    const c = sameBits(label, a[i]!, b[i]!);
    if (!c.pass) return { ...c, detail: `output ${i}: ${c.detail}` };
  }
  return ok(label, true);
}

function floats(a: HostArray, dtype: FloatDType = 'float32'): Float32Array | Float64Array {
  if (a instanceof Uint16Array) return gk.decodeFloats(a, dtype);
  return a as Float32Array | Float64Array;
}

/** ‖gpu − cpu‖ / ‖cpu‖ within tol, NaN/inf exactly where the CPU has them. */
function vsCpu(label: string, gpu: HostArray, cpu: HostArray, tol: number, dtype: FloatDType = 'float32'): Check {
  return compare(label, floats(gpu, dtype), floats(cpu, dtype), tol);
}

/** |gpu − cpu| <= tol · max(1, |cpu|) for every element, NaN exactly where the CPU has NaN (err: the largest ratio · tol). */
function perElement(label: string, gpu: Float32Array, cpu: Float32Array, tol: number): Check {
  let worst = 0;
  let where = -1;
  for (let i = 0; i < cpu.length; i++) {
    const g = gpu[i]!;
    const c = cpu[i]!;
    let e: number;
    if (Number.isFinite(g) && Number.isFinite(c)) e = Math.abs(g - c) / Math.max(1, Math.abs(c));
    else e = g === c || (Number.isNaN(g) && Number.isNaN(c)) ? 0 : Infinity; // NaN and ±inf exactly as the CPU
    if (e > worst) {
      worst = e;
      where = i;
    }
  }
  const pass = worst <= tol;
  return { label, err: worst, tol, pass, ...(pass ? {} : { detail: `element ${where}: gpu ${gpu[where]} cpu ${cpu[where]}` }) };
}

/** |gpu − cpu| <= tol · max(|cpu|, floor) (or equal), NaN/inf exactly as the CPU. */
function scalar(label: string, gpu: number | undefined, cpu: number | undefined, tol: number, floor = 1e-6): Check {
  if (gpu === undefined || cpu === undefined) return ok(label, gpu === cpu, `gpu ${gpu} cpu ${cpu}`);
  if (!Number.isFinite(gpu) || !Number.isFinite(cpu)) return ok(label, Object.is(gpu, cpu) || (Number.isNaN(gpu) && Number.isNaN(cpu)), `gpu ${gpu} cpu ${cpu}`);
  const err = gpu === cpu ? 0 : Math.abs(gpu - cpu) / Math.max(Math.abs(cpu), floor);
  return { label, err, tol, pass: err <= tol, ...(err <= tol ? {} : { detail: `gpu ${gpu} cpu ${cpu}` }) };
}

interface Failure {
  code: string;
  index: number | undefined;
  message: string;
}
type Outcome<T> = { ok: T; err?: undefined } | { ok?: undefined; err: Failure };

async function settle<T>(p: Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: await p };
  } catch (e) {
    const x = e as { code?: string; index?: number; message?: string };
    return { err: { code: String(x.code), index: x.index, message: String(x.message ?? e) } };
  }
}

function describeOutcome(o: Outcome<unknown>): string {
  return o.err ? `${o.err.code} index ${o.err.index}: ${o.err.message}` : 'success';
}

/** The GPU failed as the CPU did: code and index (and message, where both are native). */
function sameFailure(label: string, gpu: Outcome<unknown>, cpu: Outcome<unknown>, message: boolean): Check[] {
  if (!gpu.err || !cpu.err) return [ok(label, false, `gpu ${describeOutcome(gpu)}; cpu ${describeOutcome(cpu)}`)];
  const checks = [
    ok(`${label}: code`, gpu.err.code === cpu.err.code, `gpu ${gpu.err.code}, cpu ${cpu.err.code}`),
    ok(`${label}: index`, gpu.err.index === cpu.err.index, `gpu ${gpu.err.index}, cpu ${cpu.err.index}`),
  ];
  if (message) checks.push(ok(`${label}: message`, gpu.err.message === cpu.err.message, `gpu "${gpu.err.message}", cpu "${cpu.err.message}"`));
  return checks;
}

/** Outcomes that should both have succeeded: a failing check naming the failure, else null. */
function bothOk(gpu: Outcome<unknown>, cpu: Outcome<unknown>): Check | null {
  if (!gpu.err && !cpu.err) return null;
  return ok('both succeed', false, `gpu ${describeOutcome(gpu)}; cpu ${describeOutcome(cpu)}`);
}

type Triple = () => [gpu: ArrayLike<number>, cpu: ArrayLike<number>, f64: ArrayLike<number>];

/**
 * For each failed check named in `refs`, appends both backends' distance to the float64
 * reference to its detail (the reference is computed only then).
 */
function explain(checks: Check[], refs: Record<string, Triple>): Check[] {
  for (const c of checks) {
    const f = refs[c.label];
    if (c.pass || !f) continue;
    try {
      const [g, cpu, ref] = f();
      const e = (x: ArrayLike<number>) => compare('', x, ref, 1).err.toExponential(2);
      c.detail = `${c.detail ? `${c.detail}; ` : ''}vs float64: gpu ${e(g)}, cpu ${e(cpu)}`;
    } catch (err) {
      c.detail = `${c.detail ?? ''} (float64 reference failed: ${(err as Error).message})`;
    }
  }
  return checks;
}

function once<T>(f: () => T): () => T {
  let v: { x: T } | undefined;
  return () => (v ??= { x: f() }).x;
}

/** Float32 ulps between two floats (0 for equal bits; NaN vs NaN counts as 0). */
function ulps(a: number, b: number): number {
  if (Number.isNaN(a) && Number.isNaN(b)) return 0;
  const f = new Float32Array([a, b]);
  const i = new Int32Array(f.buffer);
  const key = (x: number) => (x < 0 ? -2147483648 - x : x);
  return Math.abs(key(i[0]!) - key(i[1]!));
}

// ------------------------------------------------------------------------------------------------
// Device memory of one case, disposed when it ends.

class Scope {
  readonly tensors: gk.Tensor[] = [];
  track<T extends gk.Tensor | undefined>(t: T): T {
    if (t) this.tensors.push(t);
    return t;
  }
  dispose(): void {
    for (const t of this.tensors.reverse()) t.dispose();
    this.tensors.length = 0;
  }
}

interface Ctx {
  dev: gk.Device;
  full: boolean;
  rows: WaveRows;
  add: (op: string, name: string, f: (rng: Rng, scope: Scope) => Promise<Check[]>) => Promise<void>;
}

/**
 * Logits on the device, `offset` elements past the start of an allocation (offset > 0: every
 * row start is off its natural 16-byte alignment when V is a multiple of 16 bytes; the elements
 * before and after hold NaN bits, so a read outside the tensor shows).
 */
async function put(ctx: Ctx, scope: Scope, data: Logits, dtype: FloatDType, shape: number[], offset = 0): Promise<gk.Tensor> {
  if (offset === 0) return scope.track(await ctx.dev.upload(data, { dtype, shape }));
  const padded = data instanceof Float32Array ? new Float32Array(data.length + offset + 8) : new Uint16Array(data.length + offset + 8);
  bytes(padded).fill(0xff);
  padded.set(data, offset);
  const base = scope.track(await ctx.dev.upload(padded, { dtype }));
  const ptr = await base.pointer();
  return scope.track(ctx.dev.wrap(ptr + BigInt(offset * BYTES[dtype]), { shape, dtype }));
}

function host(data: HostArray, dtype: gk.DType, shape: number[]): gk.Tensor {
  return gk.Tensor.from(data, { dtype, shape });
}

async function read(t: gk.Tensor): Promise<HostArray> {
  return (await t.toArray()) as HostArray;
}

// ------------------------------------------------------------------------------------------------
// Sizes.

/** Rows that take each kernel layout past one full grid, from the multiprocessor count. */
export interface WaveRows {
  /** Log-prob kernels, a row per warp (V <= 2048): 8 rows per block, <= 8 blocks per SM, 4 waves. */
  warp: number;
  /** Log-prob kernels, a row per 256-thread block (V <= 32768): <= 8 blocks per SM, 4 waves. */
  block: number;
  /** Log-prob kernels with 512-thread rows, and sampling (one row per block, <= 16 blocks per SM). */
  wide: number;
  /** Loss kernels, one block per sequence: <= 8 blocks per SM. */
  seq: number;
}

export function waveRows(): WaveRows {
  const emulated = (gk.backendInfo().cuda as { emulated?: boolean }).emulated === true;
  // The emulator reports EMU_SM_COUNT multiprocessors (default 2); a real GPU at most ~160.
  const sms = emulated ? Math.max(1, Number.parseInt(process.env.EMU_SM_COUNT ?? '', 10) || 2) : 160;
  return { warp: 256 * sms + 37, block: 32 * sms + 5, wide: 16 * sms + 3, seq: 8 * sms + 3 };
}

function bigSeed(rng: Rng): number {
  return rng.int(0, 2 ** 21) * 2 ** 32 + rng.int(0, 2 ** 32);
}

// ------------------------------------------------------------------------------------------------
// §8 sampling.

type Pattern = 'normal' | 'ties' | 'masked' | 'peaked' | 'wide';

interface BadRows {
  ninf?: number;
  nan?: number;
  inf?: number;
}

/**
 * Sampling logits: row scale varies (every 3rd row 4x wider); 'ties' rounds to multiples of 0.5
 * (many exact ties); 'masked' puts ~30% of the entries at -inf; 'peaked' adds +12 to ~1% of the
 * entries; 'wide' has std 30 (most e_i underflow). Bad rows: all -inf, a NaN, a +inf.
 */
function sampleLogits(rng: Rng, n: number, v: number, pattern: Pattern, bad: BadRows = {}): Float32Array {
  const f = new Float32Array(n * v);
  for (let r = 0; r < n; r++) {
    const scale = r % 3 === 1 ? 8 : 2;
    for (let j = 0; j < v; j++) {
      const g = rng.normal();
      let x: number;
      if (pattern === 'ties') x = Math.round(g * 4) * 0.5;
      else if (pattern === 'masked') x = rng.next() < 0.3 ? -Infinity : g * 3;
      else if (pattern === 'peaked') x = g + (rng.next() < 0.01 ? 12 : 0);
      else if (pattern === 'wide') x = g * 30;
      else x = g * scale;
      f[r * v + j] = x;
    }
  }
  if (bad.ninf !== undefined) f.fill(-Infinity, bad.ninf * v, (bad.ninf + 1) * v);
  if (bad.nan !== undefined) f[bad.nan * v + (v >> 1)] = NaN;
  if (bad.inf !== undefined) f[bad.inf * v + Math.floor(v / 3)] = Infinity;
  return f;
}

interface SampleOpt {
  name: string;
  o: gk.SampleTokensOptions;
}

const SAMPLE_OPTS: SampleOpt[] = [
  { name: 'plain', o: {} },
  { name: 'greedy', o: { greedy: true } },
  { name: 'topK=1', o: { topK: 1 } },
  { name: 'topK=50', o: { topK: 50 } },
  { name: 'topP=0.1', o: { topP: 0.1 } },
  { name: 'topP=0.9', o: { topP: 0.9 } },
  { name: 'minP=0.05', o: { minP: 0.05 } },
  { name: 'K40,P.8,m.02', o: { topK: 40, topP: 0.8, minP: 0.02 } },
  { name: 'K7,P.6', o: { topK: 7, topP: 0.6 } },
];
const PLAIN = SAMPLE_OPTS[0]!;

interface SampleCase {
  n: number;
  v: number;
  dtype: FloatDType;
  pattern?: Pattern;
  temp?: number;
  off?: number;
  ids?: boolean;
  opt: SampleOpt;
  bad?: BadRows;
}

async function sampleCase(ctx: Ctx, c: SampleCase): Promise<void> {
  const pattern = c.pattern ?? 'normal';
  const temp = c.temp ?? 1;
  const off = c.off ?? 0;
  const badRows = c.bad ? ` bad rows -inf ${c.bad.ninf ?? '-'} nan ${c.bad.nan ?? '-'} +inf ${c.bad.inf ?? '-'}` : '';
  const name = `${SHORT[c.dtype]} N=${c.n} V=${c.v} ${c.opt.name} ${pattern} T=${temp}${off ? ` off=${off}` : ''}${c.ids ? ' rowIds' : ''}${badRows}`;
  await ctx.add('sampleTokens', name, async (rng, scope) => {
    const data = gk.encodeFloats(sampleLogits(rng, c.n, c.v, pattern, c.bad), c.dtype);
    const o: gk.SampleTokensOptions = { ...c.opt.o, temperature: temp, seed: bigSeed(rng), step: rng.int(0, 97) };
    if (c.ids) o.rowIds = Array.from({ length: c.n }, () => rng.int(0, 2 ** 31) * 512 + rng.int(0, 512));
    else o.rowOffset = rng.int(0, 2 ** 20) * 1031;
    const cpuRun = await settle(gk.sampleTokens(host(data, c.dtype, [c.n, c.v]), o));
    const x = await put(ctx, scope, data, c.dtype, [c.n, c.v], off);
    const gpuRuns: Outcome<HostArray[]>[] = [];
    for (let k = 0; k < 2; k++) {
      const r = await settle(gk.sampleTokens(x, o));
      if (r.err) gpuRuns.push(r);
      else {
        for (const t of [r.ok.tokens, r.ok.logp, r.ok.logpTruncated]) scope.track(t);
        gpuRuns.push({ ok: [await read(r.ok.tokens), await read(r.ok.logp), await read(r.ok.logpTruncated)] });
      }
    }
    const [g1, g2] = gpuRuns as [Outcome<HostArray[]>, Outcome<HostArray[]>];
    if (cpuRun.err) return [...sameFailure('error', g1, cpuRun, true), ...sameFailure('run twice: same error', g2, g1, true)];
    const fail = bothOk(g1, cpuRun) ?? bothOk(g2, cpuRun);
    if (fail) return [fail];
    const [tok, lp, lt] = g1.ok! as [Int32Array, Float32Array, Float32Array];
    const ct = (cpuRun.ok!.tokens.data as Int32Array);
    let differ = 0;
    const rows: string[] = [];
    for (let r = 0; r < c.n; r++) {
      if (tok[r] !== ct[r]) {
        differ++;
        if (rows.length < 4) rows.push(`row ${r}: gpu ${tok[r]} cpu ${ct[r]}`);
      }
    }
    return [
      { label: 'tokens identical', err: differ, tol: 0, pass: differ === 0, ...(differ ? { detail: `${differ} of ${c.n} differ (${rows.join('; ')})` } : {}) },
      perElement('logp', lp, cpuRun.ok!.logp.data as Float32Array, 2e-6),
      perElement('logpTruncated', lt, cpuRun.ok!.logpTruncated.data as Float32Array, 2e-6),
      sameRuns('run twice: bit-identical', g2.ok!, g1.ok!),
    ];
  });
}

async function samplingChecks(ctx: Ctx): Promise<void> {
  const { full, rows } = ctx;
  const opt = (i: number) => SAMPLE_OPTS[i % SAMPLE_OPTS.length]!;
  await sampleCase(ctx, { n: 0, v: 1000, dtype: 'bfloat16', opt: PLAIN });
  let k = 0;
  for (const dtype of DT) {
    const d = DT.indexOf(dtype);
    // Tiny vocabularies: every option (full) or a rotation of them (quick), N = 64.
    for (const v of [1, 2, 7, 33]) {
      const opts = full ? SAMPLE_OPTS : [opt(k)];
      for (const o of opts) {
        k++;
        await sampleCase(ctx, { n: 64, v, dtype, opt: o, off: k % 2, ids: k % 3 === 0, temp: [1, 0.7, 1.3][k % 3]! });
      }
    }
    await sampleCase(ctx, { n: 1, v: 151936, dtype, opt: PLAIN, off: 1 });
    // Grid-stride: more rows than one grid of the 128-thread and the 512-thread layouts.
    await sampleCase(ctx, { n: rows.wide, v: 1, dtype, opt: PLAIN });
    await sampleCase(ctx, { n: rows.wide, v: 33, dtype, opt: opt(d + 7), temp: 0.7, off: 1, ids: true });
    await sampleCase(ctx, { n: rows.wide, v: 8193, dtype, opt: opt(d + 3), pattern: 'masked', off: d + 1 });
    await sampleCase(ctx, { n: full ? 200 : 64, v: 33, dtype, opt: SAMPLE_OPTS[7]!, pattern: 'ties' });
    // Medium vocabularies: every option on each (full), or three options, one per vocabulary (quick).
    const mids: [SampleOpt, number][] = full ? SAMPLE_OPTS.flatMap((o) => [[o, 0], [o, 1], [o, 2]] as [SampleOpt, number][]) : [[opt(d), 0], [opt(d + 3), 1], [opt(d + 6), 2]];
    for (const [o, shape] of mids) {
      if (shape === 0) await sampleCase(ctx, { n: full ? 257 : 80, v: 1000, dtype, opt: o, temp: 0.7, off: 1, ids: true });
      if (shape === 1) await sampleCase(ctx, { n: full ? 100 : 40, v: 4099, dtype, opt: o, pattern: 'ties' });
      if (shape === 2) await sampleCase(ctx, { n: full ? 50 : 24, v: 8193, dtype, opt: o, pattern: 'masked', temp: 1.3, off: 1, ids: true });
    }
    await sampleCase(ctx, { n: full ? 200 : 48, v: 8192, dtype, opt: PLAIN, pattern: 'peaked' });
    await sampleCase(ctx, { n: full ? 200 : 48, v: 8192, dtype, opt: SAMPLE_OPTS[5]!, pattern: 'wide', off: 1 });
    // Error rows: all -inf, a NaN, a +inf; the smallest bad row is named.
    await sampleCase(ctx, { n: 100, v: 1000, dtype, opt: PLAIN, bad: { ninf: 41, nan: 17, inf: 90 } });
    await sampleCase(ctx, { n: 60, v: 5000, dtype, opt: SAMPLE_OPTS[1]!, pattern: 'masked', off: 1, ids: true, bad: { ninf: 7, nan: 50, inf: 9 } });
    await sampleCase(ctx, { n: full ? 40 : 16, v: 40000, dtype, opt: SAMPLE_OPTS[7]!, bad: { ninf: full ? 30 : 14, inf: 13 } });
    if (full) {
      for (let i = 0; i < SAMPLE_OPTS.length; i++) {
        await sampleCase(ctx, { n: 48, v: 32000, dtype, opt: SAMPLE_OPTS[i]!, off: 1 });
        if (i % 3 === d) {
          const pattern = (['normal', 'ties', 'masked', 'peaked'] as const)[i % 4]!;
          await sampleCase(ctx, { n: 24, v: 151936, dtype, opt: SAMPLE_OPTS[i]!, pattern, off: i % 2, ids: i % 2 === 1 });
        }
      }
      await sampleCase(ctx, { n: 40, v: 151936, dtype, opt: PLAIN, pattern: 'peaked' });
      await sampleCase(ctx, { n: 40, v: 151936, dtype, opt: PLAIN, temp: 0.7, ids: true });
    }
  }
}

// ------------------------------------------------------------------------------------------------
// §1 token log-probs and their backward.

type Targets = Int32Array | BigInt64Array;

function makeTargets(rng: Rng, n: number, v: number, int64: boolean, ignored: number): Targets {
  const t = new Int32Array(n);
  for (let r = 0; r < n; r++) t[r] = rng.next() < ignored ? -100 : rng.int(0, v);
  return int64 ? BigInt64Array.from(t, (x) => BigInt(x)) : t;
}

function target(t: Targets, r: number): number {
  return Number(t[r]!);
}

/** Log-prob logits: row scale 2 (every 5th row 8); with `masked`, rows r % 7 == 3 get ~30% -inf entries (never the target). */
function lpLogits(rng: Rng, n: number, v: number, masked: boolean, y: Targets | null, bad: BadRows = {}): Float32Array {
  const f = new Float32Array(n * v);
  for (let r = 0; r < n; r++) {
    const scale = r % 5 === 1 ? 8 : 2;
    const yr = y ? target(y, r) : -1;
    for (let j = 0; j < v; j++) {
      let x = rng.normal() * scale;
      if (masked && r % 7 === 3 && j !== yr && rng.next() < 0.3) x = -Infinity;
      f[r * v + j] = x;
    }
  }
  if (bad.ninf !== undefined) f.fill(-Infinity, bad.ninf * v, (bad.ninf + 1) * v);
  if (bad.nan !== undefined) f[bad.nan * v + (v >> 1)] = NaN;
  return f;
}

interface LpCase {
  n: number;
  v: number;
  dtype: FloatDType;
  int64?: boolean;
  temp?: number;
  entropy?: boolean;
  masked?: boolean;
  inPlace?: boolean;
  /** Logits offset in elements (0: aligned). */
  off?: number;
  /** The backward gets lse (and entropy) from the forward; else it recomputes them. */
  stats?: boolean;
}

async function logProbCase(ctx: Ctx, c: LpCase): Promise<void> {
  const temp = c.temp ?? 1;
  const off = c.off ?? 0;
  const name = `${SHORT[c.dtype]} N=${c.n} V=${c.v} ${c.int64 ? 'i64' : 'i32'} T=${temp}${c.entropy ? ' +H' : ''}${c.masked ? ' -inf' : ''}` +
    `${c.inPlace ? ' in place' : ''}${off ? ` off=${off}` : ''} ${c.stats ? 'lse given' : 'recompute'}`;
  await ctx.add('tokenLogProbs', name, async (rng, scope) => {
    const shape = [c.n, c.v];
    const y = makeTargets(rng, c.n, c.v, !!c.int64, 0.1);
    const data = gk.encodeFloats(lpLogits(rng, c.n, c.v, !!c.masked, y), c.dtype);
    const gl = new Float32Array(c.n);
    const gh = new Float32Array(c.n);
    for (let r = 0; r < c.n; r++) {
      if (rng.next() < 0.1) continue; // gl = gh = 0: the row's gradient is 0
      gl[r] = rng.normal();
      gh[r] = 0.3 * rng.normal();
    }
    const fwdOpts = { temperature: temp, entropy: !!c.entropy, sumP2: !!c.entropy };
    const grads = { gradLogp: gl, ...(c.entropy ? { gradEntropy: gh } : {}) };

    // CPU: host tensors (a copy of the logits, which the in-place backward overwrites).
    const hx = host(data.slice(), c.dtype, shape);
    const cf = await gk.tokenLogProbs(hx, y, fwdOpts);
    const cg = await gk.tokenLogProbsBackward(hx, y, grads, {
      temperature: temp, inPlace: !!c.inPlace, ...(c.stats ? { lse: cf.lse, ...(c.entropy ? { entropy: cf.entropy! } : {}) } : {}),
    });
    const cpuGrad = cg.data as HostArray;

    // GPU: forward twice, backward twice (in place: on a fresh copy each time).
    const x = await put(ctx, scope, data, c.dtype, shape, off);
    const dy = scope.track(await ctx.dev.upload(y));
    const dgl = scope.track(await ctx.dev.upload(gl));
    const fwd: HostArray[][] = [];
    let stats: gk.TokenLogProbsResult | undefined;
    for (let k = 0; k < 2; k++) {
      const r = await gk.tokenLogProbs(x, dy, fwdOpts);
      for (const t of [r.logp, r.lse, r.entropy, r.sumP2]) scope.track(t);
      stats ??= r;
      fwd.push([await read(r.logp), await read(r.lse), ...(r.entropy ? [await read(r.entropy), await read(r.sumP2!)] : [])]);
    }
    const bwd: HostArray[] = [];
    let returnsLogits = true;
    for (let k = 0; k < 2; k++) {
      const xk = c.inPlace && k > 0 ? await put(ctx, scope, data, c.dtype, shape, off) : x;
      const g = await gk.tokenLogProbsBackward(xk, dy, { gradLogp: dgl, ...(c.entropy ? { gradEntropy: gh } : {}) }, {
        temperature: temp, inPlace: !!c.inPlace, ...(c.stats ? { lse: stats!.lse, ...(c.entropy ? { entropy: stats!.entropy! } : {}) } : {}),
      });
      if (c.inPlace) returnsLogits &&= g === xk;
      else scope.track(g);
      bwd.push(await read(g));
    }
    const vt = TOLERANCE[c.dtype].value;
    const values = once(() => Float64Array.from(gk.decodeFloats(data, c.dtype)));
    const rowOpts = { temperature: temp, ignoreIndex: -100 };
    const fwdRef = once(() => refTokenLogProbs(values(), c.n, c.v, y, rowOpts));
    const checks = [
      vsCpu('logp', fwd[0]![0]!, cf.logp.data as HostArray, vt),
      vsCpu('lse', fwd[0]![1]!, cf.lse.data as HostArray, vt),
      ...(c.entropy ? [vsCpu('entropy', fwd[0]![2]!, cf.entropy!.data as HostArray, vt), vsCpu('sumP2', fwd[0]![3]!, cf.sumP2!.data as HostArray, vt)] : []),
      vsCpu('grad', bwd[0]!, cpuGrad, TOLERANCE[c.dtype].grad, c.dtype),
      sameRuns('forward twice: bit-identical', fwd[1]!, fwd[0]!),
      sameBits('backward twice: bit-identical', bwd[1]!, bwd[0]!),
    ];
    if (c.inPlace) checks.push(ok('in place returns the logits tensor', returnsLogits));
    return explain(checks, {
      logp: () => [floats(fwd[0]![0]!), floats(cf.logp.data as HostArray), fwdRef().logp],
      entropy: () => [floats(fwd[0]![2]!), floats(cf.entropy!.data as HostArray), fwdRef().entropy],
      grad: () => [floats(bwd[0]!, c.dtype), floats(cpuGrad, c.dtype), refTokenLogProbsBackward(values(), c.n, c.v, y, gl, c.entropy ? gh : null, rowOpts)],
    });
  });
}

/**
 * Errors as the CPU reports them: bad targets (GK_TARGET_RANGE, smallest row) then, with the
 * targets fixed, checkFinite on a NaN row and an all -inf row (GK_NONFINITE, smallest row, the
 * CPU's message); without checkFinite both give NaN on exactly those rows.
 */
async function logProbErrorCase(ctx: Ctx, n: number, v: number, dtype: FloatDType): Promise<void> {
  await ctx.add('tokenLogProbs', `${SHORT[dtype]} N=${n} V=${v} errors: bad targets, then checkFinite (NaN row, all -inf row)`, async (rng, scope) => {
    const shape = [n, v];
    const y = makeTargets(rng, n, v, true, 0) as BigInt64Array;
    y[Math.floor(n / 3)] = BigInt(v);
    y[Math.floor(n / 2)] = -5n;
    y[n - 1] = -100n;
    const data = gk.encodeFloats(lpLogits(rng, n, v, false, null, { nan: Math.floor(n / 5), ninf: Math.floor(n / 4) }), dtype);
    const gl = new Float32Array(n).fill(1);
    const hx = host(data, dtype, shape);
    const x = await put(ctx, scope, data, dtype, shape, 1);
    const checks: Check[] = [];
    for (const pass of [0, 1]) {
      if (pass === 1) {
        y[Math.floor(n / 3)] = 0n;
        y[Math.floor(n / 2)] = 1n;
      }
      const dy = scope.track(await ctx.dev.upload(y));
      const label = pass === 0 ? 'bad targets' : 'checkFinite';
      // Host targets are checked in TypeScript, device targets on the GPU: code and row agree.
      const cf = await settle(gk.tokenLogProbs(hx, y, { checkFinite: true }));
      const gf = await settle(gk.tokenLogProbs(x, dy, { checkFinite: true }));
      checks.push(...sameFailure(`forward ${label}`, gf, cf, pass === 1));
      const cb = await settle(gk.tokenLogProbsBackward(hx, y, { gradLogp: gl }));
      const gb = await settle(gk.tokenLogProbsBackward(x, dy, { gradLogp: gl }));
      if (pass === 0) checks.push(...sameFailure('backward bad targets', gb, cb, false));
      else {
        const fail = bothOk(gb, cb);
        if (fail) checks.push(fail);
        else checks.push(vsCpu('backward grad (NaN rows as the CPU)', await read(scope.track(gb.ok!)), cb.ok!.data as HostArray, TOLERANCE[dtype].grad, dtype));
        const c0 = await gk.tokenLogProbs(hx, y);
        const g0 = await gk.tokenLogProbs(x, dy);
        for (const t of [g0.logp, g0.lse]) scope.track(t);
        checks.push(vsCpu('logp without checkFinite (NaN rows as the CPU)', await read(g0.logp), c0.logp.data as HostArray, TOLERANCE[dtype].value));
      }
    }
    return checks;
  });
}

async function logProbChecks(ctx: Ctx): Promise<void> {
  const { full, rows } = ctx;
  for (const dtype of DT) {
    await logProbCase(ctx, { n: 64, v: 1, dtype, int64: true, entropy: true, stats: true });
    await logProbCase(ctx, { n: rows.warp, v: 1, dtype, entropy: true, inPlace: true });
    await logProbCase(ctx, { n: 300, v: 33, dtype, temp: 0.7, entropy: true, masked: true, off: 1, stats: true });
    await logProbCase(ctx, { n: rows.warp, v: 33, dtype, int64: true, entropy: true, off: 2 });
    await logProbCase(ctx, { n: 257, v: 1000, dtype, int64: true, masked: true, inPlace: true, off: 1, stats: true });
    await logProbCase(ctx, { n: full ? 300 : 100, v: 2048, dtype, temp: 0.7, entropy: true, masked: true, off: 1 });
    await logProbCase(ctx, { n: Math.max(rows.block, full ? 300 : 0), v: 2049, dtype, int64: true, entropy: true, masked: true, off: 1, stats: true });
    await logProbCase(ctx, { n: Math.max(rows.block, full ? 200 : 0), v: 5000, dtype, int64: true, temp: 0.7, entropy: true, masked: true });
    await logProbCase(ctx, { n: rows.wide, v: 40000, dtype, entropy: true, masked: true, inPlace: true, off: 1 });
    await logProbErrorCase(ctx, 300, 1000, dtype);
    await logProbErrorCase(ctx, full ? 100 : 40, 5000, dtype);
    if (full) {
      await logProbCase(ctx, { n: 256, v: 32000, dtype, int64: true, entropy: true, masked: true, stats: true });
      await logProbCase(ctx, { n: 128, v: 32000, dtype, temp: 0.7, entropy: true, inPlace: true, off: 3 });
      await logProbCase(ctx, { n: 64, v: 151936, dtype, int64: true, entropy: true, masked: true, inPlace: true, stats: true });
      await logProbCase(ctx, { n: 48, v: 151936, dtype, temp: 0.7, entropy: true, off: 1 });
    }
  }
}

// ------------------------------------------------------------------------------------------------
// §3-5 the loss from log-probs.

interface LossData {
  s: number;
  n: number;
  offsets: number[];
  logp: Float32Array;
  oldLogp: Float32Array;
  refLogp: Float32Array;
  entropy: Float32Array;
  advantages: Float32Array;
  mask: Uint8Array;
  truncated: Uint8Array;
  /** §9.1: the engine's log-probs (oldLogp + noise); §9.3: one advantage per token. */
  samplerLogp: Float32Array;
  tokenAdvantages: Float32Array;
}

/** S packed sequences of minLen..maxLen rows (sequence 2 empty), ~10% of the rows masked, ~20% of the sequences truncated. */
function lossData(rng: Rng, s: number, maxLen: number, minLen = 1): LossData {
  const offsets = [0];
  for (let i = 0; i < s; i++) offsets.push(offsets[i]! + (i === 2 ? 0 : rng.int(minLen, maxLen + 1)));
  const n = offsets[s]!;
  const logp = Float32Array.from({ length: n }, () => -3 * rng.next() * rng.next());
  return {
    s, n, offsets, logp,
    oldLogp: Float32Array.from(logp, (x) => x + 0.2 * rng.normal()),
    refLogp: Float32Array.from(logp, (x) => x + 0.3 * rng.normal()),
    entropy: Float32Array.from({ length: n }, () => 4 * rng.next() * rng.next()),
    advantages: Float32Array.from({ length: s }, () => rng.normal()),
    mask: Uint8Array.from({ length: n }, () => (rng.next() < 0.9 ? 1 : 0)),
    truncated: Uint8Array.from({ length: s }, () => (rng.next() < 0.2 ? 1 : 0)),
    samplerLogp: new Float32Array(0),
    tokenAdvantages: Float32Array.from({ length: n }, () => rng.normal()),
  };
}

interface LossCase {
  name: string;
  s: number;
  maxLen: number;
  options: gk.GrpoLossOptions;
  old?: boolean;
  ref?: boolean;
  mask?: boolean;
  truncated?: boolean;
  nanEntropy?: 'some' | 'all';
  /** §9.1: pass samplerLogp = oldLogp + N(0, 0.3²). */
  sampler?: boolean;
  /** §9.3: one advantage per token. */
  perToken?: boolean;
}

function metricChecks(gpu: gk.GrpoLossMetrics, cpu: gk.GrpoLossMetrics, tol: number): Check[] {
  const keys = new Set([...Object.keys(cpu), ...Object.keys(gpu)]) as Set<keyof gk.GrpoLossMetrics>;
  return [...keys].map((k) => (k === 'tokens' ? ok('tokens', gpu.tokens === cpu.tokens, `gpu ${gpu.tokens} cpu ${cpu.tokens}`) : scalar(k, gpu[k], cpu[k], tol)));
}

function sameMetrics(label: string, a: { loss: number; metrics: gk.GrpoLossMetrics }, b: { loss: number; metrics: gk.GrpoLossMetrics }): Check {
  const x = JSON.stringify([a.loss, a.metrics], (_k, v: unknown) => (typeof v === 'number' ? String(v) : v));
  const y = JSON.stringify([b.loss, b.metrics], (_k, v: unknown) => (typeof v === 'number' ? String(v) : v));
  return ok(label, x === y, `${x} vs ${y}`);
}

async function lossCase(ctx: Ctx, c: LossCase): Promise<void> {
  await ctx.add('grpoLoss', `${c.name} S=${c.s} maxLen=${c.maxLen}`, async (rng, scope) => {
    const d = lossData(rng, c.s, c.maxLen);
    d.samplerLogp = Float32Array.from(c.old ? d.oldLogp : d.logp, (x) => x + 0.3 * rng.normal());
    const adv = c.perToken ? d.tokenAdvantages : d.advantages;
    if (c.nanEntropy === 'all') d.entropy.fill(NaN);
    else if (c.nanEntropy === 'some') for (let t = 0; t < d.n; t += 29) d.entropy[t] = NaN;
    const inputs = (via: (a: Float32Array | Uint8Array) => Float32Array | Uint8Array | gk.Tensor): gk.GrpoLossInputs => ({
      logp: via(d.logp) as Float32Array | gk.Tensor, entropy: via(d.entropy) as Float32Array | gk.Tensor,
      advantages: via(adv) as Float32Array | gk.Tensor, seqOffsets: d.offsets,
      ...(c.sampler ? { samplerLogp: via(d.samplerLogp) as Float32Array | gk.Tensor } : {}),
      ...(c.old ? { oldLogp: via(d.oldLogp) as Float32Array | gk.Tensor } : {}), ...(c.ref ? { refLogp: via(d.refLogp) as Float32Array | gk.Tensor } : {}),
      ...(c.mask ? { completionMask: via(d.mask) } : {}), ...(c.truncated ? { truncated: d.truncated } : {}),
    });
    const cpu = await settle(gk.grpoLoss(inputs((a) => a), c.options));
    // On the GPU: every per-token input a device tensor (the truncation flags stay on the host).
    const onDevice = new Map<Float32Array | Uint8Array, gk.Tensor>();
    for (const a of [d.logp, d.entropy, d.advantages, d.oldLogp, d.refLogp, d.mask, d.samplerLogp, d.tokenAdvantages]) onDevice.set(a, scope.track(await ctx.dev.upload(a)));
    const runs: gk.GrpoLossResult[] = [];
    const grads: HostArray[][] = [];
    for (let k = 0; k < 2; k++) {
      const r = await settle(gk.grpoLoss(inputs((a) => onDevice.get(a)!), c.options));
      const fail = bothOk(r, cpu);
      if (fail) return [fail];
      scope.track(r.ok!.gradLogp);
      scope.track(r.ok!.gradEntropy);
      runs.push(r.ok!);
      grads.push([await read(r.ok!.gradLogp), ...(r.ok!.gradEntropy ? [await read(r.ok!.gradEntropy)] : [])]);
    }
    const g = runs[0]!;
    const cg = cpu.ok!;
    const checks = [
      scalar('loss', g.loss, cg.loss, 1e-5),
      ...metricChecks(g.metrics, cg.metrics, 1e-5),
      vsCpu('gradLogp', grads[0]![0]!, cg.gradLogp.data as HostArray, 1e-5),
      ...(cg.gradEntropy ? [vsCpu('gradEntropy', grads[0]![1]!, cg.gradEntropy.data as HostArray, 1e-5)] : []),
      sameMetrics('run twice: loss and metrics identical', runs[1]!, g),
      sameRuns('run twice: gradients bit-identical', grads[1]!, grads[0]!),
    ];
    const ref = once(() => refGrpoLoss({
      logp: d.logp, entropy: d.entropy, advantages: adv, seqOffsets: d.offsets, mask: c.mask ? d.mask : null,
      oldLogp: c.old ? d.oldLogp : null, refLogp: c.ref ? d.refLogp : null, truncated: c.truncated ? d.truncated : null,
      samplerLogp: c.sampler ? d.samplerLogp : null,
    }, { ...cg.options }));
    return explain(checks, {
      loss: () => [[g.loss], [cg.loss], [ref().loss]],
      gradLogp: () => [floats(grads[0]![0]!), floats(cg.gradLogp.data as HostArray), ref().dlogp],
      gradEntropy: () => [floats(grads[0]![1]!), floats(cg.gradEntropy!.data as HostArray), ref().dentropy],
    });
  });
}

async function lossChecks(ctx: Ctx): Promise<void> {
  const { full, rows } = ctx;
  // More sequences than one grid of the per-sequence kernels.
  const s = Math.max(full ? 37 : 24, rows.seq);
  const l = full ? 400 : 150;
  const cases: LossCase[] = [
    { name: 'grpo clip/token', s, maxLen: l, options: {}, old: true, mask: true },
    { name: 'grpo + k3 beta', s, maxLen: l, options: { beta: 0.04 }, old: true, ref: true, mask: true, truncated: true },
    { name: 'grpo + maskTruncated', s, maxLen: l, options: { beta: 0.04, maskTruncatedCompletions: true }, old: true, ref: true, mask: true, truncated: true },
    { name: 'dapo tokenMean normalizer', s, maxLen: l, options: { aggregation: 'tokenMean', epsilonHigh: 0.28, normalizer: 1234 }, old: true, mask: true },
    { name: 'dr_grpo constant (longest)', s, maxLen: l, options: { aggregation: 'constant', epsilonHigh: 0.28 }, old: true, mask: true },
    { name: 'dr_grpo constant 512 on-policy', s, maxLen: l, options: { aggregation: 'constant', epsilonHigh: 0.28, maxCompletionLength: 512 } },
    { name: 'gspo sequence', s, maxLen: l, options: { importanceSamplingLevel: 'sequence' }, old: true, ref: true, mask: true, truncated: true },
    { name: 'gspo-token seqSum dual-clip', s, maxLen: l, options: { importanceSamplingLevel: 'sequenceToken', aggregation: 'seqMeanTokenSum', delta: 3 }, old: true, mask: true },
    { name: 'cispo tokenMean', s, maxLen: l, options: { surrogate: 'cispo', epsilonHigh: 5, aggregation: 'tokenMean' }, old: true, mask: true },
    { name: 'sapo k2', s, maxLen: l, options: { surrogate: 'sapo', klEstimator: 'k2', beta: 0.1 }, old: true, ref: true, mask: true },
    {
      name: 'k1 + entropy + q=0.2', s, maxLen: l,
      options: { klEstimator: 'k1', beta: 0.02, entropyCoef: 0.01, topEntropyQuantile: 0.2, maskTruncatedCompletions: true },
      old: true, ref: true, mask: true, truncated: true,
    },
    {
      name: 'on-policy q=0.5', s, maxLen: l,
      options: { klEstimator: 'k1', beta: 0.02, entropyCoef: 0.01, topEntropyQuantile: 0.5, maskTruncatedCompletions: true },
      ref: true, mask: true, truncated: true,
    },
    { name: 'q=0.4 with NaN entropies', s, maxLen: l, options: { topEntropyQuantile: 0.4 }, old: true, mask: true, nanEntropy: 'some' },
    { name: 'q=0.4 all entropies NaN', s, maxLen: l, options: { topEntropyQuantile: 0.4 }, old: true, mask: true, nanEntropy: 'all' },
    {
      name: 'many sequences q=0.8', s: Math.max(full ? 1500 : 100, rows.seq), maxLen: full ? 700 : 60,
      options: { topEntropyQuantile: 0.8, beta: 0.04 }, old: true, ref: true, mask: true, truncated: true,
    },
    // §9.1-9.3 (issue 12)
    { name: 'per-token advantages gspo', s, maxLen: l, options: { importanceSamplingLevel: 'sequence', beta: 0.04 }, old: true, ref: true, mask: true, perToken: true },
    { name: 'TRL default sequence mask', s, maxLen: l, options: {}, old: true, mask: true, sampler: true },
    {
      name: 'token TIS + rejection + off-policy mask', s, maxLen: l,
      options: { rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 2 }, rolloutRejection: [{ statistic: 'token_k3', threshold: 0.1 }, { statistic: 'seqMean_k2', threshold: 0.06 }], offPolicyMaskThreshold: 0.02, topEntropyQuantile: 0.6 },
      old: true, mask: true, truncated: true, sampler: true, perToken: true,
    },
    {
      name: 'seqMean batchNormalize + seqMax reject + bias-corrected KL', s, maxLen: l,
      options: { rolloutCorrection: { level: 'sequenceMean', mode: 'mask', clipMin: 0.9, clipMax: 1.1, batchNormalize: true }, rolloutRejection: [{ statistic: 'seqMax_k3', threshold: 0.8 }], beta: 0.05, biasCorrectedKl: true, importanceSamplingLevel: 'sequence' },
      old: true, ref: true, mask: true, sampler: true,
    },
    { name: 'entropyForm tokenMean q=0.3', s, maxLen: l, options: { entropyForm: 'tokenMean', entropyCoef: 0.02, topEntropyQuantile: 0.3, rolloutRejection: [{ statistic: 'token_k2', threshold: 0.1 }] }, old: true, mask: true, sampler: true, nanEntropy: 'some' },
    { name: 'entropyThreshold given', s, maxLen: l, options: { topEntropyQuantile: 0.5, entropyThreshold: 1.1, entropyForm: 'tokenMean', entropyCoef: 0.02 }, old: true, mask: true },
    { name: 'on-policy IcePop + k1 seqSum reject', s, maxLen: l, options: { rolloutCorrection: { level: 'token', mode: 'mask', clipMin: 0.5, clipMax: 2 }, rolloutRejection: [{ statistic: 'seqSum_k1', threshold: [0.2, 4] }], beta: 0.1, biasCorrectedKl: true, klEstimator: 'k2' }, ref: true, mask: true, sampler: true },
  ];
  for (const c of cases) await lossCase(ctx, c);
  // A bad layout is refused before any backend runs, with the same error on both.
  await ctx.add('grpoLoss', 'bad seqOffsets (end != N, decreasing): the same error', async (_rng, scope) => {
    const lp = new Float32Array(10).fill(-1);
    const dlp = scope.track(await ctx.dev.upload(lp));
    const checks: Check[] = [];
    for (const seqOffsets of [[0, 4, 8, 9], [0, 6, 4, 10]]) {
      const c = await settle(gk.grpoLoss({ logp: lp, advantages: [1, 1, 1], seqOffsets }));
      const g = await settle(gk.grpoLoss({ logp: dlp, advantages: [1, 1, 1], seqOffsets }));
      checks.push(...sameFailure(`[${seqOffsets.join(', ')}]`, g, c, true));
    }
    return checks;
  });
}

// ------------------------------------------------------------------------------------------------
// §6 the fused step from logits.

interface FusedCase {
  dtype: FloatDType;
  v: number;
  s: number;
  maxLen: number;
  /** Shortest sequence (but sequence 2, which is empty). Default 1. */
  minLen?: number;
  options: gk.GrpoLossFromLogitsOptions;
  inPlace?: boolean;
  int64?: boolean;
  off?: number;
  /** A target outside [0, V) (GK_TARGET_RANGE; the in-place logits stay as they were). */
  badTarget?: boolean;
  /** A NaN logit (checkFinite: GK_NONFINITE naming its row). */
  nanRow?: boolean;
}

async function fusedCase(ctx: Ctx, c: FusedCase): Promise<void> {
  const o = JSON.stringify(c.options).replace(/"/g, '').replace(/[{}]/g, '');
  const name = `${SHORT[c.dtype]} V=${c.v} S=${c.s} len=${c.minLen ?? 1}..${c.maxLen} ${c.int64 ? 'i64' : 'i32'}${c.inPlace ? ' in place' : ''}` +
    `${c.off ? ` off=${c.off}` : ''}${c.badTarget ? ' bad target' : ''}${c.nanRow ? ' NaN row' : ''} ${o}`;
  await ctx.add('grpoLoss(logits)', name, async (rng, scope) => {
    const d = lossData(rng, c.s, c.maxLen, c.minLen);
    const n = d.n;
    const shape = [n, c.v];
    const y = makeTargets(rng, n, c.v, !!c.int64, 0.05);
    const f = lpLogits(rng, n, c.v, true, y, c.nanRow ? { nan: Math.floor(n / 3) } : {});
    const data = gk.encodeFloats(f, c.dtype);
    const temperature = c.options.temperature ?? 1;
    // Old and reference log-probs near the policy's, so both branches of the clip are taken.
    const base = (await gk.tokenLogProbs(host(data, c.dtype, shape), y, { temperature })).logp.data as Float32Array;
    for (let t = 0; t < n; t++) {
      const b = Number.isFinite(base[t]!) ? base[t]! : -1;
      d.oldLogp[t] = b + 0.2 * rng.normal();
      d.refLogp[t] = b + 0.3 * rng.normal();
    }
    if (c.badTarget) {
      const bad = Math.floor(n / 2);
      if (y instanceof BigInt64Array) y[bad] = BigInt(c.v + 3);
      else y[bad] = c.v + 3;
    }
    const seq = { advantages: d.advantages, seqOffsets: d.offsets, completionMask: d.mask, oldLogp: d.oldLogp, refLogp: d.refLogp, truncated: d.truncated };
    const options = { ...c.options, inPlace: !!c.inPlace, ...(c.nanRow ? { checkFinite: true } : {}) };
    const hx = host(data.slice(), c.dtype, shape);
    const cpu = await settle(gk.grpoLoss({ logits: hx, targets: y, ...seq }, options));

    const dy = scope.track(await ctx.dev.upload(y));
    const dOld = scope.track(await ctx.dev.upload(d.oldLogp));
    const dMask = scope.track(await ctx.dev.upload(d.mask));
    const dAdv = scope.track(await ctx.dev.upload(d.advantages));
    const runs: Outcome<gk.GrpoLossFromLogitsResult>[] = [];
    const outs: HostArray[][] = [];
    const after: HostArray[] = [];
    let returnsLogits = true;
    for (let k = 0; k < 2; k++) {
      const x = await put(ctx, scope, data, c.dtype, shape, c.off ?? 0);
      // Device logits, targets, oldLogp, mask and advantages; refLogp and truncated from the host.
      const r = await settle(gk.grpoLoss({ logits: x, targets: dy, ...seq, oldLogp: dOld, completionMask: dMask, advantages: dAdv }, options));
      runs.push(r);
      if (r.ok) {
        if (c.inPlace) returnsLogits &&= r.ok.gradLogits === x;
        else scope.track(r.ok.gradLogits);
        scope.track(r.ok.logp);
        scope.track(r.ok.entropy);
        outs.push([await read(r.ok.gradLogits), await read(r.ok.logp), await read(r.ok.entropy)]);
      } else after.push(await read(x));
    }
    const [g1, g2] = runs as [Outcome<gk.GrpoLossFromLogitsResult>, Outcome<gk.GrpoLossFromLogitsResult>];
    if (cpu.err) {
      const checks = [...sameFailure('error', g1, cpu, !!c.nanRow), ...sameFailure('run twice: same error', g2, g1, true)];
      if (c.inPlace && after.length)
        checks.push(vsCpu('a failed in-place step leaves the logits as the CPU leaves them', after[0]!, hx.data as HostArray, TOLERANCE[c.dtype].grad, c.dtype));
      return checks;
    }
    const fail = bothOk(g1, cpu) ?? bothOk(g2, cpu);
    if (fail) return [fail];
    const tol = TOLERANCE[c.dtype];
    const cg = cpu.ok!;
    // The loss is a sum of terms of both signs: when it nearly cancels, its tolerance is relative
    // to the magnitude of its terms (the loss with |A|), as the spec states; no float32 path does
    // better than that.
    const termScale = () =>
      Math.abs(refGrpoLossFromLogits(Float64Array.from(gk.decodeFloats(data, c.dtype)), n, c.v, y, {
        advantages: Float32Array.from(d.advantages, Math.abs), seqOffsets: d.offsets, mask: d.mask, oldLogp: d.oldLogp, refLogp: d.refLogp, truncated: d.truncated,
      }, { ...cg.options, temperature, ignoreIndex: -100 }).loss);
    const checks = [
      lossCheck(g1.ok!.loss, cg.loss, 1e-5, termScale),
      ...metricChecks(g1.ok!.metrics, cg.metrics, 1e-5),
      vsCpu('gradLogits', outs[0]![0]!, cg.gradLogits.data as HostArray, tol.grad, c.dtype),
      vsCpu('logp', outs[0]![1]!, cg.logp.data as HostArray, tol.value),
      vsCpu('entropy', outs[0]![2]!, cg.entropy.data as HostArray, tol.value),
      sameMetrics('run twice: loss and metrics identical', g2.ok!, g1.ok!),
      sameRuns('run twice: outputs bit-identical', outs[1]!, outs[0]!),
    ];
    if (c.inPlace) checks.push(ok('in place returns the logits tensor', returnsLogits));
    const ref = once(() => refGrpoLossFromLogits(Float64Array.from(gk.decodeFloats(data, c.dtype)), n, c.v, y, {
      advantages: d.advantages, seqOffsets: d.offsets, mask: d.mask, oldLogp: d.oldLogp, refLogp: d.refLogp, truncated: d.truncated,
    }, { ...cg.options, temperature, ignoreIndex: -100 }));
    return explain(checks, {
      loss: () => [[g1.ok!.loss], [cg.loss], [ref().loss]],
      gradLogits: () => [floats(outs[0]![0]!, c.dtype), floats(cg.gradLogits.data as HostArray, c.dtype), ref().grad],
      logp: () => [floats(outs[0]![1]!), floats(cg.logp.data as HostArray), ref().logp],
      entropy: () => [floats(outs[0]![2]!), floats(cg.entropy.data as HostArray), ref().entropy],
    });
  });
}

async function fusedChecks(ctx: Ctx): Promise<void> {
  const { full, rows } = ctx;
  for (const dtype of DT) {
    const d = DT.indexOf(dtype);
    const fo: gk.GrpoLossFromLogitsOptions = { beta: 0.04, entropyCoef: 0.01, maskTruncatedCompletions: true, temperature: 0.9 };
    // A row per warp, past one grid (8 non-empty sequences of at least warp / 8 rows).
    const w8 = Math.ceil(rows.warp / 8);
    await fusedCase(ctx, { dtype, v: 33, s: 9, minLen: w8, maxLen: w8 + 20, options: fo });
    await fusedCase(ctx, { dtype, v: 5000, s: full ? 12 : 6, maxLen: full ? 100 : 40, options: fo, inPlace: true, int64: true, off: d + 1 });
    const seqLevel: gk.GrpoLossFromLogitsOptions = { beta: 0.04, maskTruncatedCompletions: true, importanceSamplingLevel: 'sequence', topEntropyQuantile: 0.3, temperature: 0.9 };
    await fusedCase(ctx, { dtype, v: full ? 32000 : 5000, s: full ? 8 : 4, maxLen: full ? 40 : 30, options: seqLevel, off: 1 });
    // Rows of 512 threads, past one grid (2 non-empty sequences).
    const w2 = Math.ceil(rows.wide / 2);
    await fusedCase(ctx, { dtype, v: 40000, s: 3, minLen: w2, maxLen: w2 + 4, options: { lossType: 'dapo', temperature: 1.1 }, int64: true });
    await fusedCase(ctx, { dtype, v: 2049, s: full ? 8 : 4, maxLen: full ? 64 : 20, options: seqLevel, inPlace: true, badTarget: true });
    await fusedCase(ctx, { dtype, v: 1000, s: 4, maxLen: 20, options: { lossType: 'cispo' }, int64: true, nanRow: true, inPlace: true });
  }
}

// ------------------------------------------------------------------------------------------------
// §7 distillation.

type Div = gk.Divergence;
type Agg = gk.Aggregation;

interface DistillCase {
  s: number;
  maxLen: number;
  v: number;
  sdt: FloatDType;
  tdt: FloatDType;
  /** Target dtype, or null for no targets. */
  ydt: 'int32' | 'int64' | null;
  div: Div;
  beta: number;
  temp: number;
  hw: number;
  agg: Agg;
  normalizer?: number;
  mcl?: number;
  masked?: boolean;
  ignored?: boolean;
  /** -inf entries: teacher rows r % 7 == 3 (~30%), and rows r % 5 == 2 (~20%) at columns masked in both. */
  inf?: boolean;
  /** The teacher is the student + 0.3·N(0, 1) (KL ~ 0.01: float32 rounding matters most). */
  close?: boolean;
  sOff?: number;
  tOff?: number;
  grad: 'none' | 'separate' | 'inPlace';
  rowLoss: boolean;
}

function distillName(c: DistillCase): string {
  return `${SHORT[c.sdt]}/${SHORT[c.tdt]} V=${c.v} S=${c.s} ${c.div} b=${c.beta} T=${c.temp} hw=${c.hw} ${c.agg}` +
    `${c.normalizer ? ' +norm' : ''}${c.mcl ? ' +mcl' : ''} ${c.ydt ?? 'no targets'}${c.masked ? ' mask' : ''}${c.ignored ? ' ign' : ''}` +
    `${c.inf ? ' -inf' : ''}${c.close ? ' close' : ''} off=${c.sOff ?? 0}/${c.tOff ?? 0} ${c.grad}${c.rowLoss ? '' : ' no rowLoss'}`;
}

async function distillCase(ctx: Ctx, c: DistillCase): Promise<void> {
  await ctx.add('distillationLoss', distillName(c), async (rng, scope) => {
    const offsets = [0];
    for (let s = 0; s < c.s; s++) {
      let len = rng.int(0, c.maxLen + 1);
      if (s === 0 && len === 0) len = 1;
      offsets.push(offsets[s]! + len);
    }
    const n = offsets[c.s]!;
    const v = c.v;
    const y32 = Int32Array.from({ length: n }, () => (c.ignored && rng.next() < 0.1 ? -100 : rng.int(0, v)));
    const y: Targets | undefined = c.ydt === null ? undefined : c.ydt === 'int32' ? y32 : BigInt64Array.from(y32, (x) => BigInt(x));
    const mask = Uint8Array.from({ length: n }, () => (c.masked && rng.next() < 0.2 ? 0 : 1));
    const zs = new Float32Array(n * v);
    const zt = new Float32Array(n * v);
    for (let i = 0; i < n * v; i++) zs[i] = 3 * rng.normal();
    const sData = gk.encodeFloats(zs, c.sdt);
    const sVals = gk.decodeFloats(sData, c.sdt);
    for (let i = 0; i < n * v; i++) zt[i] = c.close ? sVals[i]! + 0.3 * rng.normal() : 3 * rng.normal();
    if (c.inf && v > 1) {
      for (let r = 0; r < n; r++) {
        const yr = y ? y32[r]! : -1;
        for (let j = 0; j < v; j++) {
          if (j === yr) continue;
          if (r % 7 === 3 && rng.next() < 0.3) zt[r * v + j] = -Infinity;
          if (r % 5 === 2 && j !== 0 && rng.next() < 0.2) {
            zt[r * v + j] = -Infinity;
            zs[r * v + j] = -Infinity;
          }
        }
      }
    }
    const student = gk.encodeFloats(zs, c.sdt);
    const teacher = gk.encodeFloats(zt, c.tdt);
    const options: gk.DistillationOptions = {
      divergence: c.div, beta: c.beta, temperature: c.temp, aggregation: c.agg,
      ...(y ? { hardLabelWeight: c.hw } : {}), ...(c.normalizer ? { normalizer: c.normalizer } : {}), ...(c.mcl ? { maxCompletionLength: c.mcl } : {}),
      grad: c.grad !== 'none', inPlace: c.grad === 'inPlace', rowLoss: c.rowLoss,
    };
    const shape = [n, v];
    const hs = host(student.slice(), c.sdt, shape);
    const cpu = await settle(gk.distillationLoss({
      student: hs, teacher: host(teacher, c.tdt, shape), seqOffsets: offsets, ...(y ? { targets: y } : {}), ...(c.masked ? { completionMask: mask } : {}),
    }, options));

    const dt = await put(ctx, scope, teacher, c.tdt, shape, c.tOff ?? 0);
    const dy = y ? scope.track(await ctx.dev.upload(y)) : undefined;
    const dm = scope.track(await ctx.dev.upload(mask));
    const runs: Outcome<gk.DistillationResult>[] = [];
    const outs: HostArray[][] = [];
    const students: HostArray[] = [];
    let returnsStudent = true;
    for (let k = 0; k < 2; k++) {
      const ds = await put(ctx, scope, student, c.sdt, shape, c.sOff ?? 0);
      const r = await settle(gk.distillationLoss({
        student: ds, teacher: dt, seqOffsets: offsets, ...(dy ? { targets: dy } : {}), ...(c.masked ? { completionMask: dm } : {}),
      }, options));
      runs.push(r);
      if (r.ok) {
        if (c.grad === 'separate') scope.track(r.ok.gradStudent);
        if (c.grad === 'inPlace') returnsStudent &&= r.ok.gradStudent === ds;
        scope.track(r.ok.rowLoss);
        outs.push([
          ...(r.ok.gradStudent ? [await read(r.ok.gradStudent)] : []), ...(r.ok.rowLoss ? [await read(r.ok.rowLoss)] : []),
          Float64Array.of(r.ok.loss, r.ok.tokens),
        ]);
      }
      students.push(await read(ds));
    }
    const [g1, g2] = runs as [Outcome<gk.DistillationResult>, Outcome<gk.DistillationResult>];
    if (cpu.err) return [...sameFailure('error', g1, cpu, true), ...sameFailure('run twice: same error', g2, g1, true)];
    const fail = bothOk(g1, cpu) ?? bothOk(g2, cpu);
    if (fail) return [fail];
    // A teacher close to the student puts the loss near float32 rounding on either backend: both
    // stay within the tolerance of float64 (selftest's distillation cases), so they may differ by
    // up to twice it.
    const factor = c.close ? 2 : 1;
    const cg = cpu.ok!;
    const gr = g1.ok!;
    const checks = [
      scalar('loss', gr.loss, cg.loss, 1e-5 * factor, 1e-300),
      ok('tokens', gr.tokens === cg.tokens, `gpu ${gr.tokens} cpu ${cg.tokens}`),
    ];
    let i = 0;
    if (c.grad !== 'none') {
      checks.push(vsCpu('gradStudent', outs[0]![i++]!, cg.gradStudent!.data as HostArray, TOLERANCE[c.sdt].grad * factor, c.sdt));
      if (c.grad === 'inPlace') checks.push(ok('in place returns the student tensor', returnsStudent));
    }
    if (c.rowLoss) checks.push(vsCpu('rowLoss', outs[0]![i++]!, cg.rowLoss!.data as HostArray, 1e-5 * factor));
    checks.push(sameRuns('run twice: bit-identical', outs[1]!, outs[0]!));
    if (c.grad !== 'inPlace') checks.push(sameBits('the student is not written', students[0]!, student));
    const ref = once(() => {
      let longest = 0;
      for (let s = 0; s < c.s; s++) longest = Math.max(longest, offsets[s + 1]! - offsets[s]!);
      return refDistill(Float64Array.from(gk.decodeFloats(student, c.sdt)), Float64Array.from(gk.decodeFloats(teacher, c.tdt)), n, v, y ?? null,
        c.masked ? mask : null, offsets, {
          divergence: c.div, beta: c.beta, temperature: c.temp, ignoreIndex: -100, hardLabelWeight: y ? c.hw : 0, aggregation: c.agg,
          normalizer: c.normalizer || null, maxCompletionLength: c.mcl || longest,
        });
    });
    return explain(checks, {
      loss: () => [[gr.loss], [cg.loss], [ref().loss]],
      gradStudent: () => [floats(outs[0]![0]!, c.sdt), floats(cg.gradStudent!.data as HostArray, c.sdt), ref().grad],
      rowLoss: () => [floats(outs[0]![c.grad !== 'none' ? 1 : 0]!), floats(cg.rowLoss!.data as HostArray), ref().rowLoss],
    });
  });
}

/** Errors as the CPU reports them, and what a failed in-place call leaves in the student. */
async function distillErrorCase(
  ctx: Ctx, name: string, n: number, v: number, offsets: number[], edit: (zs: Float32Array, zt: Float32Array, y: BigInt64Array) => void,
  ydt: 'int32' | 'int64', div: Div, nativeError: boolean,
): Promise<void> {
  await ctx.add('distillationLoss', `errors: ${name}`, async (rng, scope) => {
    const zs = Float32Array.from({ length: n * v }, () => 3 * rng.normal());
    const zt = Float32Array.from({ length: n * v }, () => 3 * rng.normal());
    const y64 = BigInt64Array.from({ length: n }, () => BigInt(rng.int(0, Math.max(v, 1))));
    edit(zs, zt, y64);
    const y: Targets = ydt === 'int64' ? y64 : Int32Array.from(y64, (x) => Number(x));
    const options: gk.DistillationOptions = { divergence: div, hardLabelWeight: 0.3, inPlace: true, rowLoss: true };
    const shape = [n, v];
    const hs = host(zs.slice(), 'float32', shape);
    const cpu = await settle(gk.distillationLoss({ student: hs, teacher: host(zt, 'float32', shape), targets: y, seqOffsets: offsets }, options));
    const ds = await put(ctx, scope, zs, 'float32', shape, 0);
    const dt = await put(ctx, scope, zt, 'float32', shape, 0);
    const dy = scope.track(await ctx.dev.upload(y));
    const gpu = await settle(gk.distillationLoss({ student: ds, teacher: dt, targets: dy, seqOffsets: offsets }, options));
    const after = await read(ds);
    if (!cpu.err) {
      // N = 0: nothing fails; the loss and token count as the CPU's.
      const fail = bothOk(gpu, cpu);
      if (fail) return [fail];
      scope.track(gpu.ok!.rowLoss);
      return [scalar('loss', gpu.ok!.loss, cpu.ok!.loss, 1e-5, 1e-300), ok('tokens', gpu.ok!.tokens === cpu.ok!.tokens, `gpu ${gpu.ok!.tokens} cpu ${cpu.ok!.tokens}`)];
    }
    const checks = sameFailure('error', gpu, cpu, nativeError);
    // A bad layout or target writes nothing (the in-place student stays as it was); a non-finite
    // row is reported after every row is written, as on the CPU.
    if (nativeError) checks.push(vsCpu('in-place student after the error, as the CPU leaves it', after, hs.data as HostArray, 1e-5));
    else checks.push(sameBits('the in-place student is left as it was', after, zs));
    return checks;
  });
}

async function distillChecks(ctx: Ctx): Promise<void> {
  const { full } = ctx;
  const divs: Div[] = ['forwardKL', 'reverseKL', 'jsd'];
  const aggs: Agg[] = ['seqMeanTokenMean', 'tokenMean', 'constant', 'seqMeanTokenSum'];
  const grads: DistillCase['grad'][] = ['none', 'separate', 'inPlace', 'separate'];
  // 1. Every divergence x dtype pair, with a rotation of the other options, small and odd V.
  let k = 0;
  for (const sdt of DT) {
    for (const tdt of DT) {
      for (const div of divs) {
        k++;
        if (!full && k % 3 !== 0 && k % 4 !== 1) continue;
        const v = [1, 7, 33, 1001][k % 4]!;
        const ydt = k % 3 === 0 ? null : k % 2 ? 'int64' : 'int32';
        await distillCase(ctx, {
          s: 5, maxLen: 9, v, sdt, tdt, ydt, div, beta: 0.3 + 0.2 * (k % 3), temp: k % 2 ? 0.7 : 1, hw: ydt && k % 4 === 1 ? 0.3 : 0,
          agg: aggs[k % 4]!, normalizer: k % 8 === 1 ? 37 : 0, mcl: k % 8 === 2 ? 50 : 0, masked: k % 3 === 1, ignored: k % 5 !== 0,
          inf: k % 2 === 0 && v > 1, sOff: k % 7 === 3 ? 1 : 0, tOff: k % 5 === 4 ? 3 : 0, grad: grads[k % 4]!, rowLoss: k % 6 !== 5,
        });
      }
    }
  }
  // 2. A row per block (V > 4096) and the boundary, every grad mode, hard labels, close teachers.
  for (const div of divs) {
    await distillCase(ctx, { s: 4, maxLen: 7, v: 4096, sdt: 'bfloat16', tdt: 'bfloat16', ydt: 'int64', div, beta: 0.5, temp: 1, hw: 0.3, agg: 'tokenMean', masked: true, ignored: true, inf: true, grad: 'inPlace', rowLoss: true });
    await distillCase(ctx, { s: 4, maxLen: 7, v: 4097, sdt: 'float32', tdt: 'bfloat16', ydt: 'int32', div, beta: 0.5, temp: 0.7, hw: 0, agg: 'seqMeanTokenMean', ignored: true, inf: true, sOff: 1, grad: 'separate', rowLoss: true });
    await distillCase(ctx, { s: 3, maxLen: 5, v: 32000, sdt: 'float16', tdt: 'float32', ydt: 'int64', div, beta: 0.4, temp: 1, hw: 0.3, agg: 'constant', masked: true, inf: true, grad: 'separate', rowLoss: true });
    await distillCase(ctx, { s: 3, maxLen: 6, v: 1001, sdt: 'float32', tdt: 'float32', ydt: null, div, beta: 0.5, temp: 1, hw: 0, agg: 'tokenMean', close: true, grad: 'separate', rowLoss: true });
    if (full) await distillCase(ctx, { s: 2, maxLen: 4, v: 32000, sdt: 'float32', tdt: 'float32', ydt: 'int64', div, beta: 0.5, temp: 0.7, hw: 0, agg: 'seqMeanTokenSum', close: true, grad: 'inPlace', rowLoss: true });
    await distillCase(ctx, { s: 3, maxLen: 5, v: 5003, sdt: 'bfloat16', tdt: 'float16', ydt: 'int64', div, beta: 0.5, temp: 1, hw: 0.3, agg: 'tokenMean', ignored: true, inf: true, sOff: 3, tOff: 5, grad: 'separate', rowLoss: false });
    await distillCase(ctx, { s: 3, maxLen: 5, v: 5003, sdt: 'float16', tdt: 'float16', ydt: 'int32', div, beta: 0.5, temp: 0.7, hw: 0, agg: 'tokenMean', masked: true, ignored: true, inf: true, sOff: 1, tOff: 1, grad: 'inPlace', rowLoss: true });
  }
  // 3. Many rows per warp (many blocks), and V = 151936.
  await distillCase(ctx, { s: 40, maxLen: full ? 300 : 60, v: 33, sdt: 'bfloat16', tdt: 'float32', ydt: 'int64', div: 'forwardKL', beta: 0.5, temp: 1, hw: 0.3, agg: 'tokenMean', masked: true, ignored: true, inf: true, grad: 'inPlace', rowLoss: true });
  await distillCase(ctx, { s: full ? 30 : 10, maxLen: full ? 100 : 40, v: 2048, sdt: 'float32', tdt: 'float32', ydt: 'int32', div: 'reverseKL', beta: 0.5, temp: 0.7, hw: 0, agg: 'seqMeanTokenMean', masked: true, ignored: true, inf: true, grad: 'separate', rowLoss: true });
  await distillCase(ctx, { s: 2, maxLen: 3, v: 151936, sdt: 'bfloat16', tdt: 'bfloat16', ydt: 'int64', div: 'jsd', beta: 0.5, temp: 1, hw: 0.3, agg: 'tokenMean', ignored: true, inf: true, sOff: 1, grad: 'separate', rowLoss: true });
  if (full) {
    for (const div of divs) {
      await distillCase(ctx, { s: 3, maxLen: 4, v: 151936, sdt: 'bfloat16', tdt: 'bfloat16', ydt: 'int64', div, beta: 0.5, temp: 1, hw: 0.3, agg: 'tokenMean', ignored: true, inf: true, grad: 'separate', rowLoss: true });
      await distillCase(ctx, { s: 2, maxLen: 4, v: 151936, sdt: 'float32', tdt: 'bfloat16', ydt: 'int32', div, beta: 0.5, temp: 0.7, hw: 0, agg: 'constant', masked: true, tOff: 1, grad: 'inPlace', rowLoss: true });
      await distillCase(ctx, { s: 2, maxLen: 4, v: 151936, sdt: 'float16', tdt: 'float16', ydt: 'int64', div, beta: 0.5, temp: 2, hw: 0.5, agg: 'seqMeanTokenMean', close: true, sOff: 1, tOff: 1, grad: 'separate', rowLoss: true });
      await distillCase(ctx, { s: 2, maxLen: 3, v: 151936, sdt: 'float32', tdt: 'float32', ydt: null, div, beta: 0.5, temp: 1, hw: 0, agg: 'tokenMean', close: true, grad: 'separate', rowLoss: true });
    }
    await distillCase(ctx, { s: 16, maxLen: 64, v: 4099, sdt: 'bfloat16', tdt: 'bfloat16', ydt: 'int64', div: 'forwardKL', beta: 0.5, temp: 1, hw: 0, agg: 'tokenMean', masked: true, ignored: true, inf: true, grad: 'separate', rowLoss: false });
    await distillCase(ctx, { s: 16, maxLen: 64, v: 4099, sdt: 'bfloat16', tdt: 'bfloat16', ydt: 'int64', div: 'jsd', beta: 0.5, temp: 1, hw: 0, agg: 'tokenMean', masked: true, ignored: true, inf: true, grad: 'none', rowLoss: true });
  }
  // 4. Errors.
  for (const ydt of ['int64', 'int32'] as const) {
    await distillErrorCase(ctx, `bad targets (${ydt}) -> row 7, nothing written`, 40, 1001, [0, 10, 25, 40], (_s, _t, y) => {
      y[3] = -100n;
      y[12] = -5n;
      y[7] = 1001n;
      y[30] = 1101n;
    }, ydt, 'forwardKL', false);
  }
  await distillErrorCase(ctx, 'bad seqOffsets (decreasing)', 10, 33, [0, 6, 4, 10], () => undefined, 'int64', 'jsd', false);
  // Student row 2 entirely -inf (ignored), teacher row 4 holds a NaN, student row 6 is -inf where
  // the teacher has mass, teacher row 8 -inf where the student has mass: every row is written and
  // the smallest non-finite row is named.
  const v = 257;
  const nonFinite = (counted: boolean) => (zs: Float32Array, zt: Float32Array, y: BigInt64Array) => {
    zs.fill(-Infinity, 2 * v, 3 * v);
    zt[4 * v + 100] = NaN;
    zs[6 * v + 5] = -Infinity;
    zt[8 * v + 9] = -Infinity;
    for (let r = 0; r < 12; r++) if (y[r] === 5n || y[r] === 9n) y[r] = 11n;
    y[2] = counted ? 3n : -100n;
  };
  for (const div of divs) await distillErrorCase(ctx, `non-finite rows (${div})`, 12, v, [0, 5, 12], nonFinite(false), 'int64', div, true);
  await distillErrorCase(ctx, 'non-finite rows incl. the all -inf row 2 (reverseKL)', 12, v, [0, 5, 12], nonFinite(true), 'int64', 'reverseKL', true);
  await distillErrorCase(ctx, 'N = 0 (three empty sequences)', 0, 5, [0, 0, 0, 0], () => undefined, 'int64', 'forwardKL', false);
}

// ------------------------------------------------------------------------------------------------
// §2 and §9.5 group advantages.

interface AdvCase {
  k: number;
  n: number;
  g: number;
  weights: boolean;
  /** Unset: the estimator's default. */
  scale?: gk.AdvantageScale;
  estimator: gk.AdvantageEstimator;
  nan: number;
  equalGroups: boolean;
  aggregation?: gk.MultiObjectiveAggregation;
  /** Random completion lengths (some 0). */
  lengths?: boolean;
  /** §9.7: batch statistics given from outside, and the partials returned. */
  global?: boolean;
}

async function advantageCase(ctx: Ctx, c: AdvCase): Promise<void> {
  const name = `k=${c.k} n=${c.n} G=${c.g}${c.weights ? ' weights' : ''} ${c.estimator}/${c.aggregation ?? c.scale ?? 'default'} NaN=${c.nan}${c.equalGroups ? ' equal groups' : ''}${c.lengths ? ' lengths' : ''}${c.global ? ' batchStats given + partials' : ''}`;
  // A reduction over the whole batch (the batch std, REINFORCE++'s and normalizeThenSum's whitening) is a parallel sum.
  const batchWide = c.scale === 'batch' || c.estimator === 'reinforcePlusPlus' || c.estimator === 'reinforcePlusPlusBaseline' || c.aggregation === 'normalizeThenSum';
  await ctx.add('groupAdvantages', name, async (rng) => {
    const r = Array.from({ length: c.k }, () => Float64Array.from({ length: c.n }, () => (rng.next() < c.nan ? NaN : Math.round(rng.normal() * 4) / 4 + 0.125)));
    if (c.equalGroups) for (let g0 = 0; g0 + c.g <= c.n; g0 += 3 * c.g) for (const x of r) x.fill(x[g0]!, g0, g0 + c.g);
    const weights = c.weights ? Array.from({ length: c.k }, () => rng.normal()) : undefined;
    const lengths = c.lengths ? Float64Array.from({ length: c.n }, () => (rng.next() < 0.1 ? 0 : 1 + Math.floor(rng.next() * 500))) : undefined;
    const opts: gk.GroupAdvantagesOptions = {
      groupSize: c.g, estimator: c.estimator, ...(c.scale ? { scale: c.scale } : {}), ...(weights ? { weights } : {}), ...(lengths ? { lengths } : {}),
      ...(c.aggregation ? { multiObjectiveAggregation: c.aggregation } : {}),
      ...(c.global ? { returnPartials: true, batchStats: { count: c.n * 0.7, mean: 0.3, m2: c.n * 0.9 } } : {}),
    };
    const input = c.k === 1 ? r[0]! : r;
    const cpu = await settle(gk.groupAdvantages(input, opts));
    // Rewards come from JS: the op runs on the default device.
    gk.setDefaultDevice(ctx.dev);
    let g1: Outcome<gk.GroupAdvantagesResult>;
    let g2: Outcome<gk.GroupAdvantagesResult>;
    try {
      g1 = await settle(gk.groupAdvantages(input, opts));
      g2 = await settle(gk.groupAdvantages(input, opts));
    } finally {
      gk.setDefaultDevice(gk.Device.cpu);
    }
    if (cpu.err) return [...sameFailure('error', g1, cpu, true), ...sameFailure('run twice: same error', g2, g1, true)];
    const fail = bothOk(g1, cpu) ?? bothOk(g2, cpu);
    if (fail) return [fail];
    const a = g1.ok!;
    const b = cpu.ok!;
    const out = (x: gk.GroupAdvantagesResult) => [x.advantages.data as HostArray, x.rewards, x.groupMean, x.groupStd, Float64Array.of(x.zeroVarianceGroups)];
    return [
      batchWide
        ? perElement('advantages within 1e-6 (batch statistics: a parallel sum)', a.advantages.data as Float32Array, b.advantages.data as Float32Array, 1e-6)
        : sameBits('advantages bit-identical', a.advantages.data as HostArray, b.advantages.data as HostArray),
      sameBits('combined rewards bit-identical', a.rewards, b.rewards),
      sameBits('groupMean bit-identical', a.groupMean, b.groupMean),
      sameBits('groupStd bit-identical', a.groupStd, b.groupStd),
      ok('zeroVarianceGroups', a.zeroVarianceGroups === b.zeroVarianceGroups, `gpu ${a.zeroVarianceGroups} cpu ${b.zeroVarianceGroups}`),
      sameRuns('run twice: bit-identical', out(g2.ok!), out(a)),
      ...(c.global ? [perElement('partials (count, mean, m2) within 1e-6', Float32Array.of(a.partials!.count, a.partials!.mean, a.partials!.m2),
        Float32Array.of(b.partials!.count, b.partials!.mean, b.partials!.m2), 1e-6)] : []),
    ];
  });
}

async function advantageChecks(ctx: Ctx): Promise<void> {
  for (const scale of ['group', 'batch', 'none'] as const) {
    for (const estimator of ['grpo', 'rloo'] as const) {
      const base = { scale, estimator };
      await advantageCase(ctx, { ...base, k: 1, n: 64, g: 8, weights: false, nan: 0.1, equalGroups: true });
      await advantageCase(ctx, { ...base, k: 3, n: 12328, g: 4, weights: true, nan: 0.2, equalGroups: true });
      await advantageCase(ctx, { ...base, k: 2, n: 1000, g: 1, weights: true, nan: 0, equalGroups: false });
      await advantageCase(ctx, { ...base, k: 2, n: 9000, g: 9000, weights: false, nan: 0.5, equalGroups: false });
      if (ctx.full) await advantageCase(ctx, { ...base, k: 2, n: 1_000_000, g: 16, weights: true, nan: 0.05, equalGroups: true });
    }
  }
  // §9.5.
  const more: AdvCase[] = [
    { estimator: 'reinforcePlusPlus', k: 1, n: 64, g: 8, weights: false, nan: 0.1, equalGroups: true },
    { estimator: 'reinforcePlusPlus', k: 2, n: 12328, g: 4, weights: true, nan: 0.2, equalGroups: true, lengths: true },
    { estimator: 'reinforcePlusPlusBaseline', k: 3, n: 9000, g: 8, weights: true, nan: 0.2, equalGroups: true, lengths: true },
    { estimator: 'opo', k: 1, n: 64, g: 8, weights: false, nan: 0.1, equalGroups: true, lengths: true },
    { estimator: 'opo', k: 2, n: 12328, g: 4, weights: true, nan: 0.2, equalGroups: true, lengths: true, scale: 'batch' },
    { estimator: 'gpg', k: 1, n: 64, g: 8, weights: false, nan: 0.1, equalGroups: true },
    { estimator: 'gpg', k: 2, n: 12328, g: 16, weights: true, nan: 0.2, equalGroups: true, scale: 'group' },
    { estimator: 'grpoPassK', k: 1, n: 64, g: 8, weights: false, nan: 0.1, equalGroups: true },
    { estimator: 'grpoPassK', k: 2, n: 12328, g: 4, weights: true, nan: 0.3, equalGroups: true, scale: 'none' },
    { estimator: 'grpo', aggregation: 'normalizeThenSum', k: 1, n: 64, g: 8, weights: false, nan: 0.1, equalGroups: true },
    { estimator: 'grpo', aggregation: 'normalizeThenSum', k: 3, n: 12328, g: 8, weights: true, nan: 0.3, equalGroups: true },
    // §9.7 batch statistics from outside
    { estimator: 'grpo', scale: 'batch', k: 2, n: 12328, g: 4, weights: true, nan: 0.2, equalGroups: true, global: true },
    { estimator: 'reinforcePlusPlus', k: 1, n: 9000, g: 8, weights: false, nan: 0.1, equalGroups: true, lengths: true, global: true },
    { estimator: 'grpo', aggregation: 'normalizeThenSum', k: 3, n: 4096, g: 8, weights: true, nan: 0.3, equalGroups: true, global: true },
  ];
  for (const c of more) await advantageCase(ctx, c);
  if (ctx.full) {
    await advantageCase(ctx, { estimator: 'reinforcePlusPlusBaseline', k: 2, n: 1_000_000, g: 16, weights: true, nan: 0.05, equalGroups: true, lengths: true });
    await advantageCase(ctx, { estimator: 'grpo', aggregation: 'normalizeThenSum', k: 2, n: 1_000_000, g: 16, weights: true, nan: 0.05, equalGroups: true });
  }
}

// ------------------------------------------------------------------------------------------------
// Bradley–Terry.

async function preferenceCase(ctx: Ctx, n: number, margins: boolean, sum: boolean): Promise<void> {
  await ctx.add('bradleyTerryLoss', `n=${n}${margins ? ' per-pair margins' : ' margin 0.25'}${sum ? ' sum' : ' mean'}`, async (rng, scope) => {
    const chosen = Float32Array.from({ length: n }, () => rng.normal() * 3);
    const rejected = Float32Array.from({ length: n }, (_, i) => (i % 7 === 0 ? chosen[i]! : rng.normal() * 3));
    const m = Float32Array.from({ length: n }, () => rng.next());
    const options: gk.BradleyTerryOptions = { margin: 0.25, reduction: sum ? 'sum' : 'mean' };
    const cpu = await gk.bradleyTerryLoss({ chosen, rejected, ...(margins ? { margins: m } : {}) }, options);
    const dc = scope.track(await ctx.dev.upload(chosen));
    const dr = scope.track(await ctx.dev.upload(rejected));
    const dm = scope.track(await ctx.dev.upload(m));
    const runs: gk.BradleyTerryResult[] = [];
    const outs: HostArray[][] = [];
    for (let k = 0; k < 2; k++) {
      const r = await gk.bradleyTerryLoss({ chosen: dc, rejected: dr, ...(margins ? { margins: dm } : {}) }, options);
      scope.track(r.gradChosen);
      scope.track(r.gradRejected);
      runs.push(r);
      outs.push([await read(r.gradChosen), await read(r.gradRejected), Float64Array.of(r.loss, r.accuracy, r.meanMargin)]);
    }
    let worst = 0;
    let where = '';
    for (const [i, want] of [cpu.gradChosen.data as Float32Array, cpu.gradRejected.data as Float32Array].entries()) {
      const got = outs[0]![i] as Float32Array;
      for (let j = 0; j < n; j++) {
        const u = ulps(got[j]!, want[j]!);
        if (u > worst) {
          worst = u;
          where = `${i ? 'gradRejected' : 'gradChosen'}[${j}]: gpu ${got[j]} cpu ${want[j]}`;
        }
      }
    }
    const g = runs[0]!;
    const rel = (label: string, a: number, b: number) => {
      const err = Math.abs(a - b) / Math.max(1, Math.abs(b));
      return { label, err, tol: 1e-12, pass: err <= 1e-12, ...(err <= 1e-12 ? {} : { detail: `gpu ${a} cpu ${b}` }) };
    };
    return [
      { label: 'gradients within 1 ulp', err: worst, tol: 1, pass: worst <= 1, ...(worst <= 1 ? {} : { detail: where }) },
      rel('loss', g.loss, cpu.loss),
      rel('meanMargin', g.meanMargin, cpu.meanMargin),
      ok('accuracy exact', g.accuracy === cpu.accuracy, `gpu ${g.accuracy} cpu ${cpu.accuracy}`),
      sameRuns('run twice: bit-identical', outs[1]!, outs[0]!),
    ];
  });
}

async function preferenceChecks(ctx: Ctx): Promise<void> {
  await preferenceCase(ctx, 1, false, false);
  await preferenceCase(ctx, 1000, true, false);
  await preferenceCase(ctx, 9001, false, true);
  if (ctx.full) await preferenceCase(ctx, 1_000_000, true, false);
}

// ------------------------------------------------------------------------------------------------

/**
 * Runs every op on the CPU backend and on `dev` with the same inputs and compares the results
 * (see the top of this file). `full`: more and larger cases (`selftest` without --quick).
 */
export async function runCrossBackendChecks(dev: gk.Device, seed: number, full: boolean, onResult?: (r: CaseResult) => void): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  const previous = gk.defaultDevice();
  let i = 0;
  const ctx: Ctx = {
    dev, full, rows: waveRows(),
    add: async (op, name, f) => {
      const rng = new Rng(seed + 1_000_003 * ++i);
      const scope = new Scope();
      let checks: Check[];
      try {
        checks = await f(rng, scope);
      } catch (e) {
        const err = e as { code?: string; message?: string };
        checks = [ok('threw', false, `${err.code ?? ''} ${err.message ?? String(e)}`)];
      } finally {
        scope.dispose();
      }
      const r = { op: `${op}=cpu`, name, checks, pass: checks.every((c) => c.pass) };
      results.push(r);
      onResult?.(r);
    },
  };
  // Host tensors run on the CPU backend; device tensors on `dev`.
  gk.setDefaultDevice(gk.Device.cpu);
  try {
    await samplingChecks(ctx);
    await logProbChecks(ctx);
    await lossChecks(ctx);
    await fusedChecks(ctx);
    await distillChecks(ctx);
    await advantageChecks(ctx);
    await preferenceChecks(ctx);
  } finally {
    gk.setDefaultDevice(previous);
  }
  return results;
}
