// Spec §3-§5: the GRPO policy loss, its aggregation, gradients and metrics, in float64.
// §9.4's surrogates (gpg, cispoTwoSided, vespo, geoMean, clipCov, klCov) are written from the
// spec's text, not from the native code.

import { philox4x32_10 } from './sampling';

export interface RefLossOptions {
  surrogate: 'clip' | 'cispo' | 'sapo' | 'gpg' | 'cispoTwoSided' | 'vespo' | 'geoMean' | 'clipCov' | 'klCov';
  importanceSamplingLevel: 'token' | 'sequence' | 'sequenceToken';
  epsilonLow: number;
  epsilonHigh: number;
  delta: number | null;
  tauPos: number;
  tauNeg: number;
  beta: number;
  klEstimator: 'k1' | 'k2' | 'k3';
  entropyCoef: number;
  aggregation: 'seqMeanTokenMean' | 'tokenMean' | 'constant' | 'seqMeanTokenSum';
  normalizer: number | null;
  maxCompletionLength: number | null;
  maskTruncatedCompletions: boolean;
  topEntropyQuantile: number;
  /** §9.3: N advantages are per token even when N = S. */
  advantagesPerToken?: boolean;
  /** §9.1: null/undefined = TRL's default when samplerLogp is given; false = off. */
  rolloutCorrection?: { level: 'token' | 'sequence' | 'sequenceMean'; mode: 'truncate' | 'mask'; clipMin: number; clipMax: number; batchNormalize: boolean } | false | null;
  rolloutRejection?: { statistic: string; threshold: number | [number, number] }[] | null;
  /** §9.2 */
  offPolicyMaskThreshold?: number | null;
  biasCorrectedKl?: boolean;
  /** §9.8 */
  entropyForm?: 'aggregated' | 'tokenMean';
  /** §9.7: the threshold given instead of computed */
  entropyThreshold?: number | null;
  /** §9.4 vespo: (k, λ) for A ≥ 0 and for A < 0 (defaults 2, 3, 3, 2). */
  vespoKPos?: number;
  vespoLambdaPos?: number;
  vespoKNeg?: number;
  vespoLambdaNeg?: number;
  /** §9.4 clipCov: fraction of the tokens chosen (2e-4) and the covariance window (1, 5). */
  clipCovRatio?: number;
  clipCovLb?: number;
  clipCovUb?: number;
  /** §9.4 klCov: fraction of the tokens chosen (2e-4) and κ (1). */
  klCovRatio?: number;
  ppoKlCoef?: number;
  /** §9.4 clipCov: the Philox key of the random choice (0). */
  covSeed?: number;
}

export interface RefLossInputs {
  logp: ArrayLike<number>;
  oldLogp?: ArrayLike<number> | null;
  refLogp?: ArrayLike<number> | null;
  /** one per sequence (S), or one per token (N, spec §9.3) */
  advantages: ArrayLike<number>;
  /** §9.1: the sampling engine's log-probs, per token */
  samplerLogp?: ArrayLike<number> | null;
  /** length S+1; rows of sequence s are seqOffsets[s] .. seqOffsets[s+1]-1 */
  seqOffsets: ArrayLike<number>;
  /** per token 0/1, default 1 */
  mask?: ArrayLike<number> | null;
  entropy?: ArrayLike<number> | null;
  /** per sequence */
  truncated?: ArrayLike<number | boolean> | null;
}

export interface RefLossMetrics {
  klMean: number | undefined;
  ratioMean: number;
  clipFractionLow: number;
  clipFractionHigh: number;
  clipFraction: number;
  entropyMean: number | undefined;
  tokens: number;
  /** Valid tokens whose log-prob or entropy is NaN or ±Infinity. */
  nonFiniteRows: number;
  // §9.1 (with samplerLogp) and §9.2 (with offPolicyMaskThreshold)
  isTruncatedFraction?: number;
  isMaskedFraction?: number;
  rejectedFraction?: number;
  rejectedSeqFraction?: number;
  isWeightMean?: number;
  isWeightMax?: number;
  samplerKl?: number;
  seqLogRatioMin?: number;
  seqLogRatioMax?: number;
  offPolicyMaskedFraction?: number;
  /** §9.4 vespo only: mean of φ over the tokens in the loss. */
  phiMean?: number;
}

/** §9.1: the importance weight after the mode (NaN stays NaN). */
function rcMode(rc: { mode: 'truncate' | 'mask'; clipMin: number; clipMax: number }, w: number): { w: number; truncated: boolean; masked: boolean } {
  if (rc.mode === 'truncate') {
    const c = w < rc.clipMin ? rc.clipMin : w > rc.clipMax ? rc.clipMax : w;
    return { w: c, truncated: c !== w && !Number.isNaN(w), masked: false };
  }
  if (w < rc.clipMin || w > rc.clipMax) return { w: 0, truncated: false, masked: true };
  return { w, truncated: false, masked: false };
}

function kEst(k: number, d: number): number {
  if (k === 1) return -d;
  if (k === 2) return (d * d) / 2;
  return Math.expm1(d) - d;
}

/** NaN-propagating max / min. */
const nanMax = (a: number, b: number): number => (Number.isNaN(a) || a > b ? a : b);
const nanMin = (a: number, b: number): number => (Number.isNaN(a) || a < b ? a : b);

/** A rejection criterion as the interval [lo, hi] its statistic must lie in to keep. */
function rsBounds(c: { statistic: string; threshold: number | [number, number] }): { agg: string; k: number; lo: number; hi: number } {
  const [agg, kn] = c.statistic.split('_') as [string, string];
  const k = Number(kn.slice(1));
  if (k === 1) {
    const [lower, upper] = Array.isArray(c.threshold) ? c.threshold : [1 / c.threshold, c.threshold];
    return { agg, k, lo: Math.log(lower), hi: Math.log(upper) };
  }
  return { agg, k, lo: -Infinity, hi: c.threshold as number };
}

export interface RefLossResult {
  loss: number;
  metrics: RefLossMetrics;
  dlogp: Float64Array;
  dentropy: Float64Array;
  perTokenLoss: Float64Array;
  /** §9.4 clipCov / klCov: 1 for the tokens the covariance selection chose (for tests). */
  covChosen?: Uint8Array;
}

const LOG_RATIO_CLAMP = 20;
const K3_CLAMP = 10;

/** clampLR(x) = min(20, max(-20, x)) and its derivative (0 where the clamp binds). */
function clampLR(x: number): { value: number; deriv: number } {
  if (x > LOG_RATIO_CLAMP) return { value: LOG_RATIO_CLAMP, deriv: 0 };
  if (x < -LOG_RATIO_CLAMP) return { value: -LOG_RATIO_CLAMP, deriv: 0 };
  return { value: x, deriv: 1 };
}

/** numpy 'linear' quantile of the values at level `level` in [0, 1]. */
function linearQuantile(values: number[], level: number): number {
  const h = values.slice().sort((a, b) => a - b);
  const n = h.length;
  if (n === 0) return NaN;
  const pos = level * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, n - 1);
  return h[lo]! + (pos - lo) * (h[hi]! - h[lo]!);
}

/** Value J and derivative dJ/dρ of the 'clip' and 'sapo' surrogates for one token. */
function surrogateOfRatio(rho: number, A: number, o: RefLossOptions): { J: number; dJdRho: number } {
  if (o.surrogate === 'clip') {
    const first = A * (o.delta === null ? rho : Math.min(rho, o.delta));
    const clipped = Math.min(Math.max(rho, 1 - o.epsilonLow), 1 + o.epsilonHigh);
    const second = A * clipped;
    if (first <= second) {
      // unclipped branch taken (ties included)
      const d = o.delta === null || rho < o.delta ? A : 0;
      return { J: first, dJdRho: d };
    }
    const d = 1 - o.epsilonLow < rho && rho < 1 + o.epsilonHigh ? A : 0;
    return { J: second, dJdRho: d };
  }
  if (o.surrogate === 'sapo') {
    const tau = A > 0 ? o.tauPos : o.tauNeg;
    const sigma = 1 / (1 + Math.exp(-tau * (rho - 1)));
    return { J: sigma * (4 / tau) * A, dJdRho: 4 * A * sigma * (1 - sigma) };
  }
  throw new Error(`surrogateOfRatio: unexpected surrogate ${String(o.surrogate)}`);
}

/** KL estimate and dKL/dlogp for one token. */
function klTerm(refLogp: number, logp: number, estimator: RefLossOptions['klEstimator']): { kl: number; dKLdLogp: number } {
  const c = clampLR(refLogp - logp);
  const x = c.value;
  const dxdLogp = -c.deriv;
  let kl: number;
  let dKLdx: number;
  if (estimator === 'k1') {
    kl = -x;
    dKLdx = -1;
  } else if (estimator === 'k2') {
    kl = (x * x) / 2;
    dKLdx = x;
  } else if (estimator === 'k3') {
    const v = Math.expm1(x) - x; // = exp(x) - x - 1, computed without cancellation
    if (v > K3_CLAMP) {
      kl = K3_CLAMP;
      dKLdx = 0;
    } else {
      kl = Math.max(0, v);
      dKLdx = Math.expm1(x); // = exp(x) - 1
    }
  } else {
    throw new Error(`unknown klEstimator ${String(estimator)}`);
  }
  return { kl, dKLdLogp: dKLdx * dxdLogp };
}

/** §9.4: the surrogates whose ratio is their own (they need importanceSamplingLevel 'token', no delta). */
const TOKEN_ONLY_SURROGATES: readonly RefLossOptions['surrogate'][] = ['gpg', 'vespo', 'geoMean', 'clipCov', 'klCov'];

/** §9.4 defaults of the new options. */
export const REF_9_4_DEFAULTS = {
  vespoKPos: 2, vespoLambdaPos: 3, vespoKNeg: 3, vespoLambdaNeg: 2, clipCovRatio: 2e-4, clipCovLb: 1, clipCovUb: 5, klCovRatio: 2e-4, ppoKlCoef: 1, covSeed: 0,
} as const;

/** §9.4 clipCov: the 64-bit Philox key of row t, (r0 << 32) | r1, counter (t lo, t hi, 0, 'cov\0'), key (seed lo, seed hi). */
export function covKey(t: number, seed: number): bigint {
  const lo = (x: number) => x % 2 ** 32;
  const hi = (x: number) => Math.floor(x / 2 ** 32);
  const r = philox4x32_10([lo(t), hi(t), 0, 0x636f7600], [lo(seed), hi(seed)]);
  return (BigInt(r[0]) << 32n) | BigInt(r[1]);
}

/** §9.4 vespo: φ = exp(λ + k·lw − λ·e^lw), λ used as max(λ, 1e-4); NaN or ±inf become 0. */
export function vespoPhi(lw: number, k: number, lambda: number): number {
  const lam = Math.max(lambda, 1e-4);
  const phi = Math.exp(lam + k * lw - lam * Math.exp(lw));
  return Number.isFinite(phi) ? phi : 0;
}

export function refGrpoLoss(inp: RefLossInputs, o: RefLossOptions): RefLossResult {
  const logp = inp.logp;
  const N = logp.length;
  const offsets = inp.seqOffsets;
  const S = offsets.length - 1;
  if (S < 0) throw new Error('seqOffsets must have length S+1 >= 1');
  for (let s = 0; s < S; s++) {
    if (!(offsets[s]! <= offsets[s + 1]!)) throw new Error(`seqOffsets not non-decreasing at ${s}`);
  }
  if (S > 0 && (offsets[0]! < 0 || offsets[S]! > N)) throw new Error(`seqOffsets [${offsets[0]}, ${offsets[S]}] outside [0, ${N}]`);
  const perToken = inp.advantages.length === N && (N !== S || o.advantagesPerToken === true);
  if (!perToken && inp.advantages.length !== S) throw new Error(`advantages length ${inp.advantages.length} != S = ${S} or N = ${N}`);
  const advAt = (s: number, t: number): number => (perToken ? inp.advantages[t]! : inp.advantages[s]!);
  for (const [name, arr] of [['oldLogp', inp.oldLogp], ['refLogp', inp.refLogp], ['mask', inp.mask], ['entropy', inp.entropy], ['samplerLogp', inp.samplerLogp]] as const) {
    if (arr != null && arr.length !== N) throw new Error(`${name} length ${arr.length} != ${N}`);
  }
  if (inp.truncated != null && inp.truncated.length !== S) throw new Error(`truncated length ${inp.truncated.length} != S = ${S}`);

  const q = o.topEntropyQuantile;
  if (!(q > 0 && q <= 1)) throw new Error(`topEntropyQuantile must be in (0, 1], got ${q}`);
  const entropy = inp.entropy ?? null;
  if ((q < 1 || o.entropyCoef !== 0) && entropy === null) {
    throw new Error('entropy is required when topEntropyQuantile < 1 or entropyCoef != 0');
  }
  const refLogp = inp.refLogp ?? null;
  if (o.beta !== 0 && refLogp === null) throw new Error('refLogp is required when beta != 0');
  const oldLogp = inp.oldLogp ?? null;
  const sur = o.surrogate;
  const p94 = { ...REF_9_4_DEFAULTS };
  for (const k of Object.keys(REF_9_4_DEFAULTS) as (keyof typeof REF_9_4_DEFAULTS)[]) if (o[k] !== undefined && o[k] !== null) (p94 as Record<string, number>)[k] = o[k]!;
  if (TOKEN_ONLY_SURROGATES.includes(sur) && o.importanceSamplingLevel !== 'token') throw new Error(`surrogate ${sur} needs importanceSamplingLevel 'token'`);
  // §9.4: "every surrogate except 'sapo' and 'cispoTwoSided' ... takes no delta" (cispoTwoSided, like cispo, ignores it).
  if (TOKEN_ONLY_SURROGATES.includes(sur) && o.delta !== null && o.delta !== undefined) throw new Error(`surrogate ${sur} takes no delta`);
  if (sur === 'geoMean' && (q < 1 || (o.offPolicyMaskThreshold ?? null) !== null)) throw new Error('geoMean refuses topEntropyQuantile < 1 and offPolicyMaskThreshold');

  // a. token mask and per-sequence counts. Rows outside every sequence are invalid.
  const seqOf = new Int32Array(N).fill(-1);
  const m = new Float64Array(N);
  const cnt = new Float64Array(S);
  let tokens = 0;
  let maxLen = 0;
  for (let s = 0; s < S; s++) {
    const truncatedOut = o.maskTruncatedCompletions && inp.truncated != null && Boolean(inp.truncated[s]);
    maxLen = Math.max(maxLen, offsets[s + 1]! - offsets[s]!);
    for (let t = offsets[s]!; t < offsets[s + 1]!; t++) {
      seqOf[t] = s;
      const mt = truncatedOut ? 0 : inp.mask == null ? 1 : inp.mask[t]! ? 1 : 0;
      m[t] = mt;
      cnt[s]! += mt;
    }
    tokens += cnt[s]!;
  }

  // a2. §9.1 over V0 (the valid tokens before rejection): weights, rejection, metrics.
  const sampler = inp.samplerLogp ?? null;
  const oldOf = (t: number): number => (oldLogp === null ? logp[t]! : oldLogp[t]!);
  const rc = sampler === null || o.rolloutCorrection === false ? null : (o.rolloutCorrection ?? { level: 'sequence' as const, mode: 'mask' as const, clipMin: 0, clipMax: 3, batchNormalize: false });
  if (sur === 'vespo' && rc !== null && rc.level !== 'token') throw new Error('vespo refuses sequence-level rollout weights');
  const crit = (o.rolloutRejection ?? []).map(rsBounds);
  if (crit.length > 0 && sampler === null) throw new Error('samplerLogp is required for rolloutRejection');
  const isw = new Float64Array(N).fill(1); // IS weight of each token's policy term
  const corrMetrics: Partial<RefLossMetrics> = {};
  if (sampler !== null) {
    const dOf = (t: number): number => Math.min(LOG_RATIO_CLAMP, Math.max(-LOG_RATIO_CLAMP, oldOf(t) - sampler[t]!));
    let n0 = 0, seqs = 0, k3sum = 0, rejected = 0, rejectedSeq = 0, lrMin = Infinity, lrMax = -Infinity;
    let wSum = 0, wMax = -Infinity, wCount = 0, trunc = 0, masked = 0;
    const seqW = new Float64Array(S).fill(1);
    for (let s = 0; s < S; s++) {
      let c0 = 0, dsum = 0;
      const ks = [0, 0, 0, 0];
      const km = [0, -Infinity, -Infinity, -Infinity];
      const tokKeep: number[] = [];
      for (let t = offsets[s]!; t < offsets[s + 1]!; t++) {
        if (!m[t]) continue;
        const d = dOf(t);
        c0++;
        dsum += d;
        for (const k of [1, 2, 3]) {
          ks[k]! += kEst(k, d);
          km[k] = nanMax(km[k]!, kEst(k, d));
        }
        k3sum += kEst(3, d);
        let keep = true;
        for (const c of crit) if (c.agg === 'token' && !(kEst(c.k, d) >= c.lo && kEst(c.k, d) <= c.hi)) keep = false;
        if (!keep) tokKeep.push(t);
        if (rc && rc.level === 'token') {
          const r = rcMode(rc, Math.exp(d));
          isw[t] = r.w;
          wSum += r.w;
          wMax = nanMax(wMax, r.w);
          wCount++;
          if (r.truncated) trunc++;
          if (r.masked) masked++;
        }
      }
      n0 += c0;
      let seqKeep = true;
      for (const c of crit) {
        if (c.agg === 'token') continue;
        const v = c.agg === 'seqSum' ? ks[c.k]! : c.agg === 'seqMean' ? (c0 > 0 ? ks[c.k]! / c0 : 0) : c0 > 0 ? km[c.k]! : 0;
        if (!(v >= c.lo && v <= c.hi)) seqKeep = false;
      }
      const rej = seqKeep ? tokKeep.length : c0;
      rejected += rej;
      if (rej > 0) rejectedSeq++;
      if (c0 > 0) {
        seqs++;
        lrMin = nanMin(lrMin, dsum);
        lrMax = nanMax(lrMax, dsum);
      }
      for (let t = offsets[s]!; t < offsets[s + 1]!; t++) if (!seqKeep && m[t]) m[t] = 0;
      for (const t of tokKeep) m[t] = 0;
      if (rc && rc.level !== 'token') {
        const lw = rc.level === 'sequence' ? Math.min(LOG_RATIO_CLAMP, Math.max(-LOG_RATIO_CLAMP, dsum)) : dsum / Math.max(1, c0);
        const r = rcMode(rc, Math.exp(lw));
        seqW[s] = r.w;
        for (let t = offsets[s]!; t < offsets[s + 1]!; t++) isw[t] = r.w;
        if (c0 > 0) {
          wSum += r.w;
          wMax = nanMax(wMax, r.w);
          wCount++;
          if (r.truncated) trunc++;
          if (r.masked) masked++;
        }
      }
    }
    // recount after rejection
    tokens = 0;
    for (let s = 0; s < S; s++) {
      cnt[s] = 0;
      for (let t = offsets[s]!; t < offsets[s + 1]!; t++) cnt[s]! += m[t]!;
      tokens += cnt[s]!;
    }
    if (rc && rc.batchNormalize && wCount > 0) {
      const mean = wSum / wCount;
      if (mean > 1e-8) for (let t = 0; t < N; t++) isw[t] = isw[t]! / mean;
    }
    const units = rc && rc.level === 'token' ? n0 : seqs;
    corrMetrics.isTruncatedFraction = trunc / Math.max(1, units);
    corrMetrics.isMaskedFraction = masked / Math.max(1, units);
    corrMetrics.rejectedFraction = rejected / Math.max(1, n0);
    corrMetrics.rejectedSeqFraction = rejectedSeq / Math.max(1, seqs);
    corrMetrics.isWeightMean = wCount > 0 ? wSum / wCount : 0;
    corrMetrics.isWeightMax = wCount > 0 ? wMax : 0;
    corrMetrics.samplerKl = k3sum / Math.max(1, n0);
    corrMetrics.seqLogRatioMin = seqs > 0 ? lrMin : 0;
    corrMetrics.seqLogRatioMax = seqs > 0 ? lrMax : 0;
  }
  if (rc === null) isw.fill(1);

  // a3. §9.2 off-policy sequence mask (per token with per-token advantages).
  const opKeep = new Float64Array(N).fill(1);
  let opMaskedSeqs = 0;
  let nonEmptySeqs = 0;
  const delta = o.offPolicyMaskThreshold ?? null;
  for (let s = 0; s < S; s++) {
    if (cnt[s]! > 0) nonEmptySeqs++;
    if (delta === null) continue;
    const qs = sampler ?? oldLogp;
    let kappa = 0;
    if (qs !== null) {
      for (let t = offsets[s]!; t < offsets[s + 1]!; t++) if (m[t]) kappa += qs[t]! - logp[t]!;
      kappa /= Math.max(1, cnt[s]!);
    }
    let any = false;
    for (let t = offsets[s]!; t < offsets[s + 1]!; t++) {
      if (!m[t]) continue;
      if (!(advAt(s, t) >= 0 || kappa <= delta)) {
        opKeep[t] = 0;
        any = true;
      }
    }
    if (any) opMaskedSeqs++;
  }
  if (delta !== null) corrMetrics.offPolicyMaskedFraction = opMaskedSeqs / Math.max(1, nonEmptySeqs);

  // b/c. importance ratios. rho[t] is the token's ratio value; dRhoOwn[t] = ∂ρ_t/∂logp_t for
  // 'token' / 'sequenceToken'; for 'sequence' seqRatioDeriv[s] = ∂ρ_s/∂logp_t / m_t.
  const old = (t: number): number => (oldLogp === null ? logp[t]! : oldLogp[t]!);
  const rho = new Float64Array(N);
  const dRhoOwn = new Float64Array(N);
  const seqRatioDeriv = new Float64Array(S);
  for (let s = 0; s < S; s++) {
    const lo = offsets[s]!;
    const hi = offsets[s + 1]!;
    if (o.importanceSamplingLevel === 'token') {
      for (let t = lo; t < hi; t++) {
        const c = clampLR(logp[t]! - old(t));
        rho[t] = Math.exp(c.value);
        dRhoOwn[t] = rho[t]! * c.deriv;
      }
    } else if (o.importanceSamplingLevel === 'sequence' || o.importanceSamplingLevel === 'sequenceToken') {
      let sum = 0;
      for (let t = lo; t < hi; t++) if (m[t]) sum += m[t]! * (logp[t]! - old(t));
      const denom = Math.max(1, cnt[s]!);
      const c = clampLR(sum / denom);
      const rhoS = Math.exp(c.value);
      seqRatioDeriv[s] = (rhoS * c.deriv) / denom;
      for (let t = lo; t < hi; t++) {
        rho[t] = rhoS;
        dRhoOwn[t] = rhoS * c.deriv; // used by 'sequenceToken' only
      }
    } else {
      throw new Error(`unknown importanceSamplingLevel ${String(o.importanceSamplingLevel)}`);
    }
  }

  // f. top-entropy mask on the policy term.
  const pm = new Float64Array(N).fill(1);
  if (q < 1) {
    const validH: number[] = [];
    for (let t = 0; t < N; t++) if (m[t]) validH.push(entropy![t]!);
    const threshold = o.entropyThreshold ?? (validH.some((x) => !Number.isNaN(x)) ? linearQuantile(validH.filter((x) => !Number.isNaN(x)), 1 - q) : Infinity);
    for (let t = 0; t < N; t++) if (m[t]) pm[t] = entropy![t]! >= threshold ? 1 : 0;
  }
  const entropyMask = Float64Array.from(pm);
  for (let t = 0; t < N; t++) pm[t] = pm[t]! * (isw[t]! * (opKeep[t] ? 1 : 0));

  // §9.4 preparation. The covariance statistics (clipCov, klCov) are over the tokens in the loss
  // (valid, not rejected, in sequences not dropped by maskTruncatedCompletions), whatever the
  // off-policy and top-entropy masks say; the choice is made there too.
  const chosen = new Uint8Array(N);
  if (sur === 'clipCov' || sur === 'klCov') {
    const idx: number[] = [];
    for (let t = 0; t < N; t++) if (m[t]) idx.push(t);
    const nValid = idx.length;
    let aSum = 0;
    let lSum = 0;
    for (const t of idx) {
      aSum += advAt(seqOf[t]!, t);
      lSum += logp[t]!;
    }
    const aBar = aSum / Math.max(1, nValid);
    const lBar = lSum / Math.max(1, nValid);
    const cov = new Float64Array(N).fill(NaN);
    for (const t of idx) cov[t] = (advAt(seqOf[t]!, t) - aBar) * (logp[t]! - lBar);
    if (sur === 'clipCov') {
      const cand = idx.filter((t) => {
        const A = advAt(seqOf[t]!, t);
        const r = rho[t]!;
        const clipped = -A * Math.min(Math.max(r, 1 - o.epsilonLow), 1 + o.epsilonHigh) > -A * r;
        return !clipped && p94.clipCovLb < cov[t]! && cov[t]! < p94.clipCovUb;
      });
      const k = Math.min(Math.max(1, Math.floor(p94.clipCovRatio * nValid)), cand.length);
      const keyed = cand.map((t) => ({ t, key: covKey(t, p94.covSeed) }));
      keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : a.t - b.t));
      for (let i = 0; i < k; i++) chosen[keyed[i]!.t] = 1;
    } else {
      const ok = idx.filter((t) => !Number.isNaN(cov[t]!));
      const k = Math.min(Math.max(1, Math.floor(p94.klCovRatio * nValid)), ok.length);
      ok.sort((a, b) => (cov[a]! > cov[b]! ? -1 : cov[a]! < cov[b]! ? 1 : a - b));
      for (let i = 0; i < k; i++) chosen[ok[i]!] = 1;
    }
  }
  // vespo: the sequence log-weight log w_s (token-level rollout weights inside it).
  const vespoLw = new Float64Array(S);
  if (sur === 'vespo') {
    for (let s = 0; s < S; s++) {
      let sum = 0;
      for (let t = offsets[s]!; t < offsets[s + 1]!; t++) {
        if (!m[t]) continue;
        sum += clampLR(logp[t]! - old(t)).value;
        if (rc !== null && rc.level === 'token') sum += Math.log(isw[t]!);
      }
      vespoLw[s] = Math.min(LOG_RATIO_CLAMP, Math.max(Math.log(1e-8), sum));
    }
  }
  // geoMean: per sequence the policy loss -Ā_s·ρ_s·W_s and ∂L_pol/∂logp on the unclamped branch.
  const geoCoef = new Float64Array(S);
  const geoGrad = new Float64Array(S);
  let geoLoss = 0;
  if (sur === 'geoMean') {
    for (let s = 0; s < S; s++) {
      const ns = cnt[s]! + 1e-8;
      let sy = 0;
      let sa = 0;
      let slw = 0;
      for (let t = offsets[s]!; t < offsets[s + 1]!; t++) {
        if (!m[t]) continue;
        const A = advAt(s, t);
        const x = logp[t]! - old(t);
        const c = Math.min(Math.max(x, -o.epsilonLow), o.epsilonHigh);
        const sg = Math.sign(A);
        sy += sg === 0 ? 0 : sg * Math.min(sg * x, sg * c);
        sa += A;
        slw += Math.log(isw[t]! + 1e-10);
      }
      let W = 1;
      if (rc !== null) W = rc.level === 'token' ? Math.exp(slw / ns) : offsets[s + 1]! > offsets[s]! ? isw[offsets[s]!]! : 1;
      const rhoS = Math.exp(sy / ns);
      const aBar = sa / ns;
      geoCoef[s] = -aBar * rhoS * W;
      geoGrad[s] = S > 0 ? -(aBar * rhoS * W) / ns / S : 0;
      if (S > 0) geoLoss += geoCoef[s]! / S;
    }
  }
  const clipOpts: RefLossOptions = { ...o, surrogate: 'clip', delta: null };

  // h. aggregation weights.
  const w = new Float64Array(N);
  for (let t = 0; t < N; t++) {
    if (!m[t]) continue;
    const s = seqOf[t]!;
    switch (o.aggregation) {
      case 'seqMeanTokenMean':
        w[t] = 1 / (S * Math.max(1, cnt[s]!));
        break;
      case 'tokenMean':
        w[t] = 1 / (o.normalizer ?? Math.max(1, tokens));
        break;
      case 'constant':
        w[t] = 1 / (S * (o.maxCompletionLength ?? maxLen));
        break;
      case 'seqMeanTokenSum':
        w[t] = 1 / S;
        break;
      default:
        throw new Error(`unknown aggregation ${String(o.aggregation)}`);
    }
  }

  // §9.8 'tokenMean' entropy form: weight of each counted token's -c·H (m_e = m × top-entropy mask).
  const tokenMeanEntropy = o.entropyForm === 'tokenMean';
  let countE = 0;
  for (let t = 0; t < N; t++) if (m[t] && (q >= 1 || entropyMask[t])) countE++;
  const wEnt = o.aggregation === 'tokenMean' && o.normalizer != null ? 1 / o.normalizer : 1 / Math.max(1, countE);

  // d/e/g. per-token terms, loss, and gradients.
  const computeKL = refLogp !== null;
  const dlogp = new Float64Array(N);
  const dentropy = new Float64Array(N);
  const perTokenLoss = new Float64Array(N);
  // 'sequence': accumulated ∂loss/∂ρ_s, distributed to the tokens afterwards.
  const dLossdRhoSeq = new Float64Array(S);
  let loss = 0;
  let klSum = 0;
  let ratioSum = 0;
  let lowCount = 0;
  let highCount = 0;
  let eitherCount = 0;
  let entropySum = 0;
  let nonFinite = 0;
  let phiSum = 0;
  let phiCount = 0;

  for (let t = 0; t < N; t++) {
    if (!m[t]) continue;
    if (!Number.isFinite(logp[t]!) || (entropy !== null && !Number.isFinite(entropy[t]!)) || (sampler !== null && !Number.isFinite(sampler[t]!))) nonFinite++;
    const s = seqOf[t]!;
    const A = advAt(s, t);
    const r = rho[t]!;

    // policy term: pol = the token's policy loss (−J times its multiplier; geoMean: its sequence's).
    // vespo's multiplier leaves out the rollout weight (it is inside log w_s).
    const mult = sur === 'vespo' ? entropyMask[t]! * (opKeep[t] ? 1 : 0) : pm[t]!;
    let pol: number;
    let low = r < 1 - o.epsilonLow && A < 0;
    let high = r > 1 + o.epsilonHigh && A > 0;
    const ratioTerm = (dJdRho: number) => {
      const dLossdRho = -w[t]! * mult * dJdRho;
      if (o.importanceSamplingLevel === 'sequence') dLossdRhoSeq[s]! += dLossdRho;
      else if (dLossdRho !== 0) dlogp[t]! += dLossdRho * dRhoOwn[t]!;
    };
    if (sur === 'cispo') {
      const cap = Math.min(r, o.epsilonHigh); // stop-gradient
      pol = -mult * cap * A * logp[t]!;
      dlogp[t]! += -w[t]! * mult * cap * A;
      low = false;
      high = r > o.epsilonHigh && A > 0;
    } else if (sur === 'cispoTwoSided') {
      const c = Math.min(Math.max(r, 1 - o.epsilonLow), 1 + o.epsilonHigh); // stop-gradient
      pol = -mult * c * A * logp[t]!;
      dlogp[t]! += -w[t]! * mult * c * A;
      low = r < 1 - o.epsilonLow;
      high = r > 1 + o.epsilonHigh;
    } else if (sur === 'gpg') {
      pol = -mult * A * logp[t]!;
      dlogp[t]! += -w[t]! * mult * A;
      low = high = false;
    } else if (sur === 'vespo') {
      const phi = A >= 0 ? vespoPhi(vespoLw[s]!, p94.vespoKPos, p94.vespoLambdaPos) : vespoPhi(vespoLw[s]!, p94.vespoKNeg, p94.vespoLambdaNeg);
      pol = -mult * phi * A * logp[t]!;
      dlogp[t]! += -w[t]! * mult * phi * A;
      phiSum += phi; // φ of every token in the loss, whatever multiplies its policy term
      phiCount++;
      low = high = false;
    } else if (sur === 'geoMean') {
      pol = geoCoef[s]!;
      const x = logp[t]! - old(t);
      const c = Math.min(Math.max(x, -o.epsilonLow), o.epsilonHigh);
      const sg = Math.sign(A);
      if (sg !== 0 && sg * x <= sg * c) dlogp[t]! += geoGrad[s]!;
      low = A < 0 && x !== c;
      high = A > 0 && x !== c;
    } else if (sur === 'klCov') {
      pol = -mult * A * r;
      ratioTerm(A);
      if (chosen[t]) {
        const x = logp[t]! - old(t);
        pol += mult * p94.ppoKlCoef * Math.abs(x);
        dlogp[t]! += w[t]! * mult * p94.ppoKlCoef * Math.sign(x);
      }
      low = high = false;
    } else if (sur === 'clipCov' && chosen[t]) {
      pol = 0; // chosen: no policy term; the clip metrics stay
    } else {
      const j = surrogateOfRatio(r, A, sur === 'clipCov' ? clipOpts : o);
      pol = -mult * j.J;
      ratioTerm(j.dJdRho);
    }
    let l = sur === 'geoMean' ? 0 : pol;

    // KL term
    if (computeKL) {
      const k = klTerm(refLogp![t]!, logp[t]!, o.klEstimator);
      klSum += k.kl;
      if (o.beta !== 0 && o.biasCorrectedKl) {
        // §9.2: ρ·KL, with the gradient through ρ
        l += o.beta * r * k.kl;
        dlogp[t]! += w[t]! * o.beta * r * k.dKLdLogp;
        if (o.importanceSamplingLevel === 'sequence') dLossdRhoSeq[s]! += w[t]! * o.beta * k.kl;
        else dlogp[t]! += w[t]! * o.beta * k.kl * dRhoOwn[t]!;
      } else if (o.beta !== 0) {
        l += o.beta * k.kl;
        dlogp[t]! += w[t]! * o.beta * k.dKLdLogp;
      }
    }

    // entropy bonus
    let ent = 0;
    if (tokenMeanEntropy) {
      const em = q >= 1 || entropyMask[t] ? 1 : 0;
      if (o.entropyCoef !== 0) {
        ent = -em * o.entropyCoef * entropy![t]!;
        dentropy[t] = -em * wEnt * o.entropyCoef;
      }
    } else if (o.entropyCoef !== 0) {
      l -= o.entropyCoef * entropy![t]!;
      dentropy[t] = -w[t]! * o.entropyCoef;
    }
    if (entropy !== null) entropySum += entropy[t]!;

    perTokenLoss[t] = (sur === 'geoMean' ? pol : 0) + l + ent;
    loss += w[t]! * l + wEnt * ent;

    // metrics
    ratioSum += r;
    if (low) lowCount++;
    if (high) highCount++;
    if (low || high) eitherCount++;
  }

  if (o.importanceSamplingLevel === 'sequence') {
    for (let t = 0; t < N; t++) {
      if (!m[t]) continue;
      const s = seqOf[t]!;
      if (dLossdRhoSeq[s] !== 0) dlogp[t]! += dLossdRhoSeq[s]! * seqRatioDeriv[s]! * m[t]!;
    }
  }

  loss += geoLoss;
  const denom = Math.max(1, tokens);
  if (sur === 'vespo') corrMetrics.phiMean = phiCount > 0 ? phiSum / phiCount : 0;
  const metrics: RefLossMetrics = {
    klMean: computeKL ? klSum / denom : undefined,
    ratioMean: ratioSum / denom,
    clipFractionLow: lowCount / denom,
    clipFractionHigh: highCount / denom,
    clipFraction: eitherCount / denom,
    entropyMean: entropy !== null ? entropySum / denom : undefined,
    tokens,
    nonFiniteRows: nonFinite,
    ...corrMetrics,
  };
  return { loss, metrics, dlogp, dentropy, perTokenLoss, ...(sur === 'clipCov' || sur === 'klCov' ? { covChosen: chosen } : {}) };
}
