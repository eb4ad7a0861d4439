// Case generators and checkers shared by the tap tests and `grpo-kernels selftest`: each case
// runs one op of the package on fresh random data and compares every output element with the
// float64 reference, using the tolerance table of spec/grpo-math.md.
import * as gk from '../../lib/index';
import type { FloatDType } from '../../lib/index';
import { refGroupAdvantages, type Aggregation, type Estimator, type Scale } from './advantages';
import { decodeBF16, decodeF16 } from './dtype';
import { refGrpoLossFromLogits } from './fused';
import { refTokenLogProbs, refTokenLogProbsBackward } from './logprobs';
import { refGrpoLoss, type RefLossMetrics, type RefLossOptions } from './loss';
import { refDistill, type RefDistillOptions } from './distill';
import { refBradleyTerry } from './preference';
import { Rng } from './random';
import { refSampleTokens, type RefSampleOptions } from './sampling';

/** Spec tolerances: ‖out − ref‖ / ‖ref‖. */
export const TOLERANCE: Record<FloatDType, { value: number; grad: number }> = {
  float32: { value: 1e-5, grad: 1e-5 },
  float16: { value: 1e-5, grad: 1e-3 },
  bfloat16: { value: 1e-5, grad: 8e-3 },
};

export interface Check {
  label: string;
  err: number;
  tol: number;
  pass: boolean;
  detail?: string;
}

export interface CaseResult {
  op: string;
  name: string;
  checks: Check[];
  pass: boolean;
}

/**
 * Relative L2 error over the elements where the reference is finite; every element is also
 * checked for NaN/inf agreement (never NaN where the reference is finite, NaN where it is NaN).
 */
export function compare(label: string, out: ArrayLike<number>, ref: ArrayLike<number>, tol: number): Check {
  if (out.length !== ref.length) return { label, err: Infinity, tol, pass: false, detail: `length ${out.length} != ${ref.length}` };
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i]!;
    const o = out[i]!;
    if (Number.isNaN(r)) {
      if (!Number.isNaN(o)) return { label, err: Infinity, tol, pass: false, detail: `element ${i}: reference NaN, got ${o}` };
      continue;
    }
    if (!Number.isFinite(r)) {
      if (o !== r) return { label, err: Infinity, tol, pass: false, detail: `element ${i}: reference ${r}, got ${o}` };
      continue;
    }
    if (!Number.isFinite(o)) return { label, err: Infinity, tol, pass: false, detail: `element ${i}: reference ${r}, got ${o}` };
    num += (o - r) * (o - r);
    den += r * r;
  }
  const err = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
  return { label, err, tol, pass: err <= tol };
}

export function compareScalar(label: string, out: number | undefined, ref: number | undefined, tol: number): Check {
  if (ref === undefined || out === undefined)
    return { label, err: ref === out ? 0 : Infinity, tol, pass: ref === out, detail: ref === out ? undefined : `got ${out}, reference ${ref}` };
  return compare(label, [out], [ref], tol);
}

/**
 * The loss from logits (spec, "Tolerances"): relative to |loss|, or, where the loss nearly cancels
 * (terms of both signs), to the magnitude of its terms: the same loss with every advantage |A|.
 */
export function lossCheck(out: number, ref: number, tol: number, termScale: () => number): Check {
  const c = compareScalar('loss', out, ref, tol);
  if (c.pass || !Number.isFinite(out) || !Number.isFinite(ref)) return c;
  const scale = Math.max(Math.abs(termScale()), Math.abs(ref));
  const err = Math.abs(out - ref) / scale;
  const pass = err <= tol;
  return { label: 'loss (relative to its terms: it nearly cancels)', err, tol, pass, ...(pass ? {} : { detail: `got ${out}, reference ${ref}, terms ${scale}` }) };
}

function result(op: string, name: string, checks: Check[]): CaseResult {
  return { op, name, checks, pass: checks.every((c) => c.pass) };
}

export interface LogitsSpec {
  n: number;
  v: number;
  dtype: FloatDType;
  /** Fraction of vocabulary entries set to -inf (masked vocabulary). */
  masked?: number;
  /** Rows made entirely -inf. */
  allMaskedRows?: number[];
  scale?: number;
}

/** Random logits in the given dtype, and their exact values (decoded from that dtype) in float64. */
export function makeLogits(rng: Rng, s: LogitsSpec): { tensor: gk.Tensor; values: Float64Array } {
  const size = s.n * s.v;
  const f = new Float32Array(size);
  const scale = s.scale ?? 3;
  for (let i = 0; i < size; i++) f[i] = rng.normal() * scale;
  if (s.masked) for (let r = 0; r < s.n; r++) for (let j = 0; j < s.v; j++) if (rng.next() < s.masked) f[r * s.v + j] = -Infinity;
  for (const r of s.allMaskedRows ?? []) f.fill(-Infinity, r * s.v, (r + 1) * s.v);
  const data = gk.encodeFloats(f, s.dtype);
  const values =
    s.dtype === 'float32' ? Float64Array.from(data as Float32Array) : s.dtype === 'bfloat16' ? decodeBF16(data as Uint16Array) : decodeF16(data as Uint16Array);
  return { tensor: gk.Tensor.from(data, { dtype: s.dtype, shape: [s.n, s.v] }), values };
}

/** Targets in [0, V) whose logit is finite, with ignoreIndex on the listed rows. */
export function makeTargets(rng: Rng, values: Float64Array, n: number, v: number, ignored: number[], ignoreIndex = -100, int64 = false): Int32Array | BigInt64Array {
  const t = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    if (ignored.includes(r)) {
      t[r] = ignoreIndex;
      continue;
    }
    let y = rng.int(0, v);
    for (let k = 0; k < v && !Number.isFinite(values[r * v + y]!); k++) y = (y + 1) % v;
    t[r] = y;
  }
  return int64 ? BigInt64Array.from(t, (x) => BigInt(x)) : t;
}

function randn(rng: Rng, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = rng.normal() * scale;
  return a;
}

// ---------------------------------------------------------------- §1 log-probs

export interface LogProbCase {
  n: number;
  v: number;
  dtype: FloatDType;
  temperature?: number;
  ignoredRows?: number[];
  masked?: number;
  allMaskedRows?: number[];
  int64?: boolean;
}

export function logProbCaseName(c: LogProbCase): string {
  const parts = [`${c.dtype} N=${c.n} V=${c.v}`];
  if (c.temperature !== undefined) parts.push(`T=${c.temperature}`);
  if (c.ignoredRows?.length) parts.push(`ignored=${c.ignoredRows.length}`);
  if (c.masked) parts.push(`masked=${c.masked}`);
  if (c.allMaskedRows?.length) parts.push(`all-inf rows=${c.allMaskedRows.length}`);
  if (c.int64) parts.push('int64 targets');
  return parts.join(' ');
}

export async function runLogProbCase(seed: number, c: LogProbCase): Promise<CaseResult> {
  const rng = new Rng(seed);
  const { tensor, values } = makeLogits(rng, c);
  const ignored = c.ignoredRows ?? [];
  const targets = makeTargets(rng, values, c.n, c.v, ignored, -100, c.int64);
  const opts = { temperature: c.temperature ?? 1, ignoreIndex: -100 };
  const out = await gk.tokenLogProbs(tensor, targets, { ...opts, entropy: true, sumP2: true });
  const ref = refTokenLogProbs(values, c.n, c.v, targets, opts);
  const tol = TOLERANCE[c.dtype].value;
  return result('tokenLogProbs', logProbCaseName(c), [
    compare('logp', out.logp.data as Float32Array, ref.logp, tol),
    compare('entropy', out.entropy!.data as Float32Array, ref.entropy, tol),
    compare('lse', out.lse.data as Float32Array, ref.lse, tol),
    compare('sumP2', out.sumP2!.data as Float32Array, ref.sumP2, tol),
  ]);
}

export async function runBackwardCase(seed: number, c: LogProbCase & { withLse?: boolean; inPlace?: boolean }): Promise<CaseResult> {
  const rng = new Rng(seed);
  const { tensor, values } = makeLogits(rng, c);
  const targets = makeTargets(rng, values, c.n, c.v, c.ignoredRows ?? [], -100, c.int64);
  const opts = { temperature: c.temperature ?? 1, ignoreIndex: -100 };
  const gl = randn(rng, c.n);
  const gh = randn(rng, c.n);
  const ref = refTokenLogProbsBackward(values, c.n, c.v, targets, gl, gh, opts);
  let lse: gk.Tensor | undefined;
  let entropy: gk.Tensor | undefined;
  if (c.withLse) ({ lse, entropy } = await gk.tokenLogProbs(tensor, targets, { ...opts, entropy: true }));
  const grad = await gk.tokenLogProbsBackward(tensor, targets, { gradLogp: gl, gradEntropy: gh }, {
    ...opts, ...(lse ? { lse } : {}), ...(entropy ? { entropy } : {}), inPlace: !!c.inPlace,
  });
  const checks = [compare('grad', grad.toFloat32(), ref, TOLERANCE[c.dtype].grad)];
  if (c.inPlace) checks.push({ label: 'in place', err: grad === tensor ? 0 : 1, tol: 0, pass: grad === tensor });
  const name = `${logProbCaseName(c)}${c.withLse ? ' lse given' : ''}${c.inPlace ? ' in place' : ''}`;
  return result('tokenLogProbsBackward', name, checks);
}

// ---------------------------------------------------------------- §2 advantages

export interface AdvantageCase {
  b: number;
  g: number;
  k?: number;
  scale?: Scale;
  estimator?: Estimator;
  nanFraction?: number;
  /** Groups forced to equal rewards. */
  flatGroups?: number;
  weights?: boolean;
  /** §9.5: multi-objective aggregation. */
  aggregation?: Aggregation;
  /** §9.5: random completion lengths (some 0) as `lengths`. */
  lengths?: boolean;
  /** Rewards drawn from {0, 1} (pass/fail, with ties), not normal. */
  binary?: boolean;
}

const ADV_SCALE_DEFAULT: Record<Estimator, Scale> = {
  grpo: 'group', rloo: 'none', reinforcePlusPlus: 'batch', reinforcePlusPlusBaseline: 'batch', opo: 'none', gpg: 'none', grpoPassK: 'group',
};

export async function runAdvantageCase(seed: number, c: AdvantageCase): Promise<CaseResult> {
  const rng = new Rng(seed);
  const k = c.k ?? 1;
  const n = c.b * c.g;
  const rewards: Float64Array[] = [];
  for (let i = 0; i < k; i++) {
    const r = new Float64Array(n);
    for (let j = 0; j < n; j++)
      r[j] = rng.next() < (c.nanFraction ?? 0) ? NaN : c.binary ? (rng.next() < 0.4 ? 1 : 0) : rng.normal() * 2 + 0.5;
    rewards.push(r);
  }
  for (let gi = 0; gi < (c.flatGroups ?? 0) && gi < c.b; gi++)
    for (const r of rewards) for (let j = 0; j < c.g; j++) r[gi * c.g + j] = 0.1 * (gi + 1);
  const weights = c.weights ? Array.from({ length: k }, () => rng.next() * 2) : undefined;
  const estimator = c.estimator ?? 'grpo';
  const scale = c.scale ?? ADV_SCALE_DEFAULT[estimator];
  const rpp = estimator === 'reinforcePlusPlus' || estimator === 'reinforcePlusPlusBaseline';
  const lengths = c.lengths ? Float64Array.from({ length: n }, () => (rng.next() < 0.1 ? 0 : 1 + Math.floor(rng.next() * 300))) : undefined;
  const eps = rpp ? 1e-8 : 1e-4;
  const opts = {
    groupSize: c.g, scale, estimator, eps, ...(weights ? { weights } : {}), ...(lengths ? { lengths } : {}),
    ...(c.aggregation ? { multiObjectiveAggregation: c.aggregation } : {}),
  };
  // normalizeThenSum takes no scale (it is group-then-batch by definition).
  const apiOpts = c.aggregation === 'normalizeThenSum' ? { ...opts, scale: undefined } : opts;
  const out = await gk.groupAdvantages(k === 1 ? rewards[0]! : rewards, apiOpts);
  const ref = refGroupAdvantages(rewards, opts);
  const checks = [
    compare('advantages', out.advantages.data as Float32Array, ref.advantages, 1e-5),
    compare('combined', out.rewards, ref.combined, 1e-12),
    compare('groupMean', out.groupMean, ref.groupMean, 1e-12),
    compare('groupStd', out.groupStd, ref.groupStd, 1e-12),
    { label: 'zeroVarianceGroups', err: Math.abs(out.zeroVarianceGroups - ref.zeroVarianceGroups), tol: 0, pass: out.zeroVarianceGroups === ref.zeroVarianceGroups },
  ];
  // Exact zeros for zero-variance groups and invalid samples (whitened estimators: invalid samples only).
  const adv = out.advantages.data as Float32Array;
  const whitened = rpp || c.aggregation === 'normalizeThenSum';
  let exact = true;
  for (let i = 0; i < n; i++)
    if ((whitened ? Number.isNaN(ref.combined[i]) : ref.advantages[i] === 0) && adv[i] !== 0) exact = false;
  checks.push({ label: 'exact zeros', err: exact ? 0 : 1, tol: 0, pass: exact });
  const name = `B=${c.b} G=${c.g} K=${k} ${estimator}/${c.aggregation === 'normalizeThenSum' ? 'normalizeThenSum' : scale}${c.nanFraction ? ` nan=${c.nanFraction}` : ''}${c.flatGroups ? ` flat=${c.flatGroups}` : ''}${c.weights ? ' weighted' : ''}${lengths ? ' lengths' : ''}${c.binary ? ' binary' : ''}`;
  return result('groupAdvantages', name, checks);
}

// ---------------------------------------------------------------- §3-5 loss from log-probs

export interface LossCase {
  s: number;
  l: number;
  /** Packed layout with random lengths instead of padded [S, L]. */
  packed?: boolean;
  options: gk.GrpoLossOptions;
  onPolicy?: boolean;
  withRef?: boolean;
  truncated?: boolean;
  emptySequence?: boolean;
  /** §9.1: samplerLogp = oldLogp + N(0, sampler²) (the engine's log-probs). */
  sampler?: number;
  /** §9.3: one advantage per token row (NaN on masked rows). */
  perTokenAdv?: boolean;
}

function lossCaseName(c: LossCase): string {
  const o = JSON.stringify(c.options).replace(/"/g, '').replace(/[{}]/g, '');
  return `S=${c.s} L=${c.l}${c.packed ? ' packed' : ''}${c.onPolicy ? ' on-policy' : ''}${c.withRef ? ' ref' : ''}${c.truncated ? ' truncated' : ''}${c.emptySequence ? ' empty-seq' : ''}${c.sampler ? ` sampler±${c.sampler}` : ''}${c.perTokenAdv ? ' per-token-A' : ''} ${o}`;
}

const CORRECTION_METRICS = [
  'isTruncatedFraction', 'isMaskedFraction', 'rejectedFraction', 'rejectedSeqFraction', 'isWeightMean', 'isWeightMax', 'samplerKl',
  'seqLogRatioMin', 'seqLogRatioMax', 'offPolicyMaskedFraction',
] as const;

/** §9.1/§9.3 inputs of a case: per-token advantages and the sampler's log-probs. */
export function correctionInputs(rng: Rng, c: { sampler?: number; perTokenAdv?: boolean }, n: number, mask: ArrayLike<number> | null, old: ArrayLike<number>) {
  const out: { advantages?: Float32Array; samplerLogp?: Float32Array } = {};
  if (c.perTokenAdv) out.advantages = Float32Array.from({ length: n }, (_, t) => (mask && !mask[t] ? NaN : rng.normal()));
  if (c.sampler) out.samplerLogp = Float32Array.from(old, (x) => x + rng.normal() * c.sampler!);
  return out;
}

function toRefOptions(r: gk.ResolvedLossOptions): RefLossOptions {
  return { ...r };
}

/**
 * The terms of seqLogRatioMin/Max, Σ_t (oldLogp − samplerLogp) over a sequence: the largest
 * Σ_t |o_t| + |q_t| of a sequence (spec, "Tolerances": a sum that nearly cancels is compared
 * relative to its terms).
 */
function logRatioTerms(old: ArrayLike<number>, q: ArrayLike<number> | undefined, offsets: ArrayLike<number>): number {
  if (!q) return 0;
  let best = 0;
  for (let s = 0; s + 1 < offsets.length; s++) {
    let sum = 0;
    for (let t = offsets[s]!; t < offsets[s + 1]!; t++) sum += Math.abs(old[t]!) + Math.abs(q[t]!);
    best = Math.max(best, sum);
  }
  return best;
}

function termsCheck(label: string, out: number | undefined, ref: number | undefined, tol: number, terms: number): Check {
  const c = compareScalar(label, out, ref, tol);
  if (c.pass || out === undefined || ref === undefined || !Number.isFinite(out) || !Number.isFinite(ref)) return c;
  const scale = Math.max(Math.abs(ref), terms);
  const err = Math.abs(out - ref) / scale;
  return { label: `${label} (relative to its terms)`, err, tol, pass: err <= tol, ...(err <= tol ? {} : { detail: `got ${out}, reference ${ref}, terms ${scale}` }) };
}

function metricChecks(m: gk.GrpoLossMetrics, r: RefLossMetrics, lrTerms = 0): Check[] {
  return [
    compareScalar('klMean', m.klMean, r.klMean, 1e-5),
    compareScalar('ratioMean', m.ratioMean, r.ratioMean, 1e-5),
    compareScalar('clipFractionLow', m.clipFractionLow, r.clipFractionLow, 1e-5),
    compareScalar('clipFractionHigh', m.clipFractionHigh, r.clipFractionHigh, 1e-5),
    compareScalar('clipFraction', m.clipFraction, r.clipFraction, 1e-5),
    compareScalar('entropyMean', m.entropyMean, r.entropyMean, 1e-5),
    compareScalar('tokens', m.tokens, r.tokens, 0),
    compareScalar('nonFiniteRows', m.nonFiniteRows, r.nonFiniteRows, 0),
    compareScalar('phiMean', m.phiMean, r.phiMean, 1e-5),
    ...CORRECTION_METRICS.filter((k) => m[k] !== undefined || r[k] !== undefined).map((k) =>
      k === 'seqLogRatioMin' || k === 'seqLogRatioMax' ? termsCheck(k, m[k], r[k], 1e-5, lrTerms) : compareScalar(k, m[k], r[k], 1e-5)),
  ];
}

/** Random sequence layout: offsets, mask with some padding, advantages, truncation flags. */
function makeSequences(rng: Rng, c: { s: number; l: number; packed?: boolean; truncated?: boolean; emptySequence?: boolean }) {
  const offsets = [0];
  for (let i = 0; i < c.s; i++) offsets.push(offsets[i]! + (c.packed ? rng.int(c.emptySequence && i === 0 ? 0 : 1, c.l + 1) : c.l));
  if (c.packed && c.emptySequence) offsets[1] = 0;
  const n = offsets[c.s]!;
  const mask = new Uint8Array(n).fill(1);
  if (!c.packed) {
    for (let i = 0; i < c.s; i++) {
      const len = c.emptySequence && i === 0 ? 0 : rng.int(1, c.l + 1);
      for (let t = len; t < c.l; t++) mask[i * c.l + t] = 0;
    }
  }
  const advantages = randn(rng, c.s);
  const truncated = new Uint8Array(c.s);
  if (c.truncated) for (let i = 0; i < c.s; i++) truncated[i] = rng.next() < 0.3 ? 1 : 0;
  return { offsets, n, mask, advantages, truncated };
}

export async function runLossCase(seed: number, c: LossCase): Promise<CaseResult> {
  const rng = new Rng(seed);
  const seq = makeSequences(rng, c);
  const n = seq.n;
  const logp = new Float32Array(n);
  for (let i = 0; i < n; i++) logp[i] = -Math.abs(rng.normal()) * 2 - 0.01;
  const oldLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.3);
  const refLogp = Float32Array.from(logp, (x) => x + rng.normal() * 0.5);
  const entropy = Float32Array.from(logp, () => rng.next() * 3);
  const corr = correctionInputs(rng, c, n, c.packed ? null : seq.mask, c.onPolicy ? logp : oldLogp);
  const advantages = corr.advantages ?? seq.advantages;
  const inputs: gk.GrpoLossInputs = {
    logp, entropy, advantages,
    ...(corr.samplerLogp ? { samplerLogp: corr.samplerLogp } : {}),
    ...(c.packed ? { seqOffsets: seq.offsets } : { completionMask: seq.mask }),
    ...(c.perTokenAdv && !c.packed ? { seqOffsets: seq.offsets } : {}), // flat rows: the layout is not implied by N advantages
    ...(c.onPolicy ? {} : { oldLogp }),
    ...(c.withRef ? { refLogp } : {}),
    ...(c.truncated ? { truncated: seq.truncated } : {}),
  };
  const out = await gk.grpoLoss(inputs, c.options);
  const ref = refGrpoLoss({
    logp, entropy, advantages, samplerLogp: corr.samplerLogp ?? null, seqOffsets: seq.offsets, mask: c.packed ? null : seq.mask,
    oldLogp: c.onPolicy ? null : oldLogp, refLogp: c.withRef ? refLogp : null, truncated: c.truncated ? seq.truncated : null,
  }, { ...toRefOptions(out.options), maxCompletionLength: out.options.maxCompletionLength ?? (c.packed ? null : c.l) });
  const checks = [
    compareScalar('loss', out.loss, ref.loss, 1e-5),
    compare('gradLogp', out.gradLogp.data as Float32Array, ref.dlogp, 1e-5),
    ...metricChecks(out.metrics, ref.metrics, logRatioTerms(c.onPolicy ? logp : oldLogp, corr.samplerLogp, seq.offsets)),
  ];
  if (out.gradEntropy) checks.push(compare('gradEntropy', out.gradEntropy.data as Float32Array, ref.dentropy, 1e-5));
  return result('grpoLoss', lossCaseName(c), checks);
}

// ---------------------------------------------------------------- §6 fused loss from logits

export interface FusedCase extends LossCase {
  v: number;
  dtype: FloatDType;
  temperature?: number;
  ignoredRows?: number[];
  masked?: number;
  inPlace?: boolean;
}

export async function runFusedCase(seed: number, c: FusedCase): Promise<CaseResult> {
  const rng = new Rng(seed);
  const seq = makeSequences(rng, c);
  const n = seq.n;
  const { tensor, values } = makeLogits(rng, { n, v: c.v, dtype: c.dtype, masked: c.masked ?? 0 });
  const ignored = (c.ignoredRows ?? []).filter((r) => r < n);
  const targets = makeTargets(rng, values, n, c.v, ignored);
  const T = c.temperature ?? 1;
  const base = refTokenLogProbs(values, n, c.v, targets, { temperature: T });
  const oldLogp = Float32Array.from(base.logp, (x) => x + rng.normal() * 0.3);
  const refLogp = Float32Array.from(base.logp, (x) => x + rng.normal() * 0.5);
  const corr = correctionInputs(rng, c, n, c.packed ? null : seq.mask, c.onPolicy ? base.logp : oldLogp);
  const advantages = corr.advantages ?? seq.advantages;
  const seqInputs = {
    advantages,
    ...(corr.samplerLogp ? { samplerLogp: corr.samplerLogp } : {}),
    ...(c.packed || c.perTokenAdv ? { seqOffsets: seq.offsets } : {}),
    ...(c.packed ? {} : { completionMask: seq.mask }),
    ...(c.onPolicy ? {} : { oldLogp }),
    ...(c.withRef ? { refLogp } : {}),
    ...(c.truncated ? { truncated: seq.truncated } : {}),
  };
  const out = await gk.grpoLoss({ logits: tensor, targets, ...seqInputs }, { ...c.options, temperature: T, inPlace: !!c.inPlace });
  const refWith = (advantages: Float32Array) => refGrpoLossFromLogits(values, n, c.v, targets, {
    advantages, samplerLogp: corr.samplerLogp ?? null, seqOffsets: seq.offsets, mask: c.packed ? null : seq.mask,
    oldLogp: c.onPolicy ? null : oldLogp, refLogp: c.withRef ? refLogp : null, truncated: c.truncated ? seq.truncated : null,
  }, { ...toRefOptions(out.options), maxCompletionLength: out.options.maxCompletionLength ?? (c.packed ? null : c.l), temperature: T, ignoreIndex: -100 });
  const ref = refWith(advantages);
  const tol = TOLERANCE[c.dtype];
  const checks = [
    lossCheck(out.loss, ref.loss, tol.value, () => refWith(Float32Array.from(advantages, Math.abs)).loss),
    compare('logp', out.logp.data as Float32Array, ref.logp, tol.value),
    compare('entropy', out.entropy.data as Float32Array, ref.entropy, tol.value),
    compare('gradLogits', out.gradLogits.toFloat32(), ref.grad, tol.grad),
    ...metricChecks(out.metrics, ref.metrics, logRatioTerms(c.onPolicy ? ref.logp : oldLogp, corr.samplerLogp, seq.offsets)),
  ];
  if (c.inPlace) checks.push({ label: 'in place', err: out.gradLogits === tensor ? 0 : 1, tol: 0, pass: out.gradLogits === tensor });
  const name = `${c.dtype} V=${c.v}${T !== 1 ? ` T=${T}` : ''}${ignored.length ? ` ignored=${ignored.length}` : ''}${c.masked ? ` masked=${c.masked}` : ''}${c.inPlace ? ' in place' : ''} ${lossCaseName(c)}`;
  return result('grpoLoss(logits)', name, checks);
}

// ---------------------------------------------------------------- Bradley–Terry

export interface PreferenceCase {
  n: number;
  margin?: number;
  perPairMargins?: boolean;
  sum?: boolean;
  /** Score scale: large values exercise the overflow-free softplus. */
  scale?: number;
}

export async function runPreferenceCase(seed: number, c: PreferenceCase): Promise<CaseResult> {
  const rng = new Rng(seed);
  const scale = c.scale ?? 2;
  const chosen = randn(rng, c.n, scale);
  const rejected = randn(rng, c.n, scale);
  const margins = c.perPairMargins ? Float32Array.from({ length: c.n }, () => rng.next()) : null;
  const out = await gk.bradleyTerryLoss(
    { chosen, rejected, ...(margins ? { margins } : {}) },
    { margin: c.margin ?? 0, reduction: c.sum ? 'sum' : 'mean' },
  );
  const ref = refBradleyTerry(chosen, rejected, margins, c.margin ?? 0, !!c.sum);
  const name = `pairs=${c.n}${c.margin ? ` margin=${c.margin}` : ''}${margins ? ' per-pair margins' : ''}${c.sum ? ' sum' : ''} scale=${scale}`;
  return result('bradleyTerryLoss', name, [
    compareScalar('loss', out.loss, ref.loss, 1e-5),
    compareScalar('accuracy', out.accuracy, ref.accuracy, 0),
    compareScalar('meanMargin', out.meanMargin, ref.meanMargin, 1e-5),
    compare('gradChosen', out.gradChosen.data as Float32Array, ref.gradChosen, 1e-5),
    compare('gradRejected', out.gradRejected.data as Float32Array, ref.gradRejected, 1e-5),
  ]);
}

export function preferenceCases(full: boolean): PreferenceCase[] {
  const out: PreferenceCase[] = [{ n: 1 }, { n: 17, margin: 0.5 }, { n: 64, perPairMargins: true, sum: true }, { n: 33, scale: 200 }];
  if (full) out.push({ n: 4096, margin: -0.25 });
  return out;
}

// ---------------------------------------------------------------- §8 sampling

export interface SamplingCase {
  n: number;
  v: number;
  dtype: FloatDType;
  options: Partial<RefSampleOptions>;
}

export async function runSamplingCase(seed: number, c: SamplingCase): Promise<CaseResult> {
  const rng = new Rng(seed);
  const { tensor, values } = makeLogits(rng, { n: c.n, v: c.v, dtype: c.dtype, masked: c.v > 1 ? 0.1 : 0 });
  const o: RefSampleOptions = { temperature: 1, greedy: false, topK: 0, topP: 1, minP: 0, seed: seed % 100000, step: 3, rowOffset: 0, ...c.options };
  const out = await gk.sampleTokens(tensor, o);
  const ref = refSampleTokens(values, c.n, c.v, o);
  const tok = out.tokens.data as Int32Array;
  let same = 0;
  for (let i = 0; i < c.n; i++) if (tok[i] === ref.tokens[i]) same++;
  return result('sampleTokens', `${c.dtype} N=${c.n} V=${c.v} ${JSON.stringify(c.options).replace(/"/g, '')}`, [
    { label: 'identical tokens', err: c.n - same, tol: 0, pass: same === c.n },
    compare('logp', out.logp.data as Float32Array, ref.logp, TOLERANCE[c.dtype].value),
    compare('logpTruncated', out.logpTruncated.data as Float32Array, ref.logpTruncated, 1e-5),
  ]);
}

export function samplingCases(full: boolean): SamplingCase[] {
  const out: SamplingCase[] = [];
  for (const dtype of DT) {
    out.push({ n: 32, v: 1, dtype, options: {} });
    out.push({ n: 32, v: 257, dtype, options: { temperature: 0.8, topK: 10, topP: 0.9, minP: 0.02 } });
    out.push({ n: 4, v: 151936, dtype, options: { topP: 0.95 } });
    if (full) out.push({ n: 64, v: 4099, dtype, options: { greedy: true } });
  }
  return out;
}

// ---------------------------------------------------------------- §7 distillation

export interface DistillCase {
  s: number;
  l: number;
  v: number;
  student: FloatDType;
  teacher: FloatDType;
  options: Partial<RefDistillOptions>;
  packed?: boolean;
  ignored?: boolean;
  inPlace?: boolean;
}

export async function runDistillCase(seed: number, c: DistillCase): Promise<CaseResult> {
  const rng = new Rng(seed);
  const seq = makeSequences(rng, c);
  const n = seq.n;
  const st = makeLogits(rng, { n, v: c.v, dtype: c.student });
  const te = makeLogits(rng, { n, v: c.v, dtype: c.teacher });
  const targets = makeTargets(rng, st.values, n, c.v, c.ignored ? [0, Math.floor(n / 2)] : []);
  const o: RefDistillOptions = {
    divergence: 'forwardKL', beta: 0.5, temperature: 1, ignoreIndex: -100, hardLabelWeight: 0, aggregation: 'tokenMean', normalizer: null,
    maxCompletionLength: c.l, ...c.options,
  };
  const { normalizer, ...rest } = o;
  const out = await gk.distillationLoss(
    { student: st.tensor, teacher: te.tensor, targets, ...(c.packed ? { seqOffsets: seq.offsets } : { completionMask: seq.mask, seqOffsets: seq.offsets }) },
    { ...rest, ...(normalizer !== null ? { normalizer } : {}), inPlace: !!c.inPlace, rowLoss: true },
  );
  const ref = refDistill(st.values, te.values, n, c.v, targets, c.packed ? null : seq.mask, seq.offsets, o);
  return result('distillationLoss', `${c.student}/${c.teacher} V=${c.v} S=${c.s} L=${c.l}${c.packed ? ' packed' : ''}${c.inPlace ? ' in place' : ''} ${JSON.stringify(c.options).replace(/"/g, '')}`, [
    compareScalar('loss', out.loss, ref.loss, 1e-5),
    compareScalar('tokens', out.tokens, ref.tokens, 0),
    compare('rowLoss', out.rowLoss!.data as Float32Array, ref.rowLoss, 1e-5),
    compare('gradStudent', out.gradStudent!.toFloat32(), ref.grad, TOLERANCE[c.student].grad),
  ]);
}

export function distillCases(full: boolean): DistillCase[] {
  const out: DistillCase[] = [];
  for (const dtype of DT) {
    out.push({ s: 3, l: 4, v: 1, student: dtype, teacher: dtype, options: {} });
    out.push({ s: 4, l: 5, v: 37, student: dtype, teacher: 'float32', options: { divergence: 'reverseKL', temperature: 0.8 }, ignored: true });
    out.push({ s: 4, l: 5, v: 301, student: dtype, teacher: 'bfloat16', options: { divergence: 'jsd', beta: 0.3, aggregation: 'seqMeanTokenMean', hardLabelWeight: 0.2 }, inPlace: true });
    out.push({ s: 1, l: 2, v: 151936, student: dtype, teacher: dtype, options: { hardLabelWeight: 0.5, temperature: 2 } });
    if (full) out.push({ s: 6, l: 7, v: 1001, student: dtype, teacher: 'float16', packed: true, options: { divergence: 'jsd', beta: 0.9, aggregation: 'constant', hardLabelWeight: 0.1 }, ignored: true });
  }
  return out;
}

// ---------------------------------------------------------------- the case lists

const DT: FloatDType[] = ['float32', 'float16', 'bfloat16'];

export function logProbCases(full: boolean): LogProbCase[] {
  const out: LogProbCase[] = [];
  for (const dtype of DT) {
    out.push({ n: 7, v: 1, dtype });
    out.push({ n: 9, v: 33, dtype, ignoredRows: [0, 4], temperature: 0.7 });
    out.push({ n: 16, v: 1001, dtype, masked: 0.2, int64: true });
    out.push({ n: 3, v: 151936, dtype, temperature: 1.3, ignoredRows: [1] });
    if (full) {
      out.push({ n: 64, v: 4099, dtype, masked: 0.5, ignoredRows: [3, 63] });
      out.push({ n: 5, v: 17, dtype, allMaskedRows: [2], ignoredRows: [4] });
    }
  }
  return out;
}

export function backwardCases(full: boolean): (LogProbCase & { withLse?: boolean; inPlace?: boolean })[] {
  const out: (LogProbCase & { withLse?: boolean; inPlace?: boolean })[] = [];
  for (const dtype of DT) {
    out.push({ n: 6, v: 1, dtype });
    out.push({ n: 9, v: 33, dtype, ignoredRows: [2], temperature: 0.7, masked: 0.2 });
    out.push({ n: 12, v: 1001, dtype, withLse: true, int64: true });
    out.push({ n: 2, v: 151936, dtype, inPlace: true });
    if (full) out.push({ n: 40, v: 4099, dtype, masked: 0.4, withLse: true, inPlace: true, temperature: 1.7 });
  }
  return out;
}

export function advantageCases(full: boolean): AdvantageCase[] {
  const out: AdvantageCase[] = [
    { b: 1, g: 1 },
    { b: 5, g: 1, scale: 'batch' },
    { b: 8, g: 4, flatGroups: 2 },
    { b: 8, g: 4, estimator: 'rloo' },
    { b: 6, g: 8, k: 3, weights: true, nanFraction: 0.2, flatGroups: 1 },
    { b: 16, g: 16, scale: 'batch', nanFraction: 0.1 },
    { b: 16, g: 16, scale: 'none' },
    // §9.5
    { b: 12, g: 8, estimator: 'reinforcePlusPlus', nanFraction: 0.1 },
    { b: 12, g: 8, estimator: 'reinforcePlusPlus', lengths: true },
    { b: 12, g: 8, k: 2, weights: true, estimator: 'reinforcePlusPlusBaseline', lengths: true, flatGroups: 2, nanFraction: 0.1 },
    { b: 10, g: 6, estimator: 'opo', lengths: true, flatGroups: 1, nanFraction: 0.15 },
    { b: 10, g: 6, estimator: 'opo', scale: 'group', lengths: true },
    { b: 16, g: 8, estimator: 'gpg', binary: true, nanFraction: 0.05 },
    { b: 16, g: 8, estimator: 'gpg', scale: 'group' },
    { b: 16, g: 8, estimator: 'grpoPassK', binary: true },
    { b: 16, g: 8, estimator: 'grpoPassK', flatGroups: 2, nanFraction: 0.2 },
    { b: 16, g: 8, estimator: 'grpoPassK', scale: 'none' },
    { b: 10, g: 8, k: 3, weights: true, aggregation: 'normalizeThenSum', nanFraction: 0.2, flatGroups: 2 },
    { b: 10, g: 8, k: 2, aggregation: 'normalizeThenSum', binary: true },
  ];
  if (full) {
    out.push({ b: 64, g: 16, k: 2, estimator: 'rloo', scale: 'group', nanFraction: 0.3 });
    out.push({ b: 4, g: 2, k: 2, nanFraction: 0.6 });
    out.push({ b: 64, g: 16, k: 2, estimator: 'reinforcePlusPlusBaseline', binary: true, lengths: true });
    out.push({ b: 64, g: 16, k: 2, estimator: 'opo', scale: 'batch', lengths: true, nanFraction: 0.3 });
    out.push({ b: 64, g: 16, k: 2, estimator: 'gpg', binary: true, weights: true, nanFraction: 0.3 });
    out.push({ b: 40, g: 2, estimator: 'grpoPassK', binary: true });
    out.push({ b: 64, g: 16, k: 4, aggregation: 'normalizeThenSum', weights: true, binary: true, nanFraction: 0.3 });
  }
  return out;
}

/** Spec §9.4: every loss type and surrogate with its parameters (also run by test/loss-types.test.ts). */
export function lossTypeCases(full: boolean): LossCase[] {
  const tokenTruncate = { level: 'token', mode: 'truncate', clipMax: 2 } as const;
  const out: LossCase[] = [
    { s: 5, l: 8, options: { lossType: 'sapo' }, withRef: true },
    { s: 5, l: 8, options: { lossType: 'luspo', beta: 0.04 }, withRef: true, perTokenAdv: true },
    { s: 6, l: 8, packed: true, options: { lossType: 'luspo' }, emptySequence: true },
    { s: 6, l: 8, options: { lossType: 'gpg' } },
    { s: 6, l: 8, options: { lossType: 'gpg', beta: 0.05, topEntropyQuantile: 0.5, entropyCoef: 0.01, maskTruncatedCompletions: true }, withRef: true, perTokenAdv: true, truncated: true },
    { s: 6, l: 8, options: { surrogate: 'cispoTwoSided', epsilonHigh: 0.28 } },
    { s: 6, l: 8, packed: true, options: { surrogate: 'cispoTwoSided', importanceSamplingLevel: 'sequence', aggregation: 'seqMeanTokenSum' }, emptySequence: true },
    { s: 6, l: 8, options: { lossType: 'vespo' } },
    { s: 8, l: 7, options: { lossType: 'vespo', rolloutCorrection: tokenTruncate, beta: 0.05 }, withRef: true, sampler: 0.3 },
    {
      s: 8, l: 7, options: {
        lossType: 'vespo', rolloutCorrection: { level: 'token', mode: 'mask', clipMin: 0.7, clipMax: 1.5, batchNormalize: true }, vespoKPos: 1.5, vespoLambdaPos: 2,
        vespoKNeg: 2.5, vespoLambdaNeg: 1.5, topEntropyQuantile: 0.5, offPolicyMaskThreshold: 0.02,
      }, sampler: 0.3, perTokenAdv: true,
    },
    { s: 6, l: 8, options: { lossType: 'geoMean' }, emptySequence: true },
    { s: 8, l: 7, options: { lossType: 'geoMean', rolloutCorrection: { level: 'token', mode: 'mask', clipMin: 0.6, clipMax: 1.6 }, beta: 0.05, biasCorrectedKl: true }, withRef: true, sampler: 0.4, perTokenAdv: true },
    { s: 8, l: 7, packed: true, options: { lossType: 'geoMean', rolloutCorrection: { level: 'sequence', mode: 'truncate', clipMax: 2 }, epsilonLow: 0.1, epsilonHigh: 0.3, aggregation: 'tokenMean', entropyCoef: 0.01 }, sampler: 0.2 },
    {
      s: 8, l: 7, options: {
        lossType: 'geoMean', rolloutCorrection: { level: 'sequenceMean', mode: 'truncate', clipMin: 0.8, clipMax: 1.2, batchNormalize: true }, maskTruncatedCompletions: true,
        rolloutRejection: [{ statistic: 'token_k3', threshold: 0.05 }],
      }, sampler: 0.3, truncated: true,
    },
    { s: 16, l: 12, options: { lossType: 'clipCov', clipCovRatio: 0.2, clipCovLb: 0.1, clipCovUb: 5 } },
    {
      s: 16, l: 12, options: { lossType: 'clipCov', clipCovRatio: 0.1, clipCovLb: 0.05, clipCovUb: 3, covSeed: 12345678901, beta: 0.05, topEntropyQuantile: 0.5, rolloutCorrection: tokenTruncate },
      withRef: true, perTokenAdv: true, sampler: 0.3,
    },
    { s: 16, l: 12, options: { lossType: 'klCov', klCovRatio: 0.1 } },
    {
      s: 16, l: 12, packed: true, options: { lossType: 'klCov', klCovRatio: 0.2, ppoKlCoef: 0.5, beta: 0.05, rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 1.5 }, offPolicyMaskThreshold: 0.02 },
      withRef: true, sampler: 0.3, perTokenAdv: true, emptySequence: true,
    },
  ];
  if (full) {
    out.push({ s: 48, l: 40, packed: true, options: { lossType: 'clipCov', clipCovRatio: 0.05, covSeed: 7, clipCovLb: 0.5, clipCovUb: 4, entropyForm: 'tokenMean', entropyCoef: 0.01 }, truncated: true });
    out.push({ s: 48, l: 40, options: { lossType: 'klCov', klCovRatio: 0.02, ppoKlCoef: 2, topEntropyQuantile: 0.3, maskTruncatedCompletions: true }, truncated: true });
    out.push({ s: 32, l: 20, options: { lossType: 'vespo', rolloutCorrection: { level: 'token', mode: 'truncate', clipMin: 0.5, clipMax: 3 }, rolloutRejection: [{ statistic: 'seqMean_k3', threshold: 0.04 }], entropyCoef: 0.01 }, sampler: 0.2, emptySequence: true });
    out.push({ s: 32, l: 20, packed: true, options: { lossType: 'geoMean', beta: 0.1, klEstimator: 'k2', aggregation: 'constant', maxCompletionLength: 25 }, withRef: true, perTokenAdv: true });
  }
  return out;
}

/** Spec §9.4 through the fused step from logits. */
export function fusedLossTypeCases(full: boolean): FusedCase[] {
  const out: FusedCase[] = [];
  for (const dtype of DT) {
    out.push({ s: 4, l: 6, v: 65, dtype, options: { lossType: 'vespo', rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 2 } }, sampler: 0.3 });
    out.push({ s: 4, l: 6, v: 129, dtype, options: { lossType: 'geoMean', beta: 0.05 }, withRef: true, ignoredRows: [2] });
    out.push({ s: 8, l: 10, v: 33, dtype, options: { lossType: 'clipCov', clipCovRatio: 0.2, clipCovLb: 0.1 } });
    out.push({ s: 8, l: 10, v: 33, dtype, options: { lossType: 'klCov', klCovRatio: 0.2, entropyCoef: 0.01, topEntropyQuantile: 0.5 }, perTokenAdv: true });
    if (full) {
      out.push({ s: 4, l: 6, v: 257, dtype, options: { lossType: 'gpg', beta: 0.04 }, withRef: true, masked: 0.2 });
      out.push({ s: 4, l: 6, v: 65, dtype, packed: true, options: { surrogate: 'cispoTwoSided', importanceSamplingLevel: 'sequenceToken' }, emptySequence: true });
      out.push({ s: 4, l: 6, v: 65, dtype, options: { lossType: 'luspo', entropyCoef: 0.02 }, truncated: true });
      out.push({ s: 4, l: 6, v: 65, dtype, options: { lossType: 'geoMean', rolloutCorrection: { level: 'sequence', mode: 'mask', clipMax: 1.5 } }, sampler: 0.2, ignoredRows: [0] });
    }
  }
  return out;
}

export function lossCases(full: boolean): LossCase[] {
  const out: LossCase[] = [
    { s: 4, l: 9, options: {} },
    { s: 4, l: 9, options: { lossType: 'bnpo' }, withRef: true },
    { s: 6, l: 7, options: { lossType: 'dr_grpo', beta: 0.04 }, withRef: true },
    { s: 6, l: 7, packed: true, options: { lossType: 'dapo', normalizer: 50 } },
    { s: 5, l: 8, options: { lossType: 'gspo' }, emptySequence: true },
    { s: 5, l: 8, options: { lossType: 'cispo', epsilonHigh: 1.1 } },
    { s: 5, l: 8, options: { surrogate: 'sapo' }, withRef: true },
    { s: 5, l: 8, options: { importanceSamplingLevel: 'sequenceToken', topEntropyQuantile: 0.5 } },
    { s: 5, l: 8, options: { importanceSamplingLevel: 'sequence', topEntropyQuantile: 0.3, entropyCoef: 0.01 } },
    { s: 6, l: 6, options: { delta: 1.5, beta: 0.1, klEstimator: 'k1' }, withRef: true },
    { s: 6, l: 6, options: { beta: 0.1, klEstimator: 'k2', aggregation: 'seqMeanTokenSum' }, withRef: true },
    { s: 6, l: 6, options: { maskTruncatedCompletions: true, aggregation: 'constant', maxCompletionLength: 10 }, truncated: true },
    { s: 3, l: 5, options: { epsilonLow: 0.1, epsilonHigh: 0.3 }, onPolicy: true },
    // §9.3 per-token advantages
    { s: 5, l: 8, options: {}, perTokenAdv: true },
    { s: 5, l: 8, packed: true, options: { lossType: 'gspo', beta: 0.05 }, withRef: true, perTokenAdv: true },
    { s: 4, l: 4, options: { advantagesPerToken: true, surrogate: 'sapo' }, perTokenAdv: true },
    // §9.2 off-policy mask, bias-corrected KL
    { s: 8, l: 6, options: { offPolicyMaskThreshold: 0.05 } },
    { s: 8, l: 6, options: { offPolicyMaskThreshold: 0.02, rolloutCorrection: false }, sampler: 0.3, perTokenAdv: true },
    { s: 6, l: 6, options: { beta: 0.1, biasCorrectedKl: true }, withRef: true },
    { s: 6, l: 6, options: { beta: 0.1, biasCorrectedKl: true, klEstimator: 'k2', importanceSamplingLevel: 'sequence' }, withRef: true },
    { s: 6, l: 6, options: { beta: 0.2, biasCorrectedKl: true, klEstimator: 'k1', importanceSamplingLevel: 'sequenceToken' }, withRef: true },
    // §9.7 the entropy threshold from outside
    { s: 6, l: 7, options: { topEntropyQuantile: 0.5, entropyThreshold: 1.3, entropyCoef: 0.01 } },
    { s: 6, l: 7, packed: true, options: { topEntropyQuantile: 0.2, entropyThreshold: 0.7, entropyForm: 'tokenMean', entropyCoef: 0.03 }, sampler: 0.3 },
    // §9.8 TRL's entropy form
    { s: 6, l: 7, options: { entropyForm: 'tokenMean', entropyCoef: 0.03 } },
    { s: 6, l: 7, packed: true, options: { entropyForm: 'tokenMean', entropyCoef: -0.02, topEntropyQuantile: 0.4, lossType: 'dapo', normalizer: 31 } },
    { s: 6, l: 7, options: { entropyForm: 'tokenMean', entropyCoef: 0.05, topEntropyQuantile: 0.6, aggregation: 'seqMeanTokenSum' }, sampler: 0.3 },
    // §9.1 rollout correction and rejection
    { s: 8, l: 7, options: {}, sampler: 0.6 },
    { s: 8, l: 7, options: { rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 1.5 } }, sampler: 0.4 },
    { s: 8, l: 7, options: { rolloutCorrection: { level: 'token', mode: 'mask', clipMin: 0.5, clipMax: 2 }, beta: 0.05 }, withRef: true, sampler: 0.5 },
    { s: 8, l: 7, packed: true, options: { rolloutCorrection: { level: 'sequenceMean', mode: 'truncate', clipMin: 0.8, clipMax: 1.2, batchNormalize: true } }, sampler: 0.3, emptySequence: true },
    { s: 8, l: 7, options: { rolloutCorrection: { level: 'sequence', mode: 'truncate', clipMax: 2, batchNormalize: true }, lossType: 'gspo' }, sampler: 0.1 },
    { s: 8, l: 7, options: { rolloutCorrection: { level: 'token', mode: 'truncate' }, rolloutRejection: [{ statistic: 'token_k3', threshold: 0.05 }], topEntropyQuantile: 0.5 }, sampler: 0.4 },
    { s: 10, l: 6, options: { rolloutCorrection: false, rolloutRejection: [{ statistic: 'seqMean_k2', threshold: 0.04 }, { statistic: 'token_k1', threshold: [0.6, 2] }], lossType: 'dapo' }, sampler: 0.3 },
    { s: 10, l: 6, options: { rolloutRejection: [{ statistic: 'seqMax_k3', threshold: 0.3 }, { statistic: 'seqSum_k1', threshold: 3 }], offPolicyMaskThreshold: 0.01 }, sampler: 0.3, onPolicy: true },
    { s: 6, l: 6, options: { rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 2 }, biasCorrectedKl: true, beta: 0.1, lossType: 'cispo' }, withRef: true, sampler: 0.3, perTokenAdv: true, truncated: true },
  ];
  if (full) {
    out.push({ s: 64, l: 33, packed: true, options: { lossType: 'dapo', beta: 0.02, entropyCoef: -0.001 }, withRef: true, truncated: true });
    out.push({ s: 32, l: 17, options: { surrogate: 'sapo', importanceSamplingLevel: 'sequence', topEntropyQuantile: 0.2 } });
    out.push({ s: 48, l: 300, packed: true, options: { rolloutRejection: [{ statistic: 'seqMean_k3', threshold: 0.02 }], offPolicyMaskThreshold: 0.01, beta: 0.04, biasCorrectedKl: true }, withRef: true, sampler: 0.2, perTokenAdv: true });
  }
  out.push(...lossTypeCases(full));
  return out;
}

export function fusedCases(full: boolean): FusedCase[] {
  const out: FusedCase[] = [];
  for (const dtype of DT) {
    out.push({ s: 3, l: 4, v: 1, dtype, options: {} });
    out.push({ s: 4, l: 5, v: 37, dtype, options: { beta: 0.04 }, withRef: true, ignoredRows: [1, 7], temperature: 0.8, masked: 0.2 });
    out.push({ s: 4, l: 6, v: 1001, dtype, packed: true, options: { lossType: 'dapo', entropyCoef: 0.01, topEntropyQuantile: 0.5 }, inPlace: true });
    out.push({ s: 1, l: 2, v: 151936, dtype, options: { lossType: 'gspo' } });
    if (full) {
      out.push({ s: 8, l: 16, v: 4099, dtype, options: { surrogate: 'sapo', klEstimator: 'k2', beta: 0.1 }, withRef: true, truncated: true, ignoredRows: [0, 5] });
      out.push({ s: 6, l: 7, v: 513, dtype, options: { lossType: 'cispo', maskTruncatedCompletions: true }, truncated: true, emptySequence: true });
      out.push({ s: 6, l: 9, v: 257, dtype, packed: true, options: { rolloutCorrection: { level: 'sequenceMean', mode: 'truncate', clipMax: 1.3 }, rolloutRejection: [{ statistic: 'seqMax_k2', threshold: 0.2 }], beta: 0.05, biasCorrectedKl: true, importanceSamplingLevel: 'sequence' }, withRef: true, sampler: 0.3, perTokenAdv: true, ignoredRows: [2] });
    }
    // §9.1-9.3 through the fused step
    out.push({ s: 4, l: 6, v: 129, dtype, options: { rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 1.5 }, rolloutRejection: [{ statistic: 'token_k2', threshold: 0.08 }], offPolicyMaskThreshold: 0.01, beta: 0.1, biasCorrectedKl: true }, withRef: true, sampler: 0.4, perTokenAdv: true, ignoredRows: [3], masked: 0.2 });
    out.push({ s: 4, l: 6, v: 65, dtype, options: {}, sampler: 0.6, onPolicy: true });
    out.push({ s: 3, l: 5, v: 33, dtype, options: { entropyForm: 'tokenMean', entropyCoef: 0.04, topEntropyQuantile: 0.5 }, ignoredRows: [4] });
  }
  out.push(...fusedLossTypeCases(full));
  return out;
}

/** Every case of every op, for the self-test. */
export async function runAll(seed: number, full: boolean, onResult?: (r: CaseResult) => void): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  let i = 0;
  // A case that throws is a failed case, reported with its error; the run goes on.
  const run = async <C>(op: string, cases: C[], f: (seed: number, c: C) => Promise<CaseResult>) => {
    for (const c of cases) {
      const s = seed + i++;
      let r: CaseResult;
      try {
        r = await f(s, c);
      } catch (e) {
        const err = e as { code?: string; message?: string };
        r = result(op, JSON.stringify(c).slice(0, 80), [{ label: 'threw', err: Infinity, tol: 0, pass: false, detail: `${err.code ?? ''} ${err.message ?? String(e)}` }]);
      }
      results.push(r);
      onResult?.(r);
    }
  };
  await run('tokenLogProbs', logProbCases(full), runLogProbCase);
  await run('tokenLogProbsBackward', backwardCases(full), runBackwardCase);
  await run('groupAdvantages', advantageCases(full), runAdvantageCase);
  await run('grpoLoss', lossCases(full), runLossCase);
  await run('grpoLoss(logits)', fusedCases(full), runFusedCase);
  await run('bradleyTerryLoss', preferenceCases(full), runPreferenceCase);
  await run('sampleTokens', samplingCases(full), runSamplingCase);
  await run('distillationLoss', distillCases(full), runDistillCase);
  return results;
}
