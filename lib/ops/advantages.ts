import { describe, fail } from '../errors';
import { addon, call, EstimatorCode, MultiObjectiveCode, ScaleCode } from '../native';
import { Placement } from '../device';
import { Tensor } from '../tensor';
import { allocate } from '../dtype';
import { checkBoolean, checkEnum, checkKnownKeys, checkLive, checkNumber, checkObject, lengthOf } from '../validate';

export type AdvantageScale = 'group' | 'batch' | 'none';
export type AdvantageEstimator = 'grpo' | 'rloo' | 'reinforcePlusPlus' | 'reinforcePlusPlusBaseline' | 'opo' | 'gpg' | 'grpoPassK';
export type MultiObjectiveAggregation = 'sumThenNormalize' | 'normalizeThenSum';

const ESTIMATORS = ['grpo', 'rloo', 'reinforcePlusPlus', 'reinforcePlusPlusBaseline', 'opo', 'gpg', 'grpoPassK'] as const;

export interface GroupAdvantagesOptions {
  /** G: completions per prompt. Must divide the number of rewards. */
  groupSize: number;
  /**
   * Divisor: 'group' std (default for 'grpo' and 'grpoPassK'), 'batch' std, or 'none' (Dr. GRPO;
   * default for 'rloo', 'opo', 'gpg'). The REINFORCE++ estimators accept only 'batch' (their default).
   */
  scale?: AdvantageScale;
  /**
   * Baseline (spec §2, §9.5): the group mean ('grpo', default), the leave-one-out mean ('rloo'),
   * REINFORCE++ batch whitening without / with the group mean ('reinforcePlusPlus',
   * 'reinforcePlusPlusBaseline' [verl reinforce_plus_plus(_baseline)]), the length-weighted group
   * mean ('opo', needs `lengths`), GPG's rescaled group mean ('gpg'), or pass@k's best-vs-runner-up
   * ('grpoPassK' [verl grpo_passk]).
   */
  estimator?: AdvantageEstimator;
  /**
   * Several reward functions: sum them then normalise ('sumThenNormalize', default), or normalise
   * each within its group, sum, then normalise over the batch ('normalizeThenSum' [TRL
   * multi_objective_aggregation, GDPO]; estimator 'grpo' only, no `scale`).
   */
  multiObjectiveAggregation?: MultiObjectiveAggregation;
  /** Completion lengths in tokens, one per completion: the weights of 'opo' (required) and of REINFORCE++ (default 1 each). */
  lengths?: ArrayLike<number>;
  /** Added to the std before dividing (inside the square root for REINFORCE++). Default 1e-4 (1e-8 for REINFORCE++). */
  eps?: number;
  /** One weight per reward function (when several are given). Default all 1. */
  weights?: ArrayLike<number>;
  /**
   * Spec §9.7: the batch statistics of scale 'batch' (count, mean and m2 = Σ (x − mean)² of the
   * valid combined rewards) or of the whitened estimators (REINFORCE++: length-weighted count,
   * mean and m2 of their x; normalizeThenSum: of the summed group z-scores), given instead of
   * computed: data-parallel workers all-reduce their `partials` with combineBatchStats.
   */
  batchStats?: BatchStats;
  /** Spec §9.7: also return this batch's `partials` (the statistics batchStats takes). Default false. */
  returnPartials?: boolean;
  /**
   * Spec §9.7, estimator 'gpg': the counts α = valid / max(1, nonzero) is formed from, given
   * instead of counted: data-parallel workers sum every worker's result `gpgCounts`.
   */
  gpgCounts?: GpgCounts;
}

/** gpg's batch counts: valid combined rewards, and the non-zero ones among them. */
export interface GpgCounts {
  valid: number;
  nonzero: number;
}

/** Spec §9.7: a batch's (weighted) count, mean and sum of squared deviations from the mean. */
export interface BatchStats {
  count: number;
  mean: number;
  m2: number;
}

/**
 * Spec §9.7: Chan's pairwise combination of two workers' batch statistics
 * (n = n_a + n_b, δ = mean_b − mean_a, mean = mean_a + δ·n_b/n, m2 = m2_a + m2_b + δ²·n_a·n_b/n).
 * Combine in a fixed worker order for the same result on every worker.
 */
export function combineBatchStats(a: BatchStats, b: BatchStats): BatchStats {
  const count = a.count + b.count;
  if (!(count > 0)) return { count, mean: 0, m2: a.m2 + b.m2 };
  const delta = b.mean - a.mean;
  return { count, mean: a.mean + (delta * b.count) / count, m2: a.m2 + b.m2 + (delta * delta * a.count * b.count) / count };
}

/** One reward per completion; NaN, null or undefined mean "not applicable". */
export type RewardValues = Tensor | Float32Array | Float64Array | ArrayLike<number | null | undefined>;

export interface GroupAdvantagesResult {
  /** One advantage per completion, float32. */
  advantages: Tensor<'float32'>;
  /** The combined reward Σ_k w_k r_k per completion (NaN where no reward function applied). */
  rewards: Float64Array;
  /** Per group mean and Bessel-corrected std of the valid combined rewards. */
  groupMean: Float64Array;
  groupStd: Float64Array;
  /** Groups whose rewards are all equal (or with fewer than two valid): their advantages are exactly 0. */
  zeroVarianceGroups: number;
  /** With returnPartials (spec §9.7): this batch's statistics, for combineBatchStats. */
  partials?: BatchStats;
  /** Estimator 'gpg' (spec §9.7): this batch's counts, to be summed over workers into `gpgCounts`. */
  gpgCounts?: GpgCounts;
}

const KEYS = ['groupSize', 'scale', 'estimator', 'multiObjectiveAggregation', 'lengths', 'eps', 'weights', 'batchStats', 'returnPartials', 'gpgCounts'] as const;

function isRewardList(r: unknown): r is RewardValues[] {
  return Array.isArray(r) && r.length > 0 && r.every((x) => x instanceof Tensor || ArrayBuffer.isView(x) || Array.isArray(x));
}

function readRewards(op: string, name: string, r: unknown, into: Float64Array, offset: number, n: number): void {
  checkLive(op, name, r);
  const data = r instanceof Tensor ? (r.dtype === 'float32' || r.dtype === 'float64' ? r.data : r.toFloat32()) : r;
  if (!(Array.isArray(data) || (ArrayBuffer.isView(data) && !(data instanceof DataView) && !(data instanceof BigInt64Array))))
    fail('GK_DTYPE', `${op}: ${name} must be a Tensor, Float32Array, Float64Array or number[], got ${describe(r)}`);
  const arr = data as ArrayLike<unknown>;
  if (arr.length !== n) fail('GK_SHAPE', `${op}: ${name} must have ${n} elements (one per completion), got ${arr.length}`);
  if (arr instanceof Float32Array || arr instanceof Float64Array) {
    into.set(arr, offset);
    for (let i = 0; i < n; i++) {
      const v = into[offset + i]!;
      if (v === Infinity || v === -Infinity) fail('GK_NONFINITE', `${op}: ${name}[${i}] is ${v}; use NaN for "not applicable"`, i);
    }
    return;
  }
  for (let i = 0; i < n; i++) {
    const v = arr[i];
    if (v === null || v === undefined) into[offset + i] = NaN;
    else if (typeof v !== 'number') fail('GK_INVALID_ARG', `${op}: ${name}[${i}] must be a number, NaN, null or undefined, got ${describe(v)}`, i);
    else if (v === Infinity || v === -Infinity) fail('GK_NONFINITE', `${op}: ${name}[${i}] is ${v}; use NaN for "not applicable"`, i);
    else into[offset + i] = v;
  }
}

/**
 * Group-relative advantages (spec §2 and §9.5), with statistics in float64. `rewards` is one array
 * (one reward function) or a list of arrays (several reward functions, summed with `weights`,
 * NaN skipped).
 */
export async function groupAdvantages(rewards: RewardValues | RewardValues[], options: GroupAdvantagesOptions): Promise<GroupAdvantagesResult> {
  const op = 'groupAdvantages';
  if (options === undefined) fail('GK_INVALID_ARG', `${op}: options with groupSize are required, got undefined`);
  checkObject(op, 'options', options);
  checkKnownKeys(op, 'option', options, KEYS);
  const list = isRewardList(rewards) ? rewards : [rewards as RewardValues];
  const first = list[0] as unknown;
  const n = lengthOf(first);
  if (n === undefined || !(first instanceof Tensor || Array.isArray(first) || (ArrayBuffer.isView(first) && !(first instanceof DataView))))
    fail('GK_DTYPE', `${op}: rewards must be an array of rewards or a list of them, got ${describe(rewards)}`);
  if (n < 1) fail('GK_SHAPE', `${op}: rewards must not be empty`);
  const g = checkNumber(op, 'options.groupSize', options.groupSize, { integer: true, min: 1 });
  if (n % g !== 0) fail('GK_SHAPE', `${op}: options.groupSize ${g} does not divide the ${n} rewards`);
  const estimator = options.estimator === undefined ? 'grpo' : checkEnum(op, 'options.estimator', options.estimator, ESTIMATORS);
  const aggregation = options.multiObjectiveAggregation === undefined
    ? 'sumThenNormalize'
    : checkEnum(op, 'options.multiObjectiveAggregation', options.multiObjectiveAggregation, ['sumThenNormalize', 'normalizeThenSum'] as const);
  const rpp = estimator === 'reinforcePlusPlus' || estimator === 'reinforcePlusPlusBaseline';
  if (aggregation === 'normalizeThenSum') {
    if (estimator !== 'grpo') fail('GK_INVALID_ARG', `${op}: options.multiObjectiveAggregation 'normalizeThenSum' works with estimator 'grpo' only, got '${estimator}'`);
    if (options.scale !== undefined) fail('GK_INVALID_ARG', `${op}: options.scale has no effect with multiObjectiveAggregation 'normalizeThenSum' (group then batch normalisation); leave it unset`);
  }
  const scaleDefault = rpp ? 'batch' : estimator === 'rloo' || estimator === 'opo' || estimator === 'gpg' ? 'none' : 'group';
  const scale = options.scale === undefined ? scaleDefault : checkEnum(op, 'options.scale', options.scale, ['group', 'batch', 'none'] as const);
  if (rpp && scale !== 'batch') fail('GK_INVALID_ARG', `${op}: estimator '${estimator}' whitens over the batch: options.scale must be 'batch' or unset, got '${scale}'`);
  const eps = options.eps === undefined ? (rpp ? 1e-8 : 1e-4) : checkNumber(op, 'options.eps', options.eps, { min: 0 });
  const k = list.length;
  for (let i = 1; i < k; i++)
    if (lengthOf(list[i]) !== n) fail('GK_SHAPE', `${op}: rewards[${i}] must have ${n} elements (one per completion), got ${describe(list[i])}`);
  const packed = allocate('float64', k * n, op) as Float64Array;
  list.forEach((r, i) => readRewards(op, k === 1 ? 'rewards' : `rewards[${i}]`, r, packed, i * n, n));
  let weights: Float64Array | undefined;
  if (options.weights !== undefined) {
    const w = options.weights;
    if (!(Array.isArray(w) || ArrayBuffer.isView(w)) || w.length !== k)
      fail('GK_SHAPE', `${op}: options.weights must have one weight per reward function (${k}), got ${describe(w)}`);
    weights = new Float64Array(k);
    for (let i = 0; i < k; i++) weights[i] = checkNumber(op, `options.weights[${i}]`, w[i]);
  }
  let lengths: Float64Array | undefined;
  if (options.lengths !== undefined) {
    const l = options.lengths;
    if (!(Array.isArray(l) || (ArrayBuffer.isView(l) && !(l instanceof DataView) && !(l instanceof BigInt64Array) && !(l instanceof BigUint64Array))) || (l as ArrayLike<number>).length !== n)
      fail('GK_SHAPE', `${op}: options.lengths must have one length per completion (${n}), got ${describe(l)}`);
    lengths = new Float64Array(n);
    for (let i = 0; i < n; i++) lengths[i] = checkNumber(op, `options.lengths[${i}]`, (l as ArrayLike<number>)[i], { min: 0 });
  } else if (estimator === 'opo') fail('GK_INVALID_ARG', `${op}: estimator 'opo' needs options.lengths (the completion lengths, its baseline's weights)`);
  // §9.7: batch statistics from outside, and this batch's partials.
  const batchWide = scale === 'batch' || rpp || aggregation === 'normalizeThenSum';
  let batchStats: Float64Array | undefined;
  if (options.batchStats !== undefined) {
    if (!batchWide) fail('GK_INVALID_ARG', `${op}: options.batchStats replaces a batch statistic: it needs scale 'batch', a REINFORCE++ estimator or normalizeThenSum`);
    const b = options.batchStats;
    checkObject(op, 'options.batchStats', b);
    if (b === null || typeof b !== 'object') fail('GK_INVALID_ARG', `${op}: options.batchStats must be { count, mean, m2 }, got ${describe(b)}`);
    checkKnownKeys(op, 'options.batchStats key', b, ['count', 'mean', 'm2']);
    batchStats = Float64Array.from([
      checkNumber(op, 'options.batchStats.count', b.count, { min: 0 }),
      checkNumber(op, 'options.batchStats.mean', b.mean),
      checkNumber(op, 'options.batchStats.m2', b.m2, { min: 0 }),
    ]);
  }
  const wantPartials = options.returnPartials === undefined ? false : checkBoolean(op, 'options.returnPartials', options.returnPartials);
  if (wantPartials && !batchWide) fail('GK_INVALID_ARG', `${op}: options.returnPartials returns a batch statistic: it needs scale 'batch', a REINFORCE++ estimator or normalizeThenSum`);
  const partials = wantPartials ? new Float64Array(3) : undefined;
  let gpgCounts: Float64Array | undefined;
  if (options.gpgCounts !== undefined) {
    if (estimator !== 'gpg') fail('GK_INVALID_ARG', `${op}: options.gpgCounts are the counts of estimator 'gpg' (got estimator '${estimator}')`);
    const c = options.gpgCounts;
    if (c === null || typeof c !== 'object' || Array.isArray(c)) fail('GK_INVALID_ARG', `${op}: options.gpgCounts must be { valid, nonzero }, got ${describe(c)}`);
    checkKnownKeys(op, 'options.gpgCounts key', c, ['valid', 'nonzero']);
    const valid = checkNumber(op, 'options.gpgCounts.valid', c.valid, { min: 0 });
    const nonzero = checkNumber(op, 'options.gpgCounts.nonzero', c.nonzero, { min: 0 });
    if (nonzero > valid) fail('GK_INVALID_ARG', `${op}: options.gpgCounts.nonzero (${nonzero}) cannot exceed valid (${valid})`);
    gpgCounts = Float64Array.of(valid, nonzero);
  }
  const gpgCountsOut = estimator === 'gpg' ? new Float64Array(2) : undefined;
  const advantages = new Float32Array(n);
  const combined = new Float64Array(n);
  const groupMean = new Float64Array(n / g);
  const groupStd = new Float64Array(n / g);
  // Rewards come from JS: the op runs on the default device and its results come back to the host.
  const at = Placement.of(op, []);
  const native = addon();
  const zeroVarianceGroups = await call(op, () =>
    native.groupAdvantages({
      device: at.device, rewards: packed, k, n, groupSize: g, ...(weights ? { weights } : {}), ...(lengths ? { lengths } : {}),
      scale: ScaleCode[scale], estimator: EstimatorCode[estimator], aggregation: MultiObjectiveCode[aggregation], eps,
      advantages, combined, groupMean, groupStd, ...(batchStats ? { batchStats } : {}), ...(partials ? { partials } : {}),
      ...(gpgCounts ? { gpgCounts } : {}), ...(gpgCountsOut ? { gpgCountsOut } : {}),
    }),
  );
  const res: GroupAdvantagesResult = { advantages: Tensor.from(advantages), rewards: combined, groupMean, groupStd, zeroVarianceGroups };
  if (partials) res.partials = { count: partials[0]!, mean: partials[1]!, m2: partials[2]! };
  if (gpgCountsOut) res.gpgCounts = { valid: gpgCountsOut[0]!, nonzero: gpgCountsOut[1]! };
  return res;
}
