// Spec §3-§5: the GRPO policy loss, its aggregation, gradients and metrics, in float64.

export interface RefLossOptions {
  surrogate: 'clip' | 'cispo' | 'sapo';
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
}

export interface RefLossInputs {
  logp: ArrayLike<number>;
  oldLogp?: ArrayLike<number> | null;
  refLogp?: ArrayLike<number> | null;
  /** one per sequence */
  advantages: ArrayLike<number>;
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
}

export interface RefLossResult {
  loss: number;
  metrics: RefLossMetrics;
  dlogp: Float64Array;
  dentropy: Float64Array;
  perTokenLoss: Float64Array;
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
  if (inp.advantages.length !== S) throw new Error(`advantages length ${inp.advantages.length} != S = ${S}`);
  for (const [name, arr] of [['oldLogp', inp.oldLogp], ['refLogp', inp.refLogp], ['mask', inp.mask], ['entropy', inp.entropy]] as const) {
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
    const threshold = linearQuantile(validH, 1 - q);
    for (let t = 0; t < N; t++) if (m[t]) pm[t] = entropy![t]! >= threshold ? 1 : 0;
  }

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

  for (let t = 0; t < N; t++) {
    if (!m[t]) continue;
    if (!Number.isFinite(logp[t]!) || (entropy !== null && !Number.isFinite(entropy[t]!))) nonFinite++;
    const s = seqOf[t]!;
    const A = inp.advantages[s]!;
    const r = rho[t]!;

    // policy term
    let J: number;
    if (o.surrogate === 'cispo') {
      const cap = Math.min(r, o.epsilonHigh); // stop-gradient
      J = cap * A * logp[t]!;
      dlogp[t]! += -w[t]! * pm[t]! * cap * A;
    } else {
      const sur = surrogateOfRatio(r, A, o);
      J = sur.J;
      const dLossdRho = -w[t]! * pm[t]! * sur.dJdRho;
      if (o.importanceSamplingLevel === 'sequence') dLossdRhoSeq[s]! += dLossdRho;
      else if (dLossdRho !== 0) dlogp[t]! += dLossdRho * dRhoOwn[t]!;
    }
    let l = -pm[t]! * J;

    // KL term
    if (computeKL) {
      const k = klTerm(refLogp![t]!, logp[t]!, o.klEstimator);
      klSum += k.kl;
      if (o.beta !== 0) {
        l += o.beta * k.kl;
        dlogp[t]! += w[t]! * o.beta * k.dKLdLogp;
      }
    }

    // entropy bonus
    if (o.entropyCoef !== 0) {
      l -= o.entropyCoef * entropy![t]!;
      dentropy[t] = -w[t]! * o.entropyCoef;
    }
    if (entropy !== null) entropySum += entropy[t]!;

    perTokenLoss[t] = l;
    loss += w[t]! * l;

    // metrics
    ratioSum += r;
    let low: boolean;
    let high: boolean;
    if (o.surrogate === 'cispo') {
      low = false;
      high = r > o.epsilonHigh && A > 0;
    } else {
      low = r < 1 - o.epsilonLow && A < 0;
      high = r > 1 + o.epsilonHigh && A > 0;
    }
    if (low) lowCount++;
    if (high) highCount++;
    if (low || high) eitherCount++;
  }

  if (o.importanceSamplingLevel === 'sequence' && o.surrogate !== 'cispo') {
    for (let t = 0; t < N; t++) {
      if (!m[t]) continue;
      const s = seqOf[t]!;
      if (dLossdRhoSeq[s] !== 0) dlogp[t]! += dLossdRhoSeq[s]! * seqRatioDeriv[s]! * m[t]!;
    }
  }

  const denom = Math.max(1, tokens);
  const metrics: RefLossMetrics = {
    klMean: computeKL ? klSum / denom : undefined,
    ratioMean: ratioSum / denom,
    clipFractionLow: lowCount / denom,
    clipFractionHigh: highCount / denom,
    clipFraction: eitherCount / denom,
    entropyMean: entropy !== null ? entropySum / denom : undefined,
    tokens,
    nonFiniteRows: nonFinite,
  };
  return { loss, metrics, dlogp, dentropy, perTokenLoss };
}
