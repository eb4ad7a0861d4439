import type { FloatDType } from '../dtype';
import { Placement } from '../device';
import { describe, fail } from '../errors';
import {
  addon, AggregationCode, call, DTypeCode, IsLevelCode, KlCode, SurrogateCode,
  type NativeLossInputs, type NativeLossMetrics, type NativeLossOptions,
} from '../native';
import { Tensor } from '../tensor';
import {
  checkBoolean, checkEnum, checkKnownKeys, checkLayout, checkLogits, checkNumber, checkObject, checkRowShape, checkTargets, floatArg, lengthOf, maskArg,
  targetsType,
  type FloatInput, type TargetsInput,
} from '../validate';
import { readRowOptions } from './logprobs';

export type LossType = 'grpo' | 'bnpo' | 'dr_grpo' | 'dapo' | 'gspo' | 'cispo' | 'sapo' | 'luspo' | 'vespo' | 'geoMean' | 'clipCov' | 'klCov' | 'gpg';
/** The per-token policy surrogate (spec §3, §9.4). */
export type Surrogate = 'clip' | 'cispo' | 'sapo' | 'gpg' | 'cispoTwoSided' | 'vespo' | 'geoMean' | 'clipCov' | 'klCov';
export const SURROGATES: readonly Surrogate[] = ['clip', 'cispo', 'sapo', 'gpg', 'cispoTwoSided', 'vespo', 'geoMean', 'clipCov', 'klCov'];
/** The surrogates that need the token ratio and take no dual clip (spec §9.4). */
const TOKEN_ONLY: readonly Surrogate[] = ['gpg', 'vespo', 'geoMean', 'clipCov', 'klCov'];
export type ImportanceSamplingLevel = 'token' | 'sequence' | 'sequenceToken';
export type KlEstimator = 'k1' | 'k2' | 'k3';
export type Aggregation = 'seqMeanTokenMean' | 'tokenMean' | 'constant' | 'seqMeanTokenSum';

/**
 * Rollout (training–inference mismatch) correction, spec §9.1 [TRL vllm_importance_sampling_*,
 * verl rollout_is]: importance weights w = exp(oldLogp − samplerLogp) on the policy term.
 */
export interface RolloutCorrection {
  /** 'token', 'sequence' (exp of the sum) or 'sequenceMean' (exp of the mean). Default 'sequence'. */
  level?: 'token' | 'sequence' | 'sequenceMean';
  /** 'truncate' (w ← clamp(w, clipMin, clipMax)) or 'mask' (w ← 0 outside [clipMin, clipMax]). Default 'mask'. */
  mode?: 'truncate' | 'mask';
  /** Lower bound; default 0 (none). */
  clipMin?: number;
  /** Upper bound; default 3 (TRL's). */
  clipMax?: number;
  /** Divide the weights by their batch mean [verl rollout_is_batch_normalize]. Default false. */
  batchNormalize?: boolean;
}
export interface ResolvedRolloutCorrection {
  level: 'token' | 'sequence' | 'sequenceMean';
  mode: 'truncate' | 'mask';
  clipMin: number;
  clipMax: number;
  batchNormalize: boolean;
}
/** Rejection-sampling statistics [verl rollout_rs]: k1/k2/k3 of KL(sampler ‖ old) per token or per sequence. */
export type RejectionStatistic =
  | 'token_k1' | 'token_k2' | 'token_k3'
  | 'seqSum_k1' | 'seqSum_k2' | 'seqSum_k3'
  | 'seqMean_k1' | 'seqMean_k2' | 'seqMean_k3'
  | 'seqMax_k2' | 'seqMax_k3';
export interface RolloutRejection {
  statistic: RejectionStatistic;
  /** k2/k3: reject above it (> 0). k1: ratio bounds [lower, upper] (0 < lower <= upper), or u >= 1 meaning [1/u, u]. */
  threshold: number | [number, number];
}
export const REJECTION_STATISTICS: readonly RejectionStatistic[] = [
  'token_k1', 'token_k2', 'token_k3', 'seqSum_k1', 'seqSum_k2', 'seqSum_k3', 'seqMean_k1', 'seqMean_k2', 'seqMean_k3', 'seqMax_k2', 'seqMax_k3',
];
/** TRL's default when samplerLogp is given (vllm_importance_sampling_mode 'sequence_mask', cap 3). */
export const DEFAULT_ROLLOUT_CORRECTION: Readonly<ResolvedRolloutCorrection> = { level: 'sequence', mode: 'mask', clipMin: 0, clipMax: 3, batchNormalize: false };

/** Options of the GRPO loss (spec §3-5). Names follow TRL's GRPOConfig in camelCase. */
export interface GrpoLossOptions {
  /**
   * A loss preset (TRL's loss_type names; spec §9.4 adds sapo, luspo, vespo and verl's geoMean,
   * clipCov, klCov, gpg); explicit options below override it. Default 'grpo'.
   */
  lossType?: LossType;
  /** Policy surrogate (spec §3, §9.4). Default 'clip', or the lossType preset's. */
  surrogate?: Surrogate;
  /** Sets epsilonLow and, unless given, epsilonHigh. TRL's `epsilon`. Default 0.2. */
  epsilon?: number;
  /** Lower clip range: ρ is clipped at 1 - epsilonLow. Default epsilon. */
  epsilonLow?: number;
  /** Upper clip range 1 + epsilonHigh ('clip'); the absolute cap on ρ for 'cispo'. Default epsilon (0.28 for 'dapo', 5 for 'cispo'). */
  epsilonHigh?: number;
  /** Dual-clip bound on the unclipped ratio (two-sided clipping); must be > 1 + epsilonHigh. Default off. */
  delta?: number;
  /** SAPO temperatures for positive / negative advantages. Defaults 1.0 and 1.05. */
  tauPos?: number;
  tauNeg?: number;
  /** Ratio per 'token', per 'sequence' (GSPO) or 'sequenceToken' (GSPO-token). Default 'token' ('sequence' for 'gspo'). */
  importanceSamplingLevel?: ImportanceSamplingLevel;
  /** KL coefficient. Default 0 (no KL term; refLogp not needed). */
  beta?: number;
  /** KL estimator. Default 'k3'. */
  klEstimator?: KlEstimator;
  /** Entropy bonus coefficient (loss -= entropyCoef · H). Needs entropy. Default 0. */
  entropyCoef?: number;
  /** How token losses become one scalar. Default from lossType. */
  aggregation?: Aggregation;
  /** 'tokenMean' divisor: pass the global token count of the optimizer step when accumulating. Default Σ mask. */
  normalizer?: number;
  /** 'constant' divisor per sequence. Default: the padded length L. */
  maxCompletionLength?: number;
  /** Drop sequences flagged in `truncated` (no EOS) from the loss. Default false. */
  maskTruncatedCompletions?: boolean;
  /** Train the policy term only on the top-q fraction of tokens by entropy. 1 = off (default). */
  topEntropyQuantile?: number;
  /** Spec §9.3: advantages have one entry per token row even when N = S (N ≠ S is detected). Default false. */
  advantagesPerToken?: boolean;
  /**
   * Spec §9.1: importance weights from `samplerLogp`. Default (when samplerLogp is given): TRL's
   * { level: 'sequence', mode: 'mask', clipMax: 3 }; false: no weights (samplerLogp still feeds
   * rolloutRejection, offPolicyMaskThreshold and the metrics).
   */
  rolloutCorrection?: RolloutCorrection | false;
  /** Spec §9.1: reject tokens / sequences by k1/k2/k3 of KL(sampler ‖ old) [verl rollout_rs]. Needs samplerLogp. */
  rolloutRejection?: RolloutRejection[];
  /** Spec §9.2 [TRL off_policy_mask_threshold]: drop the policy term of A < 0 sequences whose mean log(q/π) exceeds δ. */
  offPolicyMaskThreshold?: number;
  /** Spec §9.2 [TRL use_bias_correction_kl]: the KL term becomes ρ·KL. Default false. */
  biasCorrectedKl?: boolean;
  /**
   * Spec §9.8: 'aggregated' (default: -entropyCoef·H goes through `aggregation`) or 'tokenMean'
   * (TRL's entropy_coef: -entropyCoef · the mean entropy of the counted tokens, or Σ/normalizer
   * under 'tokenMean' with a normalizer, whatever the aggregation).
   */
  entropyForm?: 'aggregated' | 'tokenMean';
  /**
   * Spec §9.7: the topEntropyQuantile threshold given instead of computed (data parallel: compute
   * it with entropyQuantile over every worker's `validEntropies`). Needs topEntropyQuantile < 1.
   */
  entropyThreshold?: number;
  /** Spec §9.7: also return `validEntropies`, the entropies the threshold is the quantile of. Default false. */
  returnValidEntropies?: boolean;
  /** Spec §9.4 vespo [TRL vespo_k_pos, vespo_lambda_pos, vespo_k_neg, vespo_lambda_neg]: defaults 2, 3, 3, 2. */
  vespoKPos?: number;
  vespoLambdaPos?: number;
  vespoKNeg?: number;
  vespoLambdaNeg?: number;
  /** Spec §9.4 clipCov [verl clip_cov_ratio, clip_cov_lb, clip_cov_ub]: defaults 2e-4, 1, 5. */
  clipCovRatio?: number;
  clipCovLb?: number;
  clipCovUb?: number;
  /** Seed of clipCov's random choice of tokens (a non-negative safe integer; vary it per step). Default 0. */
  covSeed?: number;
  /** Spec §9.4 klCov [verl kl_cov_ratio, ppo_kl_coef]: defaults 2e-4 and 1. */
  klCovRatio?: number;
  ppoKlCoef?: number;
}

/** Fully resolved options (presets applied, defaults filled). */
export interface ResolvedLossOptions {
  surrogate: Surrogate;
  importanceSamplingLevel: ImportanceSamplingLevel;
  epsilonLow: number;
  epsilonHigh: number;
  delta: number | null;
  tauPos: number;
  tauNeg: number;
  beta: number;
  klEstimator: KlEstimator;
  entropyCoef: number;
  aggregation: Aggregation;
  normalizer: number | null;
  maxCompletionLength: number | null;
  maskTruncatedCompletions: boolean;
  topEntropyQuantile: number;
  advantagesPerToken: boolean;
  /** null: TRL's default (DEFAULT_ROLLOUT_CORRECTION) when samplerLogp is given; false: off. */
  rolloutCorrection: ResolvedRolloutCorrection | false | null;
  rolloutRejection: RolloutRejection[] | null;
  offPolicyMaskThreshold: number | null;
  biasCorrectedKl: boolean;
  entropyForm: 'aggregated' | 'tokenMean';
  entropyThreshold: number | null;
  returnValidEntropies: boolean;
  vespoKPos: number;
  vespoLambdaPos: number;
  vespoKNeg: number;
  vespoLambdaNeg: number;
  clipCovRatio: number;
  clipCovLb: number;
  clipCovUb: number;
  covSeed: number;
  klCovRatio: number;
  ppoKlCoef: number;
}

export const LOSS_TYPES: readonly LossType[] = ['grpo', 'bnpo', 'dr_grpo', 'dapo', 'gspo', 'cispo', 'sapo', 'luspo', 'vespo', 'geoMean', 'clipCov', 'klCov', 'gpg'];

/** What each TRL loss_type preset sets (spec §4). dr_grpo also wants advantages with scale 'none'. */
export const LOSS_PRESETS: Readonly<Record<LossType, Partial<ResolvedLossOptions>>> = {
  grpo: { surrogate: 'clip', aggregation: 'seqMeanTokenMean' },
  bnpo: { surrogate: 'clip', aggregation: 'tokenMean' },
  dr_grpo: { surrogate: 'clip', aggregation: 'constant' },
  dapo: { surrogate: 'clip', aggregation: 'tokenMean', epsilonHigh: 0.28 },
  gspo: { surrogate: 'clip', aggregation: 'seqMeanTokenMean', importanceSamplingLevel: 'sequence' },
  cispo: { surrogate: 'cispo', aggregation: 'tokenMean', epsilonHigh: 5 },
  // Spec §9.4.
  sapo: { surrogate: 'sapo', aggregation: 'seqMeanTokenMean' },
  luspo: { surrogate: 'clip', aggregation: 'seqMeanTokenSum', importanceSamplingLevel: 'sequence' },
  vespo: { surrogate: 'vespo', aggregation: 'tokenMean' },
  geoMean: { surrogate: 'geoMean', aggregation: 'seqMeanTokenMean' },
  clipCov: { surrogate: 'clipCov', aggregation: 'tokenMean' },
  klCov: { surrogate: 'klCov', aggregation: 'tokenMean' },
  gpg: { surrogate: 'gpg', aggregation: 'tokenMean' },
};

const OPTION_KEYS = [
  'lossType', 'surrogate', 'epsilon', 'epsilonLow', 'epsilonHigh', 'delta', 'tauPos', 'tauNeg', 'importanceSamplingLevel',
  'beta', 'klEstimator', 'entropyCoef', 'aggregation', 'normalizer', 'maxCompletionLength', 'maskTruncatedCompletions',
  'topEntropyQuantile', 'advantagesPerToken', 'rolloutCorrection', 'rolloutRejection', 'offPolicyMaskThreshold', 'biasCorrectedKl', 'entropyForm',
  'entropyThreshold', 'returnValidEntropies', 'vespoKPos', 'vespoLambdaPos', 'vespoKNeg', 'vespoLambdaNeg', 'clipCovRatio', 'clipCovLb',
  'clipCovUb', 'covSeed', 'klCovRatio', 'ppoKlCoef',
] as const;

/**
 * Spec §9.7: the topEntropyQuantile threshold of a set of entropies, as every backend computes it:
 * the (1 - q) quantile with linear interpolation between order statistics (numpy / torch), NaN
 * left out, +Infinity when nothing remains. Feed it every worker's `validEntropies`.
 */
export function entropyQuantile(values: ArrayLike<number>, q: number): number {
  checkNumber('entropyQuantile', 'q', q, { gt: 0, max: 1 });
  const h = Array.from(values).filter((x) => !Number.isNaN(x));
  if (h.length === 0) return Infinity;
  h.sort((a, b) => a - b);
  const pos = (1 - q) * (h.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, h.length - 1);
  return h[lo]! + (pos - lo) * (h[hi]! - h[lo]!);
}

function resolveRolloutCorrection(op: string, v: unknown): ResolvedRolloutCorrection | false | null {
  if (v === undefined) return null;
  if (v === false) return false;
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    fail('GK_INVALID_ARG', `${op}: options.rolloutCorrection must be an object or false, got ${describe(v)}`);
  const o = v as RolloutCorrection;
  checkKnownKeys(op, 'options.rolloutCorrection key', o, ['level', 'mode', 'clipMin', 'clipMax', 'batchNormalize']);
  const d = DEFAULT_ROLLOUT_CORRECTION;
  const r: ResolvedRolloutCorrection = {
    level: o.level === undefined ? d.level : checkEnum(op, 'options.rolloutCorrection.level', o.level, ['token', 'sequence', 'sequenceMean'] as const),
    mode: o.mode === undefined ? d.mode : checkEnum(op, 'options.rolloutCorrection.mode', o.mode, ['truncate', 'mask'] as const),
    clipMin: o.clipMin === undefined ? d.clipMin : checkNumber(op, 'options.rolloutCorrection.clipMin', o.clipMin, { min: 0 }),
    clipMax: o.clipMax === undefined ? d.clipMax : checkNumber(op, 'options.rolloutCorrection.clipMax', o.clipMax, { gt: 0 }),
    batchNormalize: o.batchNormalize === undefined ? false : checkBoolean(op, 'options.rolloutCorrection.batchNormalize', o.batchNormalize),
  };
  if (r.clipMin > r.clipMax) fail('GK_INVALID_ARG', `${op}: options.rolloutCorrection.clipMin (${r.clipMin}) must be <= clipMax (${r.clipMax})`);
  return r;
}

function resolveRolloutRejection(op: string, v: unknown): RolloutRejection[] | null {
  if (v === undefined) return null;
  if (!Array.isArray(v)) fail('GK_INVALID_ARG', `${op}: options.rolloutRejection must be an array of { statistic, threshold }, got ${describe(v)}`);
  if (v.length > 8) fail('GK_INVALID_ARG', `${op}: options.rolloutRejection takes at most 8 criteria, got ${v.length}`);
  return v.map((c: unknown, i) => {
    const name = `options.rolloutRejection[${i}]`;
    if (c === null || typeof c !== 'object' || Array.isArray(c)) fail('GK_INVALID_ARG', `${op}: ${name} must be { statistic, threshold }, got ${describe(c)}`);
    const o = c as RolloutRejection;
    checkKnownKeys(op, `${name} key`, o, ['statistic', 'threshold']);
    const statistic = checkEnum(op, `${name}.statistic`, o.statistic, REJECTION_STATISTICS);
    const t: unknown = o.threshold;
    if (statistic.endsWith('_k1')) {
      if (Array.isArray(t)) {
        if (t.length !== 2) fail('GK_INVALID_ARG', `${op}: ${name}.threshold must be [lower, upper], got ${describe(t)}`);
        const lower = checkNumber(op, `${name}.threshold[0]`, t[0], { gt: 0 });
        const upper = checkNumber(op, `${name}.threshold[1]`, t[1], { gt: 0 });
        if (lower > upper) fail('GK_INVALID_ARG', `${op}: ${name}.threshold needs lower <= upper, got [${lower}, ${upper}]`);
        return { statistic, threshold: [lower, upper] as [number, number] };
      }
      return { statistic, threshold: checkNumber(op, `${name}.threshold`, t, { min: 1 }) };
    }
    if (Array.isArray(t)) fail('GK_INVALID_ARG', `${op}: ${name}.threshold of ${statistic} is one upper bound, got ${describe(t)}`);
    return { statistic, threshold: checkNumber(op, `${name}.threshold`, t, { gt: 0 }) };
  });
}

const RS_AGG: Record<string, number> = { token: 0, seqSum: 1, seqMean: 2, seqMax: 3 };
/** A rejection criterion as the native keep-interval [lo, hi] on its statistic. */
export function rejectionBounds(c: RolloutRejection): { agg: number; k: number; lo: number; hi: number } {
  const [aggName, kName] = c.statistic.split('_') as [string, string];
  const k = Number(kName.slice(1)) - 1;
  if (k === 0) {
    const [lower, upper] = Array.isArray(c.threshold) ? c.threshold : [1 / c.threshold, c.threshold];
    return { agg: RS_AGG[aggName]!, k, lo: Math.log(lower), hi: Math.log(upper) };
  }
  return { agg: RS_AGG[aggName]!, k, lo: -Infinity, hi: c.threshold as number };
}

/** Applies the preset and defaults and validates every option. */
export function resolveLossOptions(o: GrpoLossOptions = {}, op = 'grpoLoss', extraKeys: readonly string[] = []): ResolvedLossOptions {
  checkObject(op, 'options', o);
  checkKnownKeys(op, 'option', o, [...OPTION_KEYS, ...extraKeys]);
  const lossType = o.lossType === undefined ? 'grpo' : checkEnum(op, 'options.lossType', o.lossType, LOSS_TYPES);
  const p = LOSS_PRESETS[lossType];
  const num = (name: keyof GrpoLossOptions, dflt: number, rule: Parameters<typeof checkNumber>[3]) =>
    o[name] === undefined ? dflt : checkNumber(op, `options.${name}`, o[name], rule);
  const epsilon = num('epsilon', 0.2, { min: 0, max: 1 });
  const r: ResolvedLossOptions = {
    surrogate: o.surrogate === undefined ? p.surrogate ?? 'clip' : checkEnum(op, 'options.surrogate', o.surrogate, SURROGATES),
    importanceSamplingLevel:
      o.importanceSamplingLevel === undefined
        ? p.importanceSamplingLevel ?? 'token'
        : checkEnum(op, 'options.importanceSamplingLevel', o.importanceSamplingLevel, ['token', 'sequence', 'sequenceToken'] as const),
    epsilonLow: num('epsilonLow', epsilon, { min: 0, max: 1 }),
    epsilonHigh: 0, // set below, once the surrogate is known
    delta: o.delta === undefined ? null : checkNumber(op, 'options.delta', o.delta, { gt: 1 }),
    tauPos: num('tauPos', 1.0, { gt: 0 }),
    tauNeg: num('tauNeg', 1.05, { gt: 0 }),
    beta: num('beta', 0, { min: 0 }),
    klEstimator: o.klEstimator === undefined ? 'k3' : checkEnum(op, 'options.klEstimator', o.klEstimator, ['k1', 'k2', 'k3'] as const),
    entropyCoef: num('entropyCoef', 0, {}),
    aggregation:
      o.aggregation === undefined
        ? p.aggregation ?? 'seqMeanTokenMean'
        : checkEnum(op, 'options.aggregation', o.aggregation, ['seqMeanTokenMean', 'tokenMean', 'constant', 'seqMeanTokenSum'] as const),
    normalizer: o.normalizer === undefined ? null : checkNumber(op, 'options.normalizer', o.normalizer, { gt: 0, reciprocal: true }),
    maxCompletionLength: o.maxCompletionLength === undefined ? null : checkNumber(op, 'options.maxCompletionLength', o.maxCompletionLength, { integer: true, min: 1 }),
    maskTruncatedCompletions: o.maskTruncatedCompletions === undefined ? false : checkBoolean(op, 'options.maskTruncatedCompletions', o.maskTruncatedCompletions),
    topEntropyQuantile: num('topEntropyQuantile', 1, { gt: 0, max: 1 }),
    advantagesPerToken: o.advantagesPerToken === undefined ? false : checkBoolean(op, 'options.advantagesPerToken', o.advantagesPerToken),
    rolloutCorrection: resolveRolloutCorrection(op, o.rolloutCorrection),
    rolloutRejection: resolveRolloutRejection(op, o.rolloutRejection),
    offPolicyMaskThreshold: o.offPolicyMaskThreshold === undefined ? null : checkNumber(op, 'options.offPolicyMaskThreshold', o.offPolicyMaskThreshold, { min: 0 }),
    biasCorrectedKl: o.biasCorrectedKl === undefined ? false : checkBoolean(op, 'options.biasCorrectedKl', o.biasCorrectedKl),
    entropyForm: o.entropyForm === undefined ? 'aggregated' : checkEnum(op, 'options.entropyForm', o.entropyForm, ['aggregated', 'tokenMean'] as const),
    entropyThreshold: o.entropyThreshold === undefined ? null : checkNumber(op, 'options.entropyThreshold', o.entropyThreshold, {}),
    returnValidEntropies: o.returnValidEntropies === undefined ? false : checkBoolean(op, 'options.returnValidEntropies', o.returnValidEntropies),
    vespoKPos: num('vespoKPos', 2, {}),
    vespoLambdaPos: num('vespoLambdaPos', 3, {}),
    vespoKNeg: num('vespoKNeg', 3, {}),
    vespoLambdaNeg: num('vespoLambdaNeg', 2, {}),
    clipCovRatio: num('clipCovRatio', 2e-4, { gt: 0, max: 1 }),
    clipCovLb: num('clipCovLb', 1, {}),
    clipCovUb: num('clipCovUb', 5, {}),
    covSeed: num('covSeed', 0, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }),
    klCovRatio: num('klCovRatio', 2e-4, { gt: 0, max: 1 }),
    ppoKlCoef: num('ppoKlCoef', 1, { min: 0 }),
  };
  checkLossType(op, r);
  if (r.entropyThreshold !== null && r.topEntropyQuantile >= 1)
    fail('GK_INVALID_ARG', `${op}: options.entropyThreshold replaces the quantile of topEntropyQuantile, which must then be < 1 (got ${r.topEntropyQuantile})`);
  // epsilonHigh: explicit > epsilon > the preset's > the surrogate's default (cispo's is an
  // absolute cap on ρ, 5, not a clip width).
  const highDefault = o.epsilon !== undefined ? epsilon : p.epsilonHigh ?? (r.surrogate === 'cispo' ? 5 : epsilon);
  r.epsilonHigh = num('epsilonHigh', highDefault, { min: 0 });
  if (r.delta !== null && r.surrogate === 'clip' && r.delta <= 1 + r.epsilonHigh)
    fail('GK_INVALID_ARG', `${op}: options.delta must be > 1 + epsilonHigh (${1 + r.epsilonHigh}), got ${r.delta}`);
  return r;
}

/** Spec §9.4: the combinations the new surrogates refuse. */
function checkLossType(op: string, r: ResolvedLossOptions): void {
  const s = r.surrogate;
  if (s === 'clipCov' && r.clipCovLb >= r.clipCovUb) fail('GK_INVALID_ARG', `${op}: options.clipCovLb (${r.clipCovLb}) must be < clipCovUb (${r.clipCovUb})`);
  if (!TOKEN_ONLY.includes(s)) return;
  if (r.importanceSamplingLevel !== 'token')
    fail('GK_INVALID_ARG', `${op}: surrogate '${s}' has its own ratio and needs importanceSamplingLevel 'token', got '${r.importanceSamplingLevel}'`);
  if (r.delta !== null) fail('GK_INVALID_ARG', `${op}: options.delta (the dual clip) applies to the 'clip' surrogate, not '${s}'`);
  if (s === 'vespo' && r.rolloutCorrection && r.rolloutCorrection.level !== 'token')
    fail('GK_INVALID_ARG', `${op}: vespo takes token-level rolloutCorrection only (TRL refuses sequence-level weights with vespo), got level '${r.rolloutCorrection.level}'`);
  if (s === 'geoMean' && r.topEntropyQuantile < 1)
    fail('GK_INVALID_ARG', `${op}: geoMean does not take topEntropyQuantile < 1 (its ratio is a geometric mean over the whole sequence)`);
  if (s === 'geoMean' && r.offPolicyMaskThreshold !== null)
    fail('GK_INVALID_ARG', `${op}: geoMean does not take offPolicyMaskThreshold`);
}

/**
 * vespo refuses sequence-level weights, so also the default correction that samplerLogp brings
 * (spec §9.4): `why` names what brought samplerLogp in (the input, or the trainer's rejection).
 */
export function checkVespoCorrection(op: string, r: ResolvedLossOptions, hasSampler: boolean, why: string): void {
  if (hasSampler && r.surrogate === 'vespo' && r.rolloutCorrection === null)
    fail('GK_INVALID_ARG', `${op}: with ${why} the default rolloutCorrection is sequence-level, which vespo refuses (TRL does too): pass rolloutCorrection { level: 'token', ... } or false`);
}

const RC_LEVEL = { token: 1, sequence: 2, sequenceMean: 3 } as const;

/** The rollout correction in effect: the option, or TRL's default when samplerLogp is given. */
export function effectiveRolloutCorrection(r: ResolvedLossOptions, hasSampler: boolean): ResolvedRolloutCorrection | null {
  if (!hasSampler || r.rolloutCorrection === false) return null;
  return r.rolloutCorrection ?? { ...DEFAULT_ROLLOUT_CORRECTION };
}

function toNativeOptions(r: ResolvedLossOptions, hasSampler = false, perToken = false): NativeLossOptions {
  const rc = effectiveRolloutCorrection(r, hasSampler);
  return {
    advantagesPerToken: perToken,
    rolloutLevel: rc ? RC_LEVEL[rc.level] : 0,
    rolloutMode: rc && rc.mode === 'mask' ? 1 : 0,
    rolloutClipMin: rc ? rc.clipMin : 0,
    rolloutClipMax: rc ? rc.clipMax : 3,
    rolloutBatchNormalize: rc ? rc.batchNormalize : false,
    rejection: (r.rolloutRejection ?? []).map(rejectionBounds),
    ...(r.offPolicyMaskThreshold !== null ? { offPolicyMaskThreshold: r.offPolicyMaskThreshold } : {}),
    biasCorrectedKl: r.biasCorrectedKl,
    entropyForm: r.entropyForm === 'tokenMean' ? 1 : 0,
    ...(r.entropyThreshold !== null ? { entropyThreshold: r.entropyThreshold } : {}),
    surrogate: SurrogateCode[r.surrogate],
    importanceSamplingLevel: IsLevelCode[r.importanceSamplingLevel],
    klEstimator: KlCode[r.klEstimator],
    aggregation: AggregationCode[r.aggregation],
    epsilonLow: r.epsilonLow,
    epsilonHigh: r.epsilonHigh,
    delta: r.delta ?? 0,
    tauPos: r.tauPos,
    tauNeg: r.tauNeg,
    beta: r.beta,
    entropyCoef: r.entropyCoef,
    normalizer: r.normalizer ?? 0,
    maxCompletionLength: r.maxCompletionLength ?? 0,
    maskTruncatedCompletions: r.maskTruncatedCompletions,
    topEntropyQuantile: r.topEntropyQuantile,
    vespoKPos: r.vespoKPos,
    vespoLambdaPos: r.vespoLambdaPos,
    vespoKNeg: r.vespoKNeg,
    vespoLambdaNeg: r.vespoLambdaNeg,
    covRatio: r.surrogate === 'klCov' ? r.klCovRatio : r.clipCovRatio,
    clipCovLb: r.clipCovLb,
    clipCovUb: r.clipCovUb,
    ppoKlCoef: r.ppoKlCoef,
    covSeed: r.covSeed,
  };
}

/** The sequence layout and the per-sequence / per-token inputs shared by both forms of the loss. */
export interface GrpoSequenceInputs {
  /** One advantage per sequence (see groupAdvantages): length S; or one per token row: length N (spec §9.3). */
  advantages: FloatInput;
  /**
   * Packed layout: S+1 row offsets; sequence s is rows seqOffsets[s] .. seqOffsets[s+1]-1.
   * Without it, the layout is padded: N = S·L rows, sequence s is rows s·L .. s·L+L-1.
   */
  seqOffsets?: ArrayLike<number> | BigInt64Array;
  /** Per-token completion mask (0/1 or booleans), N entries. Default all 1. */
  completionMask?: Tensor | ArrayLike<number | boolean>;
  /** Log-probs of the policy that sampled the completions (N). Omitted: on-policy (ρ = 1). */
  oldLogp?: FloatInput;
  /** Log-probs of the reference policy (N). Needed when beta > 0; gives klMean otherwise. */
  refLogp?: FloatInput;
  /** Log-probs the generating engine reported for each token (N), spec §9.1 (rollout correction). */
  samplerLogp?: FloatInput;
  /** Per sequence: true where the completion was truncated (no EOS). Used with maskTruncatedCompletions. */
  truncated?: Tensor | ArrayLike<number | boolean>;
}

export interface GrpoLossInputs extends GrpoSequenceInputs {
  /** Log-probs of the policy being trained, one per token row (N). */
  logp: FloatInput;
  /** Per-token entropy (N): needed for entropyCoef != 0 and topEntropyQuantile < 1. */
  entropy?: FloatInput;
}

export interface GrpoLossMetrics {
  /** Mean KL to the reference over valid tokens (when refLogp is given). */
  klMean?: number;
  ratioMean: number;
  /** Fraction of valid tokens with ρ < 1 - epsilonLow and A < 0. */
  clipFractionLow: number;
  /** Fraction with ρ > 1 + epsilonHigh and A > 0 (for 'cispo': ρ > epsilonHigh and A > 0). */
  clipFractionHigh: number;
  clipFraction: number;
  /** Mean entropy over valid tokens (when entropy is known). */
  entropyMean?: number;
  /** Valid tokens: Σ mask. */
  tokens: number;
  /**
   * Valid tokens whose log-prob or entropy is NaN or ±Infinity (a NaN/inf logit, or a row with no
   * finite logit): each makes the loss NaN or infinite. 0 in a healthy step; `checkFinite` turns
   * such rows into a GK_NONFINITE error instead.
   */
  nonFiniteRows: number;
  /** Spec §9.1 (with samplerLogp): fractions of weights truncated / masked (per token or per sequence, by level). */
  isTruncatedFraction?: number;
  isMaskedFraction?: number;
  /** Fraction of valid tokens rejected by rolloutRejection, and of sequences with a rejected token. */
  rejectedFraction?: number;
  rejectedSeqFraction?: number;
  /** Mean and max importance weight after truncation / mask (before batchNormalize). */
  isWeightMean?: number;
  isWeightMax?: number;
  /** Mean over valid tokens of k3 of KL(sampler ‖ old). */
  samplerKl?: number;
  /** Extremes over sequences of Σ_t (oldLogp − samplerLogp). */
  seqLogRatioMin?: number;
  seqLogRatioMax?: number;
  /** Spec §9.2 (with offPolicyMaskThreshold): fraction of sequences whose policy term the mask dropped. */
  offPolicyMaskedFraction?: number;
  /** Spec §9.4 (vespo): the mean of the weights φ over the tokens in the loss. */
  phiMean?: number;
}

export interface GrpoLossResult {
  loss: number;
  metrics: GrpoLossMetrics;
  /** ∂loss/∂logp per token, float32. */
  gradLogp: Tensor<'float32'>;
  /** ∂loss/∂entropy per token, when entropyCoef != 0. */
  gradEntropy?: Tensor<'float32'>;
  /** With returnValidEntropies (spec §9.7): the non-NaN entropies of the tokens in the loss, in row order. */
  validEntropies?: Float32Array;
  /** The loss the options were resolved to. */
  options: ResolvedLossOptions;
}

const SEQ_KEYS = ['advantages', 'seqOffsets', 'completionMask', 'oldLogp', 'refLogp', 'samplerLogp', 'truncated'] as const;

/**
 * The sequence inputs of N token rows whose shape is `rows` (the logits' shape without V, or
 * the shape of a logp tensor). Without seqOffsets, rows of shape [S, L] are S padded sequences:
 * advantages must then have exactly S entries (a different count would silently regroup them).
 */
function readSequenceInputs(
  op: string, inp: GrpoSequenceInputs, n: number, opts: ResolvedLossOptions, rows: readonly number[], raw: GrpoLossOptions = {},
): Omit<NativeLossInputs, 'options'> & { maxLen: number; perToken: boolean } {
  const advRaw = inp.advantages;
  const advLen = lengthOf(advRaw);
  if (advLen === undefined || !(advRaw instanceof Tensor || Array.isArray(advRaw) || ArrayBuffer.isView(advRaw)))
    fail('GK_INVALID_ARG', `${op}: inputs.advantages (one per sequence, or one per token) is required, got ${describe(advRaw)}`);
  // The sequence count: from seqOffsets, else from [S, L] rows, else from the advantages.
  const so = inp.seqOffsets;
  const soLen = so !== undefined && (Array.isArray(so) || ArrayBuffer.isView(so)) ? (so as ArrayLike<number>).length : undefined;
  let s: number;
  // (seqOffsets with per-sequence advantages: S is theirs, and checkLayout reports a seqOffsets of the wrong length.)
  if (soLen !== undefined) s = advLen === n || opts.advantagesPerToken ? soLen - 1 : advLen;
  else if (rows.length >= 2) s = rows[0]!;
  else {
    if (opts.advantagesPerToken)
      fail('GK_SHAPE', `${op}: per-token advantages (advantagesPerToken) need seqOffsets or rows of shape [S, L] to know the sequences`);
    s = advLen;
  }
  // §9.3: N entries are per token when N ≠ S; N = S is read as per sequence unless advantagesPerToken.
  const perToken = opts.advantagesPerToken || (advLen === n && advLen !== s);
  if (perToken && advLen !== n)
    fail('GK_SHAPE', `${op}: with advantagesPerToken, inputs.advantages must have one entry per token row (${n}), got ${advLen}`);
  if (s < 1) fail('GK_SHAPE', `${op}: at least one sequence is required (${soLen !== undefined ? 'inputs.seqOffsets has fewer than 2 entries' : 'inputs.advantages is empty'})`);
  if (!perToken && advLen !== s) {
    if (soLen === undefined && rows.length >= 2)
      fail('GK_SHAPE', `${op}: rows of shape [${rows.join(', ')}] are ${rows[0]} padded sequences, so inputs.advantages must have ${rows[0]} entries (one per sequence) or ${n} (one per token), got ${advLen}; pass seqOffsets for a packed layout`);
    fail('GK_SHAPE', `${op}: inputs.advantages must have S = ${s} entries (one per sequence) or N = ${n} (one per token), got ${advLen}`);
  }
  // Masked rows' per-token advantages are ignored (may be NaN): checked finite where valid only, on the native side's terms.
  const advantages = floatArg(op, 'inputs.advantages', advRaw, advLen, { finite: !perToken });
  const { seqOffsets, maxLen } = checkLayout(op, inp.seqOffsets, s, n);
  const out: Omit<NativeLossInputs, 'options'> & { maxLen: number; perToken: boolean } = { s, seqOffsets, advantages, maxLen, perToken };
  for (const k of ['completionMask', 'oldLogp', 'refLogp', 'samplerLogp'] as const) checkRowShape(op, `inputs.${k}`, inp[k], rows);
  if (inp.completionMask !== undefined) out.mask = maskArg(op, 'inputs.completionMask', inp.completionMask, n);
  if (inp.oldLogp !== undefined) out.oldLogp = floatArg(op, 'inputs.oldLogp', inp.oldLogp, n);
  if (inp.refLogp !== undefined) out.refLogp = floatArg(op, 'inputs.refLogp', inp.refLogp, n);
  if (inp.samplerLogp !== undefined) out.samplerLogp = floatArg(op, 'inputs.samplerLogp', inp.samplerLogp, n);
  if (inp.truncated !== undefined) out.truncated = maskArg(op, 'inputs.truncated', inp.truncated, s);
  const hostAdv = out.advantages instanceof Float32Array ? out.advantages : null;
  if (perToken && hostAdv && out.mask instanceof Uint8Array) {
    for (let t = 0; t < n; t++)
      if (out.mask[t] && !Number.isFinite(hostAdv[t]!)) fail('GK_NONFINITE', `${op}: inputs.advantages[${t}] must be finite (a valid token), got ${hostAdv[t]}`, t);
  } else if (perToken && hostAdv) {
    for (let t = 0; t < n; t++)
      if (!Number.isFinite(hostAdv[t]!)) fail('GK_NONFINITE', `${op}: inputs.advantages[${t}] must be finite, got ${hostAdv[t]}`, t);
  }
  if (opts.beta > 0 && !out.refLogp) fail('GK_INVALID_ARG', `${op}: inputs.refLogp is required when beta > 0 (beta = ${opts.beta})`);
  if (opts.maskTruncatedCompletions && !out.truncated)
    fail('GK_INVALID_ARG', `${op}: inputs.truncated (one flag per sequence) is required with maskTruncatedCompletions`);
  checkVespoCorrection(op, opts, !!out.samplerLogp, 'samplerLogp');
  if (!out.samplerLogp && (raw.rolloutCorrection !== undefined && raw.rolloutCorrection !== false))
    fail('GK_INVALID_ARG', `${op}: inputs.samplerLogp (the sampling engine's log-probs) is required with rolloutCorrection`);
  if (!out.samplerLogp && opts.rolloutRejection !== null && opts.rolloutRejection.length > 0)
    fail('GK_INVALID_ARG', `${op}: inputs.samplerLogp (the sampling engine's log-probs) is required with rolloutRejection`);
  return out;
}

function metricsFrom(m: NativeLossMetrics, hasRef: boolean, hasEntropy: boolean, hasSampler = false, offPolicy = false, vespo = false): GrpoLossMetrics {
  const out: GrpoLossMetrics = {
    ratioMean: m.ratioMean,
    clipFractionLow: m.clipFractionLow,
    clipFractionHigh: m.clipFractionHigh,
    clipFraction: m.clipFraction,
    tokens: m.tokens,
    nonFiniteRows: m.nonFiniteRows,
  };
  if (hasRef) out.klMean = m.klMean;
  if (hasEntropy) out.entropyMean = m.entropyMean;
  if (hasSampler) {
    out.isTruncatedFraction = m.isTruncatedFraction;
    out.isMaskedFraction = m.isMaskedFraction;
    out.rejectedFraction = m.rejectedFraction;
    out.rejectedSeqFraction = m.rejectedSeqFraction;
    out.isWeightMean = m.isWeightMean;
    out.isWeightMax = m.isWeightMax;
    out.samplerKl = m.samplerKl;
    out.seqLogRatioMin = m.seqLogRatioMin;
    out.seqLogRatioMax = m.seqLogRatioMax;
  }
  if (offPolicy) out.offPolicyMaskedFraction = m.offPolicyMaskedFraction;
  if (vespo) out.phiMean = m.phiMean;
  return out;
}

/**
 * The GRPO loss from per-token log-probs (spec §3-5): the scalar loss, its metrics and
 * ∂loss/∂logp (and ∂loss/∂H). Reductions are in float64 and deterministic.
 */
export async function grpoLossFromLogp(inputs: GrpoLossInputs, options: GrpoLossOptions = {}): Promise<GrpoLossResult> {
  const op = 'grpoLoss';
  checkObject(op, 'inputs', inputs);
  if (!inputs) fail('GK_INVALID_ARG', `${op}: inputs are required`);
  checkKnownKeys(op, 'input', inputs, [...SEQ_KEYS, 'logp', 'entropy']);
  const opts = resolveLossOptions(options, op);
  const lpRaw = inputs.logp;
  const n = lengthOf(lpRaw);
  if (n === undefined || !(lpRaw instanceof Tensor || Array.isArray(lpRaw) || ArrayBuffer.isView(lpRaw)))
    fail('GK_INVALID_ARG', `${op}: inputs.logp (one log-prob per token) is required, got ${describe(lpRaw)}`);
  const logp = floatArg(op, 'inputs.logp', lpRaw, n);
  const rows = lpRaw instanceof Tensor ? lpRaw.shape : [n];
  const seq = readSequenceInputs(op, inputs, n, opts, rows, options);
  checkRowShape(op, 'inputs.entropy', inputs.entropy, rows);
  const entropy = inputs.entropy === undefined ? undefined : floatArg(op, 'inputs.entropy', inputs.entropy, n);
  if ((opts.entropyCoef !== 0 || opts.topEntropyQuantile < 1) && !entropy)
    fail('GK_INVALID_ARG', `${op}: inputs.entropy is required for entropyCoef != 0 or topEntropyQuantile < 1`);
  const nativeOpts = toNativeOptions(opts, !!seq.samplerLogp, seq.perToken);
  if (opts.aggregation === 'constant' && opts.maxCompletionLength === null) nativeOpts.maxCompletionLength = seq.maxLen;
  const at = Placement.of(op, [lpRaw, inputs.entropy, ...SEQ_KEYS.map((k) => inputs[k])]);
  const dlogp = at.f32(n);
  const dentropy = opts.entropyCoef !== 0 ? at.f32(n) : undefined;
  if (opts.returnValidEntropies && !entropy) fail('GK_INVALID_ARG', `${op}: inputs.entropy is required for returnValidEntropies`);
  const keptMask = opts.returnValidEntropies ? at.array('uint8', n) as Uint8Array : undefined;
  const { maxLen: _unused, perToken: _perToken, ...seqArgs } = seq;
  const native = addon();
  const m = await at.run(call(op, () =>
    native.grpoLossStep({
      device: at.device, ...seqArgs, n, logp, ...(entropy ? { entropy } : {}), dlogp, ...(dentropy ? { dentropy } : {}), ...(keptMask ? { keptMask } : {}), options: nativeOpts,
    }),
  ));
  const res: GrpoLossResult = { loss: m.loss, metrics: metricsFrom(m, !!seq.refLogp, !!entropy, !!seq.samplerLogp, opts.offPolicyMaskThreshold !== null, opts.surrogate === 'vespo'), gradLogp: at.tensor(dlogp, 'float32', [n]), options: opts };
  if (dentropy) res.gradEntropy = at.tensor(dentropy, 'float32', [n]);
  if (keptMask) {
    const h = inputs.entropy instanceof Tensor ? await inputs.entropy.toArray() : (entropy as Float32Array);
    res.validEntropies = await gatherValid(at.tensor(keptMask, 'uint8', [n]), h as ArrayLike<number>);
  }
  return res;
}

export interface GrpoLossFromLogitsInputs extends GrpoSequenceInputs {
  /** Policy logits [N, V] or [S, L, V], float32 / float16 / bfloat16. */
  logits: Tensor;
  /** The sampled token of each row (N); ignoreIndex rows leave the loss. */
  targets: TargetsInput;
}

export interface GrpoLossFromLogitsOptions extends GrpoLossOptions {
  temperature?: number;
  ignoreIndex?: number;
  checkFinite?: boolean;
  /** Write ∂loss/∂logits over the logits tensor's storage. Default false. */
  inPlace?: boolean;
  /** Also return Σ_j p² per row (spec §9.6), from the forward pass. Default false. */
  sumP2?: boolean;
}

export interface GrpoLossFromLogitsResult {
  loss: number;
  metrics: GrpoLossMetrics;
  /** ∂loss/∂logits in the logits' dtype and shape (the logits tensor itself with inPlace). */
  gradLogits: Tensor<FloatDType>;
  /** Per-token log-probs and entropy of the policy, float32 (the forward's by-products). */
  logp: Tensor<'float32'>;
  entropy: Tensor<'float32'>;
  /** With sumP2 (spec §9.6): Σ_j p² per row, float32 (0 for ignored rows). */
  sumP2?: Tensor<'float32'>;
  /** With returnValidEntropies (spec §9.7): the non-NaN entropies of the tokens in the loss, in row order. */
  validEntropies?: Float32Array;
  options: ResolvedLossOptions;
}

/**
 * The fused GRPO step from logits (spec §6): loss, metrics and ∂loss/∂logits, with no [N, V]
 * float32 intermediate (extra memory O(N)). Entropy is always computed (it is free here).
 */
export async function grpoLossFromLogits(inputs: GrpoLossFromLogitsInputs, options: GrpoLossFromLogitsOptions = {}): Promise<GrpoLossFromLogitsResult> {
  const op = 'grpoLoss';
  checkObject(op, 'inputs', inputs);
  if (!inputs) fail('GK_INVALID_ARG', `${op}: inputs are required`);
  checkKnownKeys(op, 'input', inputs, [...SEQ_KEYS, 'logits', 'targets']);
  const opts = resolveLossOptions(options, op, ['temperature', 'ignoreIndex', 'checkFinite', 'inPlace', 'sumP2']);
  const { n, v, dtype, data } = checkLogits(op, inputs.logits);
  const row = readRowOptions(op, options);
  const wantP2 = options.sumP2 === undefined ? false : checkBoolean(op, 'options.sumP2', options.sumP2);
  const checkFinite = options.checkFinite === undefined ? false : checkBoolean(op, 'options.checkFinite', options.checkFinite);
  const inPlace = options.inPlace === undefined ? false : checkBoolean(op, 'options.inPlace', options.inPlace);
  const rows = inputs.logits.shape.slice(0, -1);
  checkRowShape(op, 'inputs.targets', inputs.targets, rows);
  const targets = checkTargets(op, inputs.targets, n, v, row.ignoreIndex);
  const seq = readSequenceInputs(op, inputs, n, opts, rows, options);
  const nativeOpts = toNativeOptions(opts, !!seq.samplerLogp, seq.perToken);
  if (opts.aggregation === 'constant' && opts.maxCompletionLength === null) nativeOpts.maxCompletionLength = seq.maxLen;
  const at = Placement.of(op, [inputs.logits, inputs.targets, ...SEQ_KEYS.map((k) => inputs[k])]);
  const logp = at.f32(n);
  const entropy = at.f32(n);
  const lse = at.f32(n);
  const sumP2 = wantP2 ? at.f32(n) : undefined;
  const grad = inPlace ? undefined : at.array(dtype, n * v);
  const keptMask = opts.returnValidEntropies ? at.array('uint8', n) as Uint8Array : undefined;
  const { maxLen: _unused, perToken: _perToken, ...seqArgs } = seq;
  const native = addon();
  const m = await at.run(call(op, () =>
    native.grpoLossFused({
      device: at.device, logits: data, dtype: DTypeCode[dtype], n, v, targets, targetsType: targetsType(inputs.targets), ...row, checkFinite,
      ...seqArgs, logp, entropy, lse, ...(sumP2 ? { sumP2 } : {}), ...(grad ? { grad: grad as Float32Array | Uint16Array } : { gradInPlace: true }), ...(keptMask ? { keptMask } : {}), options: nativeOpts,
    }),
  ));
  const rowShape = rows;
  at.release(lse); // internal to the op (its backward pass used it)
  const entropyT = at.tensor(entropy, 'float32', rowShape);
  const validEntropies = keptMask ? await gatherValid(at.tensor(keptMask, 'uint8', [n]), (await entropyT.toArray()) as Float32Array) : undefined;
  return {
    ...(validEntropies ? { validEntropies } : {}),
    loss: m.loss,
    metrics: metricsFrom(m, !!seq.refLogp, true, !!seq.samplerLogp, opts.offPolicyMaskThreshold !== null, opts.surrogate === 'vespo'),
    gradLogits: grad ? at.tensor(grad, dtype, inputs.logits.shape) : (inputs.logits as Tensor<FloatDType>),
    logp: at.tensor(logp, 'float32', rowShape),
    entropy: entropyT,
    ...(sumP2 ? { sumP2: at.tensor(sumP2, 'float32', rowShape) } : {}),
    options: opts,
  };
}

/** The non-NaN entropies where the kept mask is 1, in row order (the mask is read to the host, then freed). */
async function gatherValid(kept: Tensor, h: ArrayLike<number>): Promise<Float32Array> {
  const k = (await kept.toArray()) as Uint8Array;
  kept.dispose();
  const out: number[] = [];
  for (let t = 0; t < k.length; t++) if (k[t] && !Number.isNaN(h[t]!)) out.push(h[t]!);
  return Float32Array.from(out);
}

/**
 * The GRPO loss. With `inputs.logits` (and targets) it is the fused step from logits
 * (grpoLossFromLogits); with `inputs.logp` it works on per-token log-probs (grpoLossFromLogp).
 */
export function grpoLoss(inputs: GrpoLossFromLogitsInputs, options?: GrpoLossFromLogitsOptions): Promise<GrpoLossFromLogitsResult>;
export function grpoLoss(inputs: GrpoLossInputs, options?: GrpoLossOptions): Promise<GrpoLossResult>;
export function grpoLoss(
  inputs: GrpoLossInputs | GrpoLossFromLogitsInputs,
  options?: GrpoLossOptions | GrpoLossFromLogitsOptions,
): Promise<GrpoLossResult | GrpoLossFromLogitsResult> {
  if (inputs && typeof inputs === 'object' && 'logits' in inputs) return grpoLossFromLogits(inputs, options);
  return grpoLossFromLogp(inputs as GrpoLossInputs, options);
}
