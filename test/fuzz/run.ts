// The fuzzer's child process (test/fuzz.test.ts starts it under a memory limit). Seeded calls of
// the public API (lib/index.ts) and of the raw addon entry points with valid, invalid and
// adversarial arguments, a few at a time concurrently. Every call must resolve, or reject with a
// coded error: a GrpoKernelsError with a GK_ code for the public API, an error whose `code` is a
// GK_ code for the raw addon. A call that does not settle within GK_FUZZ_CALL_TIMEOUT_MS is a
// hang. Before each call its description is appended to GK_FUZZ_TRACE (when set), so that the
// parent can name the call that was running when the process died.
//
//   GK_FUZZ_SEED   the seed (required)        GK_FUZZ_CALLS  calls to make (default 10000)
//   GK_FUZZ_TRACE  trace file                 GK_FUZZ_CALL_TIMEOUT_MS  per-call limit (30000)
//
// Prints 'progress <calls>' lines while it runs and one line 'GKFUZZ <json summary>' at the end.
import * as fs from 'node:fs';
import * as gk from '../../lib/index';
import { addon } from '../../lib/native';

const seed = Number(process.env.GK_FUZZ_SEED);
if (!Number.isSafeInteger(seed)) {
  console.error(`GK_FUZZ_SEED must be an integer, got ${process.env.GK_FUZZ_SEED}`);
  process.exit(2);
}
const TOTAL = Number(process.env.GK_FUZZ_CALLS ?? 10000);
const CALL_TIMEOUT_MS = Number(process.env.GK_FUZZ_CALL_TIMEOUT_MS ?? 30000);
const traceFd = process.env.GK_FUZZ_TRACE ? fs.openSync(process.env.GK_FUZZ_TRACE, 'w') : -1;
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
const raw = addon() as unknown as Record<string, (...args: unknown[]) => unknown>;

// ---------------------------------------------------------------------------------------------
// Randomness (mulberry32 on the seed; its own copy so that a library change cannot shift it).

let state = seed >>> 0;
function rand(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo)); // [lo, hi)
const chance = (p: number) => rand() < p;
function pick<T>(xs: readonly T[]): T {
  return xs[Math.floor(rand() * xs.length)]!;
}
const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

// ---------------------------------------------------------------------------------------------
// Adversarial values.

const BAD_NUMBERS = [
  NaN, Infinity, -Infinity, 0, -0, -1, 0.5, -0.5, 1e-310, 5e-324, 1e-40, 1e39, 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 40, 2 ** 53,
  2 ** 53 + 2, 2 ** 63, -(2 ** 63), 1e300, -1e300, Number.MAX_VALUE, Number.MIN_VALUE, 3.7, -100, 7,
];
function junk(): unknown {
  return pick<() => unknown>([
    () => pick(BAD_NUMBERS), () => undefined, () => null, () => true, () => 'float32', () => '1', () => '', () => ({}), () => [],
    () => [1, 2, 3], () => Symbol('x'), () => 1n, () => 2n ** 70n, () => -5n, () => () => 1, () => new Date(0), () => new Map(),
    () => new DataView(new ArrayBuffer(8)), () => new Float64Array(3), () => new Int8Array(5), () => new BigUint64Array(2),
    () => Object.create(null), () => new Proxy({}, {}), () => ({ length: 2 ** 40 }), () => ({ length: -1 }), () => [Symbol('y')],
    () => gk.Tensor.zeros([2]), () => new Error('x'), () => Promise.resolve(1),
  ])();
}
/** A number: usually `good`, sometimes an adversarial one, rarely not a number at all. */
function num(good: number): unknown {
  if (chance(0.85)) return good;
  return chance(0.8) ? pick(BAD_NUMBERS) : junk();
}

// Buffers kept alive until their calls settle (transferred ArrayBuffers' new owners).
let keepAlive: unknown[] = [];

type FloatArrayKind = 'plain' | 'view' | 'shared';
function floatStorage(len: number, kind: FloatArrayKind = pick(['plain', 'plain', 'view', 'shared'] as const)): Float32Array {
  if (kind === 'view') {
    const off = int(1, 5);
    const base = new Float32Array(len + off + int(0, 3));
    return base.subarray(off, off + len);
  }
  if (kind === 'shared') return new Float32Array(new SharedArrayBuffer(Math.max(1, len) * 4), 0, len);
  return new Float32Array(len);
}

function logitValues(n: number, v: number, nasty: boolean): number[] {
  const out = new Array<number>(n * v);
  for (let i = 0; i < n * v; i++) out[i] = normal() * 3;
  if (nasty) {
    const kinds = [NaN, Infinity, -Infinity, 1e38, -1e38];
    for (let k = int(1, 4); k > 0 && n * v > 0; k--) out[int(0, n * v)] = pick(kinds);
    if (n > 0 && chance(0.3)) out.fill(-Infinity, 0, v); // a row with no finite logit
  }
  return out;
}

/** A logits tensor of a random dtype and shape (sometimes empty, huge-V-but-empty, 1-D or disposed). */
function logitsTensor(opts: { n?: number; v?: number; dtype?: gk.FloatDType } = {}): gk.Tensor {
  const dtype = opts.dtype ?? pick(['float32', 'float32', 'float16', 'bfloat16'] as const);
  if (!opts.n && chance(0.04)) return gk.Tensor.from(new Float32Array(0), { shape: pick([[0, 2 ** 31], [1, 0, 2 ** 30], [0, 7], [3, 0]]) });
  const n = opts.n ?? int(0, 7);
  const v = opts.v ?? pick([1, 2, 3, 5, 8, 17, 33, 64]);
  const vals = logitValues(n, v, chance(0.15));
  let data: Float32Array | Uint16Array;
  if (dtype === 'float32') {
    data = floatStorage(n * v);
    data.set(vals);
  } else {
    const enc = gk.encodeFloats(vals, dtype) as Uint16Array;
    data = chance(0.3) ? new Uint16Array(new SharedArrayBuffer(Math.max(2, enc.byteLength))).subarray(0, enc.length) : enc;
    if (data !== enc) data.set(enc);
  }
  const shape = chance(0.3) && n % 2 === 0 && n > 0 ? [2, n / 2, v] : [n, v];
  const t = gk.Tensor.from(data, { dtype, shape });
  if (chance(0.03)) t.dispose();
  return t;
}

function targetsFor(n: number, v: number): unknown {
  const ids = Array.from({ length: n }, () => (chance(0.1) ? -100 : int(0, v)));
  if (chance(0.05) && n > 0) ids[int(0, n)] = pick([v, -1, 2 ** 40, 1.5, NaN]);
  if (chance(0.05)) ids.push(0);
  return pick<() => unknown>([
    () => ids,
    () => ids,
    () => Int32Array.from(ids.map((x) => (Number.isInteger(x) && Math.abs(x) < 2 ** 31 ? x : 0))),
    () => BigInt64Array.from(ids.map((x) => (Number.isInteger(x) ? BigInt(x) : 0n))),
    () => gk.Tensor.from(Int32Array.from(ids.map((x) => (Number.isInteger(x) && Math.abs(x) < 2 ** 31 ? x : 0)))),
    () => gk.Tensor.from(Float32Array.from(ids)),
    () => junk(),
  ])();
}

function floatsFor(n: number, finite = true): unknown {
  const vals = Array.from({ length: n }, () => normal());
  if (!finite || chance(0.05)) if (n > 0) vals[int(0, n)] = pick([NaN, Infinity, -Infinity]);
  if (chance(0.05)) vals.pop();
  return pick<() => unknown>([
    () => vals,
    () => Float32Array.from(vals),
    () => Float64Array.from(vals),
    () => {
      const s = floatStorage(vals.length);
      s.set(vals);
      return s;
    },
    () => gk.Tensor.from(Float32Array.from(vals)),
    () => (chance(0.5) ? junk() : vals.map(String)),
  ])();
}

function maskFor(n: number): unknown {
  const m = Array.from({ length: n }, () => (chance(0.8) ? 1 : 0));
  return pick<() => unknown>([() => m, () => Uint8Array.from(m), () => m.map(Boolean), () => gk.Tensor.from(Uint8Array.from(m)), () => (chance(0.5) ? [2, ...m.slice(1)] : junk())]);
}

/** An options object: the given valid entries, some replaced by adversarial values, sometimes an unknown key. */
function options(valid: Record<string, () => unknown>): unknown {
  if (chance(0.03)) return junk();
  const o: Record<string, unknown> = {};
  for (const [k, f] of Object.entries(valid)) if (chance(0.4)) o[k] = chance(0.85) ? f() : junk();
  if (chance(0.03)) o[pick(['temprature', 'beta2', 'foo'])] = 1;
  return o;
}

// ---------------------------------------------------------------------------------------------
// Calls. Each returns a description and a thunk; `rawCall` marks raw-addon calls.

interface Call {
  name: string;
  raw: boolean;
  run: () => unknown;
  after?: () => void; // runs right after the call was made (while it is in flight)
}

const LOSS_OPTS: Record<string, () => unknown> = {
  lossType: () => pick(['grpo', 'bnpo', 'dr_grpo', 'dapo', 'gspo', 'cispo', 'ppo', 'sapo', 'luspo', 'vespo', 'geoMean', 'clipCov', 'klCov', 'gpg', 'geo_mean']),
  surrogate: () => pick(['clip', 'cispo', 'sapo', 'x', 'gpg', 'cispoTwoSided', 'vespo', 'geoMean', 'clipCov', 'klCov']),
  epsilon: () => num(0.2), epsilonLow: () => num(0.2), epsilonHigh: () => num(0.28), delta: () => num(3),
  tauPos: () => num(1), tauNeg: () => num(1.05), importanceSamplingLevel: () => pick(['token', 'sequence', 'sequenceToken', 'seq']),
  beta: () => num(0.04), klEstimator: () => pick(['k1', 'k2', 'k3', 'k4']), entropyCoef: () => num(0.01),
  aggregation: () => pick(['seqMeanTokenMean', 'tokenMean', 'constant', 'seqMeanTokenSum', 'sum']),
  normalizer: () => num(pick([5, 1e-310, 5e-324, 1e300])), maxCompletionLength: () => num(8), maskTruncatedCompletions: () => chance(0.5),
  topEntropyQuantile: () => num(pick([1, 0.5, 0.2])),
  // §9.1-9.3
  advantagesPerToken: () => chance(0.5),
  rolloutCorrection: () => pick<unknown>([
    false, {}, { level: pick(['token', 'sequence', 'sequenceMean', 'seq']), mode: pick(['truncate', 'mask', 'x']), clipMin: num(0.5), clipMax: num(2), batchNormalize: chance(0.5) },
    junk(),
  ]),
  rolloutRejection: () => pick<unknown>([
    [], [{ statistic: pick(['token_k1', 'token_k2', 'token_k3', 'seqSum_k1', 'seqMean_k2', 'seqMax_k3', 'seqMax_k1']), threshold: pick<unknown>([num(0.1), num(2), [num(0.5), num(2)]]) }],
    Array(9).fill({ statistic: 'token_k3', threshold: 1 }), junk(),
  ]),
  offPolicyMaskThreshold: () => num(0.05), biasCorrectedKl: () => chance(0.5),
  // §9.7, §9.8
  entropyForm: () => pick(['aggregated', 'tokenMean', 'mean']), entropyThreshold: () => num(1), returnValidEntropies: () => chance(0.5),
  // §9.4 (valid values, adversarial ones through num(); ratios also near and past their bounds)
  vespoKPos: () => num(2), vespoLambdaPos: () => num(pick([3, 1e-6, 0])), vespoKNeg: () => num(3), vespoLambdaNeg: () => num(2),
  clipCovRatio: () => num(pick([0.2, 2e-4, 1, 1.5])), clipCovLb: () => num(pick([1, 0.05, 6])), clipCovUb: () => num(5),
  klCovRatio: () => num(pick([0.1, 2e-4, 1, 0])), ppoKlCoef: () => num(pick([1, 0, -1])),
  covSeed: () => num(pick([0, 7, 2 ** 40 + 3, 2 ** 53 - 1, 2 ** 53, -1, 1.5])),
};

function publicCall(): Call {
  const which = int(0, 15);
  switch (which) {
    case 0: {
      const x = logitsTensor();
      const n = x.disposed ? 3 : x.size / Math.max(1, x.shape.at(-1)!);
      const v = x.shape.at(-1)!;
      const tg = targetsFor(n, v);
      const o = options({ temperature: () => num(0.7), ignoreIndex: () => num(-100), entropy: () => chance(0.5), checkFinite: () => chance(0.5), sumP2: () => chance(0.5) });
      return { name: `tokenLogProbs ${x}`, raw: false, run: () => gk.tokenLogProbs(x, tg as never, o as never) };
    }
    case 1: {
      const x = logitsTensor();
      const n = x.disposed ? 3 : x.size / Math.max(1, x.shape.at(-1)!);
      const v = x.shape.at(-1)!;
      const tg = targetsFor(n, v);
      const grads = chance(0.05) ? junk() : { ...(chance(0.8) ? { gradLogp: floatsFor(n) } : {}), ...(chance(0.3) ? { gradEntropy: floatsFor(n) } : {}) };
      const o = options({ temperature: () => num(1.3), ignoreIndex: () => num(-100), lse: () => floatsFor(n), entropy: () => floatsFor(n), inPlace: () => chance(0.5) });
      return { name: `tokenLogProbsBackward ${x}`, raw: false, run: () => gk.tokenLogProbsBackward(x, tg as never, grads as never, o as never) };
    }
    case 2: {
      const g = int(1, 5);
      const n = g * int(1, 5) + (chance(0.05) ? 1 : 0);
      const rewards = chance(0.3) ? [floatsFor(n), floatsFor(n)] : chance(0.1) ? junk() : floatsFor(n);
      const o = chance(0.05) ? junk() : {
        ...(options({
          scale: () => pick(['group', 'batch', 'none', 'z']),
          estimator: () => pick(['grpo', 'rloo', 'reinforcePlusPlus', 'reinforcePlusPlusBaseline', 'opo', 'gpg', 'grpoPassK', 'x']),
          multiObjectiveAggregation: () => pick(['sumThenNormalize', 'normalizeThenSum', 'normalize_then_sum']),
          lengths: () => floatsFor(chance(0.9) ? n : n + 1),
          eps: () => num(1e-4), weights: () => [num(1), num(2)],
          batchStats: () => (chance(0.2) ? junk() : { count: num(5), mean: num(0), m2: num(3) }), returnPartials: () => chance(0.5),
          gpgCounts: () => (chance(0.2) ? junk() : { valid: num(20), nonzero: num(5) }),
        }) as object),
        groupSize: num(g),
      };
      return { name: `groupAdvantages n=${n} g=${g}`, raw: false, run: () => gk.groupAdvantages(rewards as never, o as never) };
    }
    case 3:
    case 4: {
      const x = logitsTensor();
      const rows = x.disposed ? [3] : x.shape.slice(0, -1);
      const n = rows.reduce((a, b) => a * b, 1);
      const v = x.shape.at(-1)!;
      const s = rows.length >= 2 ? rows[0]! : Math.max(1, pick([1, n, 2]));
      const inputs: Record<string, unknown> = { logits: x, targets: targetsFor(n, v), advantages: floatsFor(chance(0.9) ? s : s + 1) };
      if (chance(0.3)) {
        const cut = int(0, n + 1);
        inputs.seqOffsets = pick([[0, cut, n], [0, n], [0, n + 1], [0, -1, n], [1, n], BigInt64Array.from([0n, BigInt(n)])]);
        inputs.advantages = floatsFor(Array.isArray(inputs.seqOffsets) || ArrayBuffer.isView(inputs.seqOffsets) ? (inputs.seqOffsets as ArrayLike<unknown>).length - 1 : 1);
      }
      if (chance(0.4)) inputs.completionMask = maskFor(n);
      if (chance(0.4)) inputs.oldLogp = floatsFor(n);
      if (chance(0.4)) inputs.refLogp = floatsFor(n);
      if (chance(0.3)) inputs.samplerLogp = floatsFor(chance(0.9) ? n : n + 1);
      if (chance(0.2)) inputs.advantages = floatsFor(n); // per token
      if (chance(0.2)) inputs.truncated = maskFor(s);
      const o = options({ ...LOSS_OPTS, temperature: () => num(1), ignoreIndex: () => num(-100), checkFinite: () => chance(0.5), inPlace: () => chance(0.5) });
      return { name: `grpoLoss(logits) ${x}`, raw: false, run: () => gk.grpoLoss(inputs as never, o as never) };
    }
    case 5: {
      const n = int(0, 9);
      const s = pick([1, 2, n || 1]);
      const shaped = chance(0.3) && n % 2 === 0 && n > 0;
      const logp = shaped ? gk.Tensor.from(Float32Array.from({ length: n }, () => -Math.abs(normal())), { shape: [2, n / 2] }) : floatsFor(n);
      const inputs: Record<string, unknown> = { logp, advantages: floatsFor(shaped ? 2 : s) };
      if (chance(0.3)) inputs.entropy = floatsFor(n);
      if (chance(0.3)) inputs.seqOffsets = pick([[0, n], [0, int(0, n + 1), n], [0, n, n + 2], [0, 'a', n], [0, Symbol('z')]]);
      if (chance(0.3)) inputs.completionMask = maskFor(n);
      if (chance(0.3)) inputs.refLogp = floatsFor(n);
      if (chance(0.3)) inputs.samplerLogp = floatsFor(n);
      if (chance(0.2)) inputs.advantages = floatsFor(n); // per token
      const o = options(LOSS_OPTS);
      return { name: `grpoLoss(logp) n=${n}`, raw: false, run: () => gk.grpoLoss(inputs as never, o as never) };
    }
    case 6: {
      const st = logitsTensor();
      const te = chance(0.85) && !st.disposed ? gk.Tensor.from(st.size ? gk.encodeFloats(logitValues(1, st.size, false), 'float32') : new Float32Array(0), { shape: st.shape }) : logitsTensor();
      const rows = st.disposed ? [3] : st.shape.slice(0, -1);
      const n = rows.reduce((a, b) => a * b, 1);
      const inputs: Record<string, unknown> = { student: st, teacher: te };
      if (chance(0.5)) inputs.targets = targetsFor(n, st.shape.at(-1)!);
      if (chance(0.3)) inputs.completionMask = maskFor(n);
      if (chance(0.2)) inputs.seqOffsets = pick([[0, n], [0, 2 ** 40, n], [0, int(0, n + 1), n], 5, 'x', [0, n + 1]]);
      const o = options({
        divergence: () => pick(['forwardKL', 'reverseKL', 'jsd', 'kl']), beta: () => num(0.5), temperature: () => num(1.5), ignoreIndex: () => num(pick([-100, 2 ** 40])),
        hardLabelWeight: () => num(0.5), aggregation: () => pick(['tokenMean', 'seqMeanTokenMean', 'constant', 'seqMeanTokenSum', 'x']),
        normalizer: () => num(pick([3, 1e-310])), maxCompletionLength: () => num(4), grad: () => chance(0.8), inPlace: () => chance(0.3), rowLoss: () => chance(0.5),
      });
      return { name: `distillationLoss ${st} ${te}`, raw: false, run: () => gk.distillationLoss(inputs as never, o as never) };
    }
    case 7: {
      const x = logitsTensor();
      const o = options({
        temperature: () => num(0.8), greedy: () => chance(0.3), topK: () => num(int(0, 10)), topP: () => num(0.9), minP: () => num(0.05),
        seed: () => num(int(0, 1000)), step: () => num(int(0, 5)), rowOffset: () => num(int(0, 5)), rowIds: () => floatsFor(x.disposed ? 1 : x.size / Math.max(1, x.shape.at(-1)!)),
      });
      return { name: `sampleTokens ${x}`, raw: false, run: () => gk.sampleTokens(x, o as never) };
    }
    case 8: {
      const n = int(0, 6);
      const inputs = chance(0.05) ? junk() : { chosen: floatsFor(n), rejected: floatsFor(n), ...(chance(0.3) ? { margins: floatsFor(n) } : {}) };
      const o = options({ margin: () => num(0.5), reduction: () => pick(['mean', 'sum', 'none']) });
      return { name: `bradleyTerryLoss n=${n}`, raw: false, run: () => gk.bradleyTerryLoss(inputs as never, o as never) };
    }
    case 9: {
      // Tensors: construction, conversion, copies, detached and disposed storage.
      const f = pick<[string, () => unknown]>([
        ['Tensor.zeros junk', () => gk.Tensor.zeros(junk() as never, (chance(0.5) ? junk() : undefined) as never)],
        ['Tensor.zeros shape', () => gk.Tensor.zeros(pick([[2, 3], [0], [2 ** 53], [1e10, 1e10], [-1], [2.5], [NaN], [2 ** 31, 0], [0, 2 ** 50]]))],
        ['Tensor.from junk', () => gk.Tensor.from(junk() as never, junk() as never)],
        ['Tensor.from shape', () => gk.Tensor.from(new Float32Array(6), { shape: pick([[2, 3], [6], [3, 3], [-6], [Infinity], [6, 1e300, 0]]) as never })],
        ['Tensor.from resizable', () => gk.Tensor.from(new Float32Array(new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer)(8, { maxByteLength: 16 })))],
        ['clone detached', () => {
          const d = new Float32Array(4);
          const x = gk.Tensor.from(d);
          keepAlive.push(structuredClone(d.buffer, { transfer: [d.buffer] }));
          return x.clone();
        }],
        ['clone/toFloat32/to', async () => {
          const x = logitsTensor();
          const c = await x.clone();
          c.toFloat32();
          await c.to('cpu');
          await c.toArray();
          c.dispose();
          c.dispose();
          return c.data;
        }],
        ['pointer on a host tensor', () => gk.Tensor.zeros([2]).pointer()],
        ['to junk device', () => gk.Tensor.zeros([2]).to(junk() as never)],
      ]);
      return { name: f[0], raw: false, run: f[1] };
    }
    case 10: {
      const f = pick<[string, () => unknown]>([
        ['encodeFloats', () => gk.encodeFloats(chance(0.5) ? (junk() as never) : [1, 2, NaN], chance(0.5) ? 'bfloat16' : (junk() as never))],
        ['decodeFloats', () => gk.decodeFloats(chance(0.5) ? (junk() as never) : new Uint16Array(3), chance(0.5) ? 'float16' : (junk() as never))],
        ['toBFloat16', () => gk.toBFloat16(junk() as never)],
        ['toFloat16', () => gk.toFloat16(junk() as never)],
        ['fromBFloat16', () => gk.fromBFloat16(junk() as never)],
        ['fromFloat16', () => gk.fromFloat16(junk() as never)],
        ['resolveLossOptions', () => gk.resolveLossOptions(options(LOSS_OPTS) as never)],
        ['resolveDevice', () => gk.resolveDevice(pick(['cpu', 'auto', 'cuda', junk()]) as never)],
        ['Device.open', () => gk.Device.open(pick(['cpu', 'auto', 'cuda', junk()]) as never, chance(0.5) ? (junk() as never) : { index: num(0) as never })],
        ['Device.cpu.empty', () => gk.Device.cpu.empty(pick([[2], junk()]) as never, pick(['float32', junk()]) as never)],
        ['setDefaultDevice', () => gk.setDefaultDevice(pick(['cpu', 'cuda', junk()]) as never)],
        ['backendInfo', () => gk.backendInfo()],
        ['Rng', () => new gk.Rng(num(5) as never).int(num(0) as never, num(5) as never)],
        ['SplitRng', () => new gk.SplitRng(junk() as never)],
      ]);
      return { name: f[0], raw: false, run: f[1] };
    }
    case 11: {
      const f = pick<[string, () => unknown]>([
        ['formatReward', () => gk.formatReward(junk() as never, junk() as never)],
        ['tagCountReward', () => gk.tagCountReward(junk() as never)],
        ['extractAnswer', () => gk.extractAnswer(junk() as never)],
        ['normalizeNumber', () => gk.normalizeNumber(junk() as never)],
        ['accuracyReward', () => gk.accuracyReward(junk() as never, junk() as never)],
        ['overlongPenalty', () => gk.overlongPenalty(num(10) as never, junk() as never)],
        ['combineRewards', () => gk.combineRewards(junk() as never)],
        ['combineRewards()()', () => gk.combineRewards([{ name: 'a', fn: () => junk() as never }])({ prompt: '', completion: '', completionLength: 0 })],
        ['evaluateRewards', () => gk.evaluateRewards(junk() as never, junk() as never)],
        ['GRPOTrainer', () => new gk.GRPOTrainer(junk() as never)],
        ['sampleCompletions', () => gk.sampleCompletions(junk() as never, junk() as never, junk() as never, junk() as never)],
      ]);
      return { name: f[0], raw: false, run: f[1] };
    }
    case 12: {
      // In-place ops on a tensor other ops are reading, all in flight together.
      const x = logitsTensor({ n: int(1, 6), v: pick([3, 16, 64]) });
      const n = x.size / x.shape.at(-1)!;
      const tg = Array.from({ length: n }, () => 0);
      return {
        name: `in-place race ${x}`, raw: false,
        run: () => Promise.all([
          gk.tokenLogProbs(x, tg, { entropy: true }),
          gk.tokenLogProbsBackward(x, tg, { gradLogp: new Array<number>(n).fill(1) }, { inPlace: true }),
          gk.grpoLoss({ logits: x, targets: tg, advantages: [1] }, { inPlace: true }),
          gk.distillationLoss({ student: x, teacher: x }, { inPlace: true }),
          gk.sampleTokens(x),
        ]),
        after: () => {
          if (chance(0.5)) x.dispose();
        },
      };
    }
    case 13: {
      // One very wide row (2^23 bf16 logits): its float32 scratch rows pass the fuzz run's
      // 64 MiB cap for some ops, which must fail with GK_OOM, not grow the process.
      if (!chance(0.05)) return publicCall();
      const x = gk.Tensor.from(new Uint16Array(2 ** 23).fill(0x3f80), { dtype: 'bfloat16', shape: [1, 2 ** 23] });
      const f = pick<[string, () => unknown]>([
        ['distillationLoss', () => gk.distillationLoss({ student: x, teacher: x })],
        ['sampleTokens', () => gk.sampleTokens(x, { topP: 0.5 })],
        ['grpoLoss', () => gk.grpoLoss({ logits: x, targets: [1], advantages: [1] })],
        ['tokenLogProbs', () => gk.tokenLogProbs(x, [3])],
      ]);
      return { name: `wide row ${f[0]} ${x}`, raw: false, run: f[1] };
    }
    default: {
      // A valid call whose input arrays are changed or dropped while it runs.
      const x = logitsTensor({ n: int(1, 6), v: pick([5, 32]) });
      const n = x.size / x.shape.at(-1)!;
      const tg = Int32Array.from({ length: n }, () => 1);
      const adv = new Float32Array([1]);
      return {
        name: `mutate-while-running ${x}`, raw: false,
        run: () => gk.grpoLoss({ logits: x, targets: tg, advantages: adv }),
        after: () => {
          tg.fill(2 ** 30);
          adv[0] = NaN;
          if (!x.disposed) (x.data as Float32Array | Uint16Array).fill(0xffff);
          x.dispose();
        },
      };
    }
  }
}

// Raw addon: a valid argument object per entry point, then some fields broken.
function rawBase(entry: string): Record<string, unknown> {
  const n = int(0, 6);
  const v = pick([1, 3, 8, 20]);
  const s = Math.max(1, Math.min(n, 2));
  const cut = n >= 2 ? int(0, n + 1) : n;
  const offsets = s === 2 ? BigInt64Array.from([0n, BigInt(cut), BigInt(n)]) : BigInt64Array.from([0n, BigInt(n)]);
  const f32 = (len: number) => {
    const a = floatStorage(len);
    for (let i = 0; i < len; i++) a[i] = normal();
    return a;
  };
  const tg = Int32Array.from({ length: n }, () => (chance(0.2) ? -100 : int(0, v)));
  const opts = {
    surrogate: int(0, 3), importanceSamplingLevel: int(0, 3), klEstimator: int(0, 3), aggregation: int(0, 4), epsilonLow: 0.2, epsilonHigh: 0.28,
    delta: 0, tauPos: 1, tauNeg: 1.05, beta: 0, entropyCoef: 0, normalizer: 0, maxCompletionLength: 0, maskTruncatedCompletions: false,
    topEntropyQuantile: 1,
  };
  switch (entry) {
    case 'tokenLogProbs':
      return { logits: f32(n * v), dtype: 0, n, v, targets: tg, temperature: 1, ignoreIndex: -100, checkFinite: chance(0.5), logp: f32(n), entropy: f32(n), lse: f32(n), ...(chance(0.5) ? { sumP2: f32(n) } : {}) };
    case 'tokenLogProbsBackward':
      return { logits: f32(n * v), dtype: 0, n, v, targets: tg, temperature: 1, ignoreIndex: -100, gradLogp: f32(n), grad: f32(n * v) };
    case 'groupAdvantages': {
      const g = int(1, 4);
      const m = g * int(1, 3);
      return {
        rewards: new Float64Array(m).map(() => normal()), k: 1, n: m, groupSize: g, scale: int(0, 3), estimator: int(0, 7), aggregation: int(0, 2), eps: 1e-4,
        ...(chance(0.6) ? { lengths: new Float64Array(m).map(() => int(0, 50)) } : {}),
        advantages: f32(m), combined: new Float64Array(m), groupMean: new Float64Array(m / g), groupStd: new Float64Array(m / g),
      };
    }
    case 'grpoLossStep':
      return { n, logp: f32(n), s, seqOffsets: offsets, advantages: f32(s), dlogp: f32(n), options: opts, ...(chance(0.3) ? { entropy: f32(n), dentropy: f32(n) } : {}) };
    case 'grpoLossFused':
      return {
        logits: f32(n * v), dtype: 0, n, v, targets: tg, temperature: 1, ignoreIndex: -100, checkFinite: false, s, seqOffsets: offsets, advantages: f32(s),
        logp: f32(n), entropy: f32(n), lse: f32(n), grad: f32(n * v), options: opts,
      };
    case 'distillLoss':
      return {
        n, v, student: f32(n * v), studentDtype: 0, teacher: f32(n * v), teacherDtype: 0, targets: tg, ignoreIndex: -100, s, seqOffsets: offsets,
        divergence: int(0, 3), beta: 0.5, temperature: 1, hardLabelWeight: chance(0.5) ? 0.5 : 0, aggregation: int(0, 4), normalizer: 0,
        maxCompletionLength: 0, grad: f32(n * v), rowLoss: f32(n),
      };
    case 'sampleTokens':
      return {
        logits: f32(n * v), dtype: 0, n, v, temperature: 1, greedy: chance(0.3), topK: int(0, 4), topP: 0.9, minP: 0, seed: 1, step: 0, rowOffset: 0,
        tokens: new Int32Array(n), logp: f32(n), logpTruncated: f32(n),
      };
    default:
      return { n: Math.max(1, n), chosen: f32(Math.max(1, n)), rejected: f32(Math.max(1, n)), margin: 0, sum: false, gradChosen: f32(Math.max(1, n)), gradRejected: f32(Math.max(1, n)) };
  }
}

const RAW_OPS = ['tokenLogProbs', 'tokenLogProbsBackward', 'groupAdvantages', 'grpoLossStep', 'grpoLossFused', 'distillLoss', 'sampleTokens', 'bradleyTerryLoss'];

const isTyped = (x: unknown): x is Float32Array => ArrayBuffer.isView(x) && !(x instanceof DataView);

function rawCall(): Call {
  if (chance(0.08)) {
    // The device entry points (no GPU here: each must refuse with a code) and info().
    const f = pick<[string, () => unknown]>([
      ['deviceOpen', () => raw.deviceOpen!(junk())],
      ['deviceAlloc', () => raw.deviceAlloc!(num(0), num(64))],
      ['deviceWrap', () => raw.deviceWrap!(num(0), chance(0.5) ? 1234n : junk(), num(64), junk())],
      ['deviceRelease', () => raw.deviceRelease!(junk())],
      ['deviceUpload', () => raw.deviceUpload!(junk(), new Float32Array(2))],
      ['deviceDownload', () => raw.deviceDownload!(junk(), junk())],
      ['deviceCopy', () => raw.deviceCopy!(junk(), junk(), junk())],
      ['devicePointer', () => raw.devicePointer!(junk())],
      ['deviceSynchronize', () => raw.deviceSynchronize!(junk())],
      ['deviceMemory', () => raw.deviceMemory!(num(0))],
      ['deviceResetPeak', () => raw.deviceResetPeak!(num(0))],
      ['deviceLastOpMs', () => raw.deviceLastOpMs!(num(0))],
      ['info', () => raw.info!()],
      ['op without arguments', () => raw[pick(RAW_OPS)]!()],
      ['op with junk', () => raw[pick(RAW_OPS)]!(junk())],
    ]);
    return { name: `raw ${f[0]}`, raw: true, run: f[1] };
  }
  const entry = pick(RAW_OPS);
  const o = rawBase(entry);
  const keys = Object.keys(o);
  const changes: string[] = [];
  let after: (() => void) | undefined;
  // Targeted: the index and divisor arguments the backends must check before touching memory.
  if ('seqOffsets' in o && chance(0.15)) {
    const n = BigInt(Number(o.n) || 0);
    const offs = pick([[0n, 2n ** 40n, n], [0n, -3n, n], [0n, n + 1n], [5n, n], [0n, n, n - 1n], [0n, 2n ** 62n]]);
    o.seqOffsets = BigInt64Array.from(offs);
    o.s = offs.length - 1;
    if ('advantages' in o) o.advantages = new Float32Array(offs.length - 1);
    changes.push(`seqOffsets [${offs.join(', ')}]`);
  }
  if (entry === 'distillLoss' && chance(0.15)) {
    const n = Number(o.n) || 0;
    o.targets = BigInt64Array.from({ length: n }, (_, i) => (i % 2 ? 2n ** 40n : 0n));
    o.ignoreIndex = 2 ** 40;
    o.hardLabelWeight = 1;
    o.normalizer = pick([1e-310, 5e-324, 1e-300]);
    changes.push(`normalizer ${String(o.normalizer)}, ignoreIndex 2^40`);
  }
  if ((entry === 'grpoLossStep' || entry === 'grpoLossFused') && chance(0.1)) {
    (o.options as Record<string, unknown>).normalizer = pick([1e-310, 5e-324, -1, NaN]);
    (o.options as Record<string, unknown>).aggregation = 1;
    changes.push('loss normalizer');
  }
  if ((entry === 'grpoLossStep' || entry === 'grpoLossFused') && chance(0.3)) {
    // §9.1-9.3: sampler log-probs (sometimes short), per-token advantages, correction options.
    const n = Number(o.n) || 0;
    const opt = o.options as Record<string, unknown>;
    if (chance(0.8)) o.samplerLogp = new Float32Array(chance(0.85) ? n : Math.max(0, n - 1)).map(() => normal());
    opt.rolloutLevel = int(0, 5);
    opt.rolloutMode = int(0, 3);
    opt.rolloutClipMin = pick([0, 0.5, 3, NaN]);
    opt.rolloutClipMax = pick([3, 1, Infinity]);
    opt.rolloutBatchNormalize = chance(0.5);
    opt.rejection = pick<unknown>([[], [{ agg: int(0, 5), k: int(0, 4), lo: pick([-Infinity, -1, NaN]), hi: pick([0.1, 1, -2]) }], 3, [null]]);
    if (chance(0.5)) opt.offPolicyMaskThreshold = pick([0.05, NaN, -1]);
    opt.biasCorrectedKl = chance(0.5);
    if (chance(0.5)) {
      opt.advantagesPerToken = true;
      if (chance(0.7)) o.advantages = new Float32Array(n).map(() => normal());
    }
    if (chance(0.3)) opt.entropyForm = int(0, 3);
    if (chance(0.3)) opt.entropyThreshold = pick([0.5, NaN, -Infinity]);
    if (chance(0.3)) o.keptMask = new Uint8Array(chance(0.8) ? n : n + 2);
    changes.push('rollout correction');
  }
  if ((entry === 'grpoLossStep' || entry === 'grpoLossFused') && chance(0.3)) {
    // §9.4: every surrogate code (and out-of-range ones) with its parameters, valid or not;
    // with the combinations the spec refuses (non-token ratio, delta, geoMean + top-entropy or off-policy mask).
    const opt = o.options as Record<string, unknown>;
    opt.surrogate = pick([3, 4, 5, 6, 7, 8, 9, -1, 2 ** 31]);
    if (chance(0.3)) opt.importanceSamplingLevel = int(1, 3);
    if (chance(0.2)) opt.delta = pick([3, 0.5, NaN]);
    if (chance(0.2)) opt.topEntropyQuantile = pick([0.5, 0.2]);
    if (chance(0.2)) opt.offPolicyMaskThreshold = pick([0.05, NaN, -1]);
    if (chance(0.3)) {
      const n = Number(o.n) || 0;
      if (chance(0.8)) o.samplerLogp = new Float32Array(n).map(() => normal());
      opt.rolloutLevel = int(0, 5);
      opt.rolloutMode = int(0, 3);
    }
    opt.vespoKPos = pick([2, -1, NaN, Infinity, 1e300]);
    opt.vespoLambdaPos = pick([3, 0, -1, 1e-300, NaN]);
    opt.vespoKNeg = pick([3, 0, Infinity]);
    opt.vespoLambdaNeg = pick([2, 1e300, -Infinity]);
    opt.covRatio = pick([0.2, 2e-4, 1, 0, -0.5, 1.5, NaN]);
    opt.clipCovLb = pick([1, 0.05, 6, NaN, -Infinity]);
    opt.clipCovUb = pick([5, 0.5, Infinity]);
    opt.ppoKlCoef = pick([1, 0, -1, NaN]);
    opt.covSeed = pick<unknown>([0, 7, 2 ** 40 + 3, 2 ** 53, -1, 1.5, NaN, 2 ** 64, 5n, 'x']);
    changes.push('loss type');
  }
  if (entry === 'groupAdvantages' && chance(0.3)) {
    o.batchStats = pick<unknown>([Float64Array.of(4, 0, 2), new Float64Array(2), Float64Array.of(NaN, 0, 1), [1, 2, 3]]);
    o.partials = pick<unknown>([new Float64Array(3), new Float64Array(1)]);
    o.gpgCounts = pick<unknown>([undefined, Float64Array.of(8, 3), new Float64Array(1), Float64Array.of(NaN, 1), Float64Array.of(-1, 1e300), [1, 2]]);
    o.gpgCountsOut = pick<unknown>([undefined, new Float64Array(2), new Float64Array(1), new Float32Array(2)]);
    changes.push('batch statistics');
  }
  const getters = new Set<string>();
  for (let k = chance(0.2) ? 0 : int(1, 4); k > 0; k--) {
    const key = pick(keys);
    if (getters.has(key)) continue;
    const cur = o[key];
    const kind = int(0, 10);
    if (kind === 0) {
      o[key] = junk();
      changes.push(`${key}=junk`);
    } else if (kind === 1 && typeof cur === 'number') {
      o[key] = pick(BAD_NUMBERS);
      changes.push(`${key}=${String(o[key])}`);
    } else if (kind === 2 && isTyped(cur)) {
      // Wrong length, type or a view of someone else's memory.
      const a = cur as Float32Array;
      o[key] = pick<() => unknown>([
        () => new (a.constructor as Float32ArrayConstructor)(Math.max(0, a.length + pick([-1, 1, 5]))),
        () => new Float64Array(a.length),
        () => new Uint8Array(a.byteLength),
        () => new (a.constructor as Float32ArrayConstructor)(new SharedArrayBuffer(Math.max(8, a.byteLength)), 0, a.length),
      ])();
      changes.push(`${key}=other array`);
    } else if (kind === 3 && isTyped(cur)) {
      // A getter handing out a fresh copy on every read.
      const a = cur as Float32Array;
      delete o[key];
      getters.add(key);
      Object.defineProperty(o, key, { get: () => a.slice(), enumerable: true, configurable: true });
      changes.push(`${key}=getter`);
    } else if (kind === 4 && isTyped(cur)) {
      changes.push(`${key} deleted after the call`);
      const prev = after;
      after = () => {
        prev?.();
        delete o[key];
        gc();
      };
    } else if (kind === 5 && key === 'seqOffsets') {
      const n = typeof o.n === 'number' && Number.isSafeInteger(o.n) ? o.n : 0;
      o[key] = BigInt64Array.from(pick([[0n, 2n ** 40n, BigInt(n)], [0n, -3n, BigInt(n)], [0n, BigInt(n) + 1n], [5n, BigInt(n)], [0n, 0n, 0n, 0n]]));
      changes.push('seqOffsets corrupt');
    } else if (kind === 6 && isTyped(cur)) {
      // Contents changed while the op runs (offsets, targets: indices the backend must recheck).
      changes.push(`${key} mutated while running`);
      const prev = after;
      after = () => {
        prev?.();
        const a = cur as unknown as { fill(x: unknown): void; [Symbol.toStringTag]: string };
        if (a instanceof BigInt64Array) a.fill(2n ** 40n);
        else if (a instanceof Int32Array) a.fill(2 ** 30);
        else if (a instanceof Float32Array) a.fill(NaN);
      };
    } else if (kind === 7 && isTyped(cur) && !(cur.buffer instanceof SharedArrayBuffer)) {
      // Transferred away while the op runs (the new owner is kept alive until the calls settle).
      changes.push(`${key} transferred while running`);
      const prev = after;
      after = () => {
        prev?.();
        const b = (cur as Float32Array).buffer as ArrayBuffer;
        if (b.byteLength > 0) keepAlive.push(structuredClone(b, { transfer: [b] }));
      };
    } else if (kind === 8) {
      for (const nk of ['n', 'v', 's', 'k']) if (typeof o[nk] === 'number' && !getters.has(nk) && chance(0.5)) o[nk] = (o[nk] as number) + pick([1, -1, 2 ** 33, 2 ** 62]);
      changes.push('sizes off');
    } else if (kind === 9 && (key === 'options' || key.endsWith('Dtype') || key === 'dtype' || key === 'device')) {
      if (key === 'options') {
        const opts = o.options;
        if (opts !== null && typeof opts === 'object' && Object.keys(opts).length) (opts as Record<string, unknown>)[pick(Object.keys(opts))] = pick(BAD_NUMBERS);
      }
      else o[key] = pick([1, 2, 3, 9, -1, 0.5, 8]);
      changes.push(`${key} changed`);
    }
  }
  if (chance(0.05)) {
    o.device = pick([0, 1, 7, 8, -2, 0.5, NaN]);
    changes.push(`device=${String(o.device)}`);
  }
  const arg = chance(0.03) ? new Proxy(o, {}) : o;
  return { name: `raw ${entry} ${changes.join(', ') || 'valid'}`, raw: true, run: () => raw[entry]!(arg), ...(after ? { after } : {}) };
}

// ---------------------------------------------------------------------------------------------
// The run.

const byCode: Record<string, number> = {};
const bad: { call: string; error: string }[] = [];
let calls = 0;

function classify(c: Call, e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  const coded = typeof code === 'string' && code.startsWith('GK_');
  if (c.raw ? coded : e instanceof gk.GrpoKernelsError && coded) return code as string;
  const desc = e instanceof Error ? `${e.constructor.name}: ${e.message}` : `a thrown ${typeof e}: ${String(e)}`;
  if (bad.length < 50) bad.push({ call: c.name, error: desc.slice(0, 300) });
  return 'UNCODED';
}

function settle(c: Call, index: number): Promise<void> {
  if (traceFd >= 0) fs.writeSync(traceFd, `${index} ${c.name}\n`);
  let p: Promise<unknown>;
  try {
    const r = c.run();
    p = Promise.resolve(r);
  } catch (e) {
    p = Promise.reject(e);
  }
  try {
    c.after?.();
  } catch {
    // the mutation itself may fail (a disposed tensor); that is not the call's outcome
  }
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HangError(c.name)), CALL_TIMEOUT_MS);
  });
  return Promise.race([p, hang]).then(
    () => {
      byCode.ok = (byCode.ok ?? 0) + 1;
    },
    (e) => {
      if (e instanceof HangError) throw e;
      const k = classify(c, e);
      byCode[k] = (byCode[k] ?? 0) + 1;
    },
  ).finally(() => clearTimeout(timer));
}

class HangError extends Error {}

function summary(extra: Record<string, unknown> = {}): string {
  return `GKFUZZ ${JSON.stringify({ seed, calls, byCode, bad, ...extra })}`;
}

async function main(): Promise<void> {
  const t0 = Date.now();
  let nextProgress = 250;
  while (calls < TOTAL) {
    const batch = Math.min(TOTAL - calls, pick([1, 1, 2, 3, 4]));
    const running: Promise<void>[] = [];
    for (let i = 0; i < batch; i++) {
      // Building the arguments uses the public API too (Tensor.from, encodeFloats): a failure
      // there is that call's outcome.
      let c: Call;
      const isRaw = chance(0.45);
      try {
        c = isRaw ? rawCall() : publicCall();
      } catch (e) {
        c = { name: `building the arguments (${String((e as Error)?.stack ?? "").split("\n").slice(1, 5).map((l) => l.trim()).join(" < ")})`, raw: isRaw, run: () => { throw e; } };
      }
      running.push(settle(c, calls + i));
    }
    calls += batch;
    try {
      await Promise.all(running);
    } catch (e) {
      if (e instanceof HangError) {
        console.log(summary({ hang: e.message, ms: Date.now() - t0 }));
        process.exit(3);
      }
      throw e;
    }
    keepAlive = [];
    if (calls >= nextProgress) {
      console.log(`progress ${calls}`);
      nextProgress += 250;
      if (chance(0.5)) gc();
    }
  }
  console.log(summary({ ms: Date.now() - t0, rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20) }));
}

main().catch((e) => {
  console.log(summary({ fatal: String((e as Error)?.stack ?? e) }));
  process.exit(4);
});
