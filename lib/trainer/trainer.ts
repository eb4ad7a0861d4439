import * as fs from 'node:fs';
import { describe, fail, type AbortSignalLike } from '../errors';
import { groupAdvantages, type AdvantageEstimator, type AdvantageScale } from '../ops/advantages';
import { tokenLogProbs } from '../ops/logprobs';
import { checkVespoCorrection, grpoLoss, resolveLossOptions, type GrpoLossFromLogitsOptions, type GrpoLossOptions, type ResolvedLossOptions } from '../ops/loss';
import { evaluateRewards, type NamedReward, type RewardContext } from '../rewards';
import { checkBoolean, checkNumber, checkObject } from '../validate';
import type { Policy, ReferencePolicy, RolloutBatch } from './policy';
import { Rng } from '../random';
import { sampleCompletions, type SampledCompletion } from './sampler';

/** A prompt: its tokens, optional text (for rewards) and any data the rewards need (`sample`). */
export interface Prompt<S = unknown> {
  tokens: Int32Array | readonly number[];
  text?: string;
  sample?: S;
}

/** One completion kept for the optimisation passes of a step. */
export interface Rollout<S = unknown> {
  promptIndex: number;
  prompt: Prompt<S>;
  tokens: Int32Array;
  oldLogp: Float32Array;
  refLogp?: Float32Array;
  /** The user sampler's log-probs when the rollout correction uses them (spec §9.1). */
  samplerLogp?: Float32Array;
  truncated: boolean;
  reward: number;
  advantage: number;
  /** Per-token advantages from `tokenAdvantages` (spec §9.3), one per completion token. */
  tokenAdvantages?: Float32Array;
}

export interface GRPOTrainerOptions<S = unknown> extends GrpoLossOptions {
  policy: Policy;
  /**
   * The KL reference (needed when beta > 0): a frozen policy (forward only), or a function giving
   * each rollout's reference log-probs (one Float32Array per rollout, one entry per token).
   */
  reference?: ReferencePolicy | ((rollouts: readonly Rollout<S>[]) => Promise<Float32Array[]> | Float32Array[]);
  /**
   * Your own sampler: G completions for each prompt, prompt-major (prompt 0's G, then prompt 1's …).
   * Without `logp`, the old log-probs are computed from the policy's logits. Default: the
   * built-in sampler (sampleTokens on policy.nextTokenLogits).
   */
  sampler?: (prompts: readonly Prompt<S>[], numGenerations: number) => Promise<CustomCompletion[]> | CustomCompletion[];
  /** Reward functions (sync or async, weighted; NaN/undefined = not applicable). */
  rewards: NamedReward<S>[];
  /** G: completions per prompt. */
  numGenerations: number;
  /** μ: optimisation passes over each step's rollouts (off-policy reuse). Default 1. */
  numIterations?: number;
  /** Sequences per minibatch. Default: all of the step's rollouts. */
  miniBatchSize?: number;
  /** Minibatches accumulated into one optimizer step. Default 1. */
  gradientAccumulationSteps?: number;
  maxCompletionLength: number;
  /** Sampling temperature (also the temperature of the loss's log-probs). Default 1. */
  temperature?: number;
  /** Sampling filters (see sampleTokens); the old log-probs stay those of the full distribution. */
  topK?: number;
  topP?: number;
  minP?: number;
  eosTokenId?: number;
  /** Ends a completion early (after the token just appended). */
  stop?: (prompt: Prompt<S>, completion: Int32Array) => boolean;
  /** Turns completion tokens into the text the rewards see. Default: the ids joined by spaces. */
  decode?: (tokens: Int32Array) => string;
  /**
   * Advantage options (groupSize is numGenerations). Default scale: the estimator's own ('group'
   * for 'grpo'/'grpoPassK', 'none' for 'rloo'/'opo'/'gpg', 'batch' for REINFORCE++), 'none' with
   * lossType 'dr_grpo'. 'opo' and REINFORCE++ get the completion lengths from the rollouts.
   */
  scaleRewards?: AdvantageScale;
  advantageEstimator?: AdvantageEstimator;
  advantageEps?: number;
  /**
   * Spec §9.3: per-token advantages. Called once per rollout after its sequence advantage is
   * known (e.g. to spread it by a process reward or a per-token credit); returns one finite value
   * per completion token. The loss then takes one advantage per token. Default: none (every
   * token gets its completion's advantage).
   */
  tokenAdvantages?: (rollout: Rollout<S>) => ArrayLike<number>;
  /**
   * Spec §9.8 [TRL use_adaptive_entropy]: adapt entropyCoef toward `entropyTarget` after each
   * optimizer step (c ← min(c + δ, max) while the step's mean token entropy is ≤ the target, else
   * max(c − δ, min)); the entropy term applies during an optimizer step only if the previous one's
   * mean entropy was ≤ the target (never during the first). Starts at `entropyCoef`. Default false.
   */
  useAdaptiveEntropy?: boolean;
  /** TRL entropy_target. Default 0.2. */
  entropyTarget?: number;
  /** TRL entropy_coef_min / entropy_coef_max. Defaults 0 and 1. */
  entropyCoefMin?: number;
  entropyCoefMax?: number;
  /** TRL entropy_coef_delta. Default 0.005. */
  entropyCoefDelta?: number;
  /** Seed of the sampler (Philox) and of the minibatch shuffles. Default 0. */
  seed?: number;
  /** Called with each step's metrics. */
  onStep?: (m: StepMetrics) => void;
  /** Appends each step's metrics as one JSON line. */
  metricsFile?: string;
}

/** A completion from a user-provided sampler. */
export interface CustomCompletion {
  tokens: Int32Array | readonly number[];
  /**
   * Log-prob of each token under the sampling policy (the old log-probs). With `rolloutCorrection`
   * or `rolloutRejection` set on the trainer they are the engine's log-probs instead (samplerLogp,
   * spec §9.1), and the old log-probs are computed from the policy's logits.
   */
  logp?: Float32Array | readonly number[];
  /** The completion hit the length limit without finishing. Default false. */
  truncated?: boolean;
}

export interface StepMetrics {
  step: number;
  loss: number;
  rewardMean: number;
  rewardStd: number;
  rewards: Record<string, { mean: number; std: number }>;
  advantageMean: number;
  advantageStd: number;
  advantageMin: number;
  advantageMax: number;
  zeroVarianceGroups: number;
  klMean?: number;
  ratioMean: number;
  clipFraction: number;
  clipFractionLow: number;
  clipFractionHigh: number;
  entropyMean: number;
  /** Spec §9.8, with useAdaptiveEntropy: the coefficient after the step. */
  entropyCoef?: number;
  /** Spec §9.1, when the trainer corrects a user sampler: token-weighted means of the loss's metrics. */
  samplerKl?: number;
  isWeightMean?: number;
  rejectedFraction?: number;
  /** Spec §9.2, with offPolicyMaskThreshold. */
  offPolicyMaskedFraction?: number;
  completionLengthMean: number;
  completionLengthMin: number;
  completionLengthMax: number;
  truncatedFraction: number;
  tokens: number;
  optimizerSteps: number;
  tokensPerSecond: number;
  seconds: number;
}

const TRAINER_KEYS = [
  'policy', 'reference', 'sampler', 'rewards', 'numGenerations', 'numIterations', 'miniBatchSize', 'gradientAccumulationSteps',
  'maxCompletionLength', 'temperature', 'topK', 'topP', 'minP', 'eosTokenId', 'stop', 'decode', 'scaleRewards', 'advantageEstimator', 'advantageEps',
  'seed', 'onStep', 'metricsFile', 'useAdaptiveEntropy', 'entropyTarget', 'entropyCoefMin', 'entropyCoefMax', 'entropyCoefDelta',
  'tokenAdvantages',
];

function meanStd(a: ArrayLike<number>): { mean: number; std: number } {
  let n = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) if (!Number.isNaN(a[i]!)) (s += a[i]!), n++;
  const mean = n ? s / n : NaN;
  let ss = 0;
  for (let i = 0; i < a.length; i++) if (!Number.isNaN(a[i]!)) ss += (a[i]! - mean) ** 2;
  return { mean, std: n > 1 ? Math.sqrt(ss / (n - 1)) : 0 };
}

function packBatch<S>(rs: Rollout<S>[]): RolloutBatch {
  return {
    sequences: rs.map((r) => {
      const p = Int32Array.from(r.prompt.tokens);
      const seq = new Int32Array(p.length + r.tokens.length);
      seq.set(p);
      seq.set(r.tokens, p.length);
      return seq;
    }),
    promptLengths: rs.map((r) => r.prompt.tokens.length),
  };
}

/**
 * GRPO, model-agnostic: each step samples G completions per prompt (recording their log-probs),
 * scores them, turns rewards into group advantages, then runs `numIterations` passes over
 * shuffled minibatches of the stored rollouts with the fused grpoLoss from the policy's logits.
 */
export class GRPOTrainer<S = unknown> {
  readonly options: Readonly<GRPOTrainerOptions<S>>;
  /** The loss options after presets and defaults. */
  readonly loss: ResolvedLossOptions;
  /** The rollouts of the last step (for inspection and tests). */
  lastRollouts: Rollout<S>[] = [];
  private readonly lossOptions: GrpoLossOptions;
  /** Spec §9.1: the user sampler's log-probs are samplerLogp (rolloutCorrection / rolloutRejection given). */
  private readonly correctsSampler: boolean;
  /** Spec §9.8 adaptive entropy coefficient: its bounds, and the state carried across steps. */
  private readonly adaptive: { target: number; min: number; max: number; delta: number } | null;
  private entropyCoef: number;
  private lastEntropy = Infinity;
  private readonly rng: Rng;
  private stepIndex = 0;
  private rowsSampled = 0;
  /** Loss calls so far: clipCov's seed moves with it, so each call draws its own tokens. */
  private lossCalls = 0;

  constructor(options: GRPOTrainerOptions<S>) {
    const op = 'GRPOTrainer';
    checkObject(op, 'options', options);
    if (!options) fail('GK_INVALID_ARG', `${op}: options are required`);
    const lossOptions: GrpoLossOptions = {};
    for (const [k, v] of Object.entries(options)) if (!TRAINER_KEYS.includes(k)) (lossOptions as Record<string, unknown>)[k] = v;
    this.loss = resolveLossOptions(lossOptions, op);
    this.correctsSampler = !!this.loss.rolloutCorrection || (this.loss.rolloutRejection ?? []).length > 0;
    if (this.correctsSampler && !options.sampler)
      fail('GK_INVALID_ARG', `${op}: rolloutCorrection / rolloutRejection correct a user sampler's log-probs (options.sampler); the built-in sampler's equal the policy's bit for bit (spec §9.9)`);
    checkVespoCorrection(op, this.loss, this.correctsSampler, 'rolloutRejection');
    // geoMean's policy part is a mean over the call's sequences whatever the aggregation; with a
    // global token normalizer the trainer does not rescale minibatches, so it would be summed.
    if (this.loss.surrogate === 'geoMean' && this.loss.aggregation === 'tokenMean')
      fail('GK_INVALID_ARG', `${op}: geoMean's policy term is a mean over sequences; with gradient accumulation it needs a per-sequence aggregation ('seqMeanTokenMean', its default), not 'tokenMean'`);
    // The resolved options as grpoLoss options (unset ones left out), with the padded length.
    this.lossOptions = { ...lossOptions };
    for (const [k, v] of Object.entries(this.loss)) if (v !== null) (this.lossOptions as Record<string, unknown>)[k] = v;
    delete this.lossOptions.lossType;
    delete this.lossOptions.epsilon;
    if (this.loss.maxCompletionLength === null) this.lossOptions.maxCompletionLength = options.maxCompletionLength;
    const adaptive = options.useAdaptiveEntropy === undefined ? false : checkBoolean(op, 'options.useAdaptiveEntropy', options.useAdaptiveEntropy);
    const num = (k: 'entropyTarget' | 'entropyCoefMin' | 'entropyCoefMax' | 'entropyCoefDelta', d: number, rule: Parameters<typeof checkNumber>[3]) =>
      options[k] === undefined ? d : checkNumber(op, `options.${k}`, options[k], rule);
    const a = { target: num('entropyTarget', 0.2, {}), min: num('entropyCoefMin', 0, {}), max: num('entropyCoefMax', 1, {}), delta: num('entropyCoefDelta', 0.005, { min: 0 }) };
    if (a.min > a.max) fail('GK_INVALID_ARG', `${op}: options.entropyCoefMin (${a.min}) must be <= entropyCoefMax (${a.max})`);
    this.adaptive = adaptive ? a : null;
    this.entropyCoef = this.loss.entropyCoef;
    const p = options.policy as Partial<Policy> | undefined;
    if (!p || typeof p.forward !== 'function' || typeof p.backward !== 'function' || typeof p.step !== 'function' || typeof p.nextTokenLogits !== 'function')
      fail('GK_INVALID_ARG', `${op}: options.policy must implement forward, backward, step and nextTokenLogits`);
    checkNumber(op, 'options.policy.vocabSize', p.vocabSize, { integer: true, min: 1 });
    if (!Array.isArray(options.rewards) || options.rewards.length === 0)
      fail('GK_INVALID_ARG', `${op}: options.rewards must be a non-empty array of { name, fn, weight? }`);
    checkNumber(op, 'options.numGenerations', options.numGenerations, { integer: true, min: 1 });
    if (options.numIterations !== undefined) checkNumber(op, 'options.numIterations', options.numIterations, { integer: true, min: 1 });
    if (options.miniBatchSize !== undefined) checkNumber(op, 'options.miniBatchSize', options.miniBatchSize, { integer: true, min: 1 });
    if (options.gradientAccumulationSteps !== undefined)
      checkNumber(op, 'options.gradientAccumulationSteps', options.gradientAccumulationSteps, { integer: true, min: 1 });
    checkNumber(op, 'options.maxCompletionLength', options.maxCompletionLength, { integer: true, min: 1 });
    if (options.temperature !== undefined) checkNumber(op, 'options.temperature', options.temperature, { gt: 0, float32: true, reciprocal: true });
    if (this.loss.beta > 0 && !options.reference)
      fail('GK_INVALID_ARG', `${op}: options.reference (a frozen reference policy) is required when beta > 0`);
    if (options.maskTruncatedCompletions !== undefined) checkBoolean(op, 'options.maskTruncatedCompletions', options.maskTruncatedCompletions);
    if (options.tokenAdvantages !== undefined && typeof options.tokenAdvantages !== 'function')
      fail('GK_INVALID_ARG', `${op}: options.tokenAdvantages must be a function (rollout) => one advantage per completion token, got ${describe(options.tokenAdvantages)}`);
    this.options = { ...options };
    this.rng = new Rng(options.seed ?? 0);
  }

  /** One GRPO step on a batch of prompts. */
  async step(prompts: Prompt<S>[]): Promise<StepMetrics> {
    const t0 = performance.now();
    const o = this.options;
    const G = o.numGenerations;
    const T = o.temperature ?? 1;
    if (!Array.isArray(prompts) || prompts.length === 0) fail('GK_INVALID_ARG', 'GRPOTrainer.step: prompts must be a non-empty array');

    // 1. Sample G completions per prompt, keeping each token's log-prob at sampling time.
    const contexts: Int32Array[] = [];
    const index: number[] = [];
    prompts.forEach((p, i) => {
      for (let g = 0; g < G; g++) {
        contexts.push(Int32Array.from(p.tokens));
        index.push(i);
      }
    });
    const sampled: SampledCompletion[] = o.sampler ? await this.customSamples(prompts, contexts, index) : await sampleCompletions(o.policy, contexts, index, {
      maxCompletionLength: o.maxCompletionLength,
      temperature: T,
      ...(o.topK !== undefined ? { topK: o.topK } : {}),
      ...(o.topP !== undefined ? { topP: o.topP } : {}),
      ...(o.minP !== undefined ? { minP: o.minP } : {}),
      seed: o.seed ?? 0,
      firstRow: this.rowsSampled,
      ...(o.eosTokenId !== undefined ? { eosTokenId: o.eosTokenId } : {}),
      ...(o.stop ? { stop: (pi: number, c: Int32Array) => o.stop!(prompts[pi]!, c) } : {}),
    });
    this.rowsSampled += contexts.length;

    // 2. Rewards → group advantages.
    const decode = o.decode ?? ((t: Int32Array) => Array.from(t).join(' '));
    const ctxs: RewardContext<S>[] = sampled.map((c, k) => {
      const p = prompts[index[k]!]!;
      return { prompt: p.text ?? Array.from(p.tokens).join(' '), completion: decode(c.tokens), completionLength: c.tokens.length, ...(p.sample !== undefined ? { sample: p.sample } : {}) };
    });
    const ev = await evaluateRewards(o.rewards, ctxs);
    // The estimator's own default scale unless scaleRewards (or dr_grpo's 'none') says otherwise;
    // the completion lengths are the weights of 'opo' and of REINFORCE++'s token-level whitening.
    const estimator = o.advantageEstimator ?? 'grpo';
    const rpp = estimator === 'reinforcePlusPlus' || estimator === 'reinforcePlusPlusBaseline';
    const scale = o.scaleRewards ?? (o.lossType === 'dr_grpo' && !rpp ? 'none' : undefined);
    const adv = await groupAdvantages(ev.perFunction, {
      groupSize: G,
      weights: ev.weights,
      ...(scale !== undefined ? { scale } : {}),
      estimator,
      ...(estimator === 'opo' || rpp ? { lengths: sampled.map((c) => c.tokens.length) } : {}),
      ...(o.advantageEps !== undefined ? { eps: o.advantageEps } : {}),
    });
    const A = adv.advantages.data as Float32Array;
    const rollouts: Rollout<S>[] = sampled.map((c, k) => ({
      promptIndex: index[k]!, prompt: prompts[index[k]!]!, tokens: c.tokens, oldLogp: c.logp, truncated: c.truncated,
      reward: adv.rewards[k]!, advantage: A[k]!,
    }));
    if (o.tokenAdvantages) {
      for (const [k, r] of rollouts.entries()) {
        const v: unknown = o.tokenAdvantages(r);
        const name = `GRPOTrainer.step: options.tokenAdvantages (rollout ${k})`;
        if (v === null || typeof v !== 'object' || typeof (v as ArrayLike<number>).length !== 'number')
          fail('GK_INVALID_ARG', `${name} must return an array of numbers, got ${describe(v)}`);
        const a = v as ArrayLike<number>;
        if (a.length !== r.tokens.length)
          fail('GK_SHAPE', `${name} returned ${a.length} values for ${r.tokens.length} completion tokens`);
        const f = new Float32Array(a.length);
        for (let i = 0; i < a.length; i++) {
          const x = a[i];
          if (typeof x !== 'number' || !Number.isFinite(x)) fail('GK_INVALID_ARG', `${name}[${i}] must be a finite number, got ${describe(x)}`);
          f[i] = x;
        }
        r.tokenAdvantages = f;
      }
    }
    // Spec §9.1: a user sampler's log-probs are the engine's (samplerLogp) when the correction is
    // asked for; the old log-probs then come from the policy being trained (TRL's arrangement).
    if (o.sampler && this.correctsSampler) {
      const old = await this.logpOf(o.policy, rollouts, T);
      rollouts.forEach((r, k) => {
        r.samplerLogp = r.oldLogp;
        r.oldLogp = old[k]!;
      });
    }

    // 3. Reference log-probs, once per step.
    if (o.reference && this.loss.beta > 0) {
      const ref = o.reference;
      const per = typeof ref === 'function' ? await ref(rollouts) : await this.logpOf(ref, rollouts, T);
      if (!Array.isArray(per) || per.length !== rollouts.length)
        fail('GK_SHAPE', `GRPOTrainer: the reference must give one log-prob array per rollout (${rollouts.length}), got ${describe(per)}`);
      rollouts.forEach((r, i) => {
        const lp = per[i];
        if (!(lp instanceof Float32Array) || lp.length !== r.tokens.length)
          fail('GK_SHAPE', `GRPOTrainer: reference log-probs of rollout ${i} must be a Float32Array of ${r.tokens.length}, got ${describe(lp)}`);
        r.refLogp = lp;
      });
    }

    // 4. μ passes over shuffled minibatches; accumulate gradients over minibatches.
    const mb = Math.min(o.miniBatchSize ?? rollouts.length, rollouts.length);
    const accum = o.gradientAccumulationSteps ?? 1;
    const valid = (r: Rollout<S>) => (this.loss.maskTruncatedCompletions && r.truncated ? 0 : r.tokens.length);
    let lossSum = 0;
    let lossCount = 0;
    let optimizerSteps = 0;
    const acc = { kl: 0, ratio: 0, clip: 0, clipLow: 0, clipHigh: 0, entropy: 0, tokens: 0, samplerKl: 0, isWeight: 0, rejected: 0, offPolicy: 0 };
    for (let it = 0; it < (o.numIterations ?? 1); it++) {
      const order = this.rng.shuffle(rollouts.map((_, i) => i));
      const minibatches: Rollout<S>[][] = [];
      for (let b = 0; b < order.length; b += mb) minibatches.push(order.slice(b, b + mb).map((i) => rollouts[i]!));
      for (let g0 = 0; g0 < minibatches.length; g0 += accum) {
            const group = minibatches.slice(g0, g0 + accum);
        // Global normalisers of this optimizer step: tokens for tokenMean (local per minibatch
        // for lossType 'bnpo', as spec §4 says), sequences otherwise.
        const globalTokens = this.loss.aggregation === 'tokenMean' && o.lossType !== 'bnpo';
        const groupTokens = group.reduce((s, m) => s + m.reduce((t, r) => t + valid(r), 0), 0);
        const groupSeqs = group.reduce((s, m) => s + m.length, 0);
        let stepEntropy = 0; // §9.8: this optimizer step's token-weighted entropy
        let stepTokens = 0;
        for (const m of group) {
          const batch = packBatch(m);
          const logits = await o.policy.forward(batch);
          const offsets = [0];
          for (const r of m) offsets.push(offsets[offsets.length - 1]! + r.tokens.length);
          const cat = (f: (r: Rollout<S>) => Float32Array) => {
            const out = new Float32Array(offsets[m.length]!);
            m.forEach((r, i) => out.set(f(r), offsets[i]!));
            return out;
          };
          const lossOptions: GrpoLossFromLogitsOptions = {
            ...this.lossOptions,
            ...(this.adaptive ? { entropyCoef: this.lastEntropy <= this.adaptive.target ? this.entropyCoef : 0 } : {}),
            ...(o.tokenAdvantages ? { advantagesPerToken: true } : {}),
            ...(this.loss.surrogate === 'clipCov' ? { covSeed: (this.loss.covSeed + this.lossCalls) % Number.MAX_SAFE_INTEGER } : {}),
            temperature: T,
            inPlace: true,
            ...(globalTokens ? { normalizer: this.loss.normalizer ?? Math.max(1, groupTokens) } : {}),
          };
          const targets = new Int32Array(offsets[m.length]!);
          m.forEach((r, i) => targets.set(r.tokens, offsets[i]!));
          const res = await grpoLoss({
            logits,
            targets,
            ...(o.tokenAdvantages ? { advantages: cat((r) => r.tokenAdvantages!) } : { advantages: m.map((r) => r.advantage) }),
            seqOffsets: offsets,
            // Until the first optimizer step of this step the policy is the one that sampled:
            // the ratio is then exactly 1 (old = sg[new], as TRL does). A user sampler may be
            // another model, so its log-probs are always used.
            ...(optimizerSteps === 0 && !o.sampler ? {} : { oldLogp: cat((r) => r.oldLogp) }),
            ...(this.loss.beta > 0 ? { refLogp: cat((r) => r.refLogp!) } : {}),
            ...(m[0]!.samplerLogp ? { samplerLogp: cat((r) => r.samplerLogp!) } : {}),
            truncated: m.map((r) => r.truncated),
          }, lossOptions);
          this.lossCalls++;
          // dapo/cispo-style tokenMean already divides by the step's global token count; bnpo
          // (local tokenMean) averages its minibatch means; the per-sequence
          // aggregations divide by this minibatch's S, so rescale to the step's S.
          const scale = globalTokens ? 1 : this.loss.aggregation === 'tokenMean' ? 1 / group.length : m.length / groupSeqs;
          await o.policy.backward(res.gradLogits, scale);
          lossSum += res.loss * scale;
          const w = res.metrics.tokens;
          acc.tokens += w;
          acc.ratio += res.metrics.ratioMean * w;
          acc.clip += res.metrics.clipFraction * w;
          acc.clipLow += res.metrics.clipFractionLow * w;
          acc.clipHigh += res.metrics.clipFractionHigh * w;
          acc.entropy += (res.metrics.entropyMean ?? 0) * w;
          acc.kl += (res.metrics.klMean ?? 0) * w;
          acc.samplerKl += (res.metrics.samplerKl ?? 0) * w;
          acc.isWeight += (res.metrics.isWeightMean ?? 0) * w;
          acc.rejected += (res.metrics.rejectedFraction ?? 0) * w;
          acc.offPolicy += (res.metrics.offPolicyMaskedFraction ?? 0) * w;
          stepEntropy += (res.metrics.entropyMean ?? 0) * w;
          stepTokens += w;
        }
        lossCount++;
        await o.policy.step();
        optimizerSteps++;
        if (this.adaptive) {
          // §9.8: this optimizer step's mean token entropy moves the coefficient toward the target.
          const h = stepEntropy / Math.max(1, stepTokens);
          const ad = this.adaptive;
          this.entropyCoef = h <= ad.target ? Math.min(this.entropyCoef + ad.delta, ad.max) : Math.max(this.entropyCoef - ad.delta, ad.min);
          this.lastEntropy = h;
        }
      }
    }

    const lengths = rollouts.map((r) => r.tokens.length);
    const totalTokens = lengths.reduce((a, b) => a + b, 0);
    const seconds = (performance.now() - t0) / 1e3;
    const perFn: Record<string, { mean: number; std: number }> = {};
    ev.names.forEach((name, k) => (perFn[name] = meanStd(ev.perFunction[k]!)));
    const rs = meanStd(adv.rewards);
    const as = meanStd(A);
    const d = Math.max(1, acc.tokens);
    const m: StepMetrics = {
      step: this.stepIndex++,
      loss: lossSum / Math.max(1, lossCount),
      rewardMean: rs.mean,
      rewardStd: rs.std,
      rewards: perFn,
      advantageMean: as.mean,
      advantageStd: as.std,
      advantageMin: A.reduce((a, b) => Math.min(a, b), Infinity),
      advantageMax: A.reduce((a, b) => Math.max(a, b), -Infinity),
      zeroVarianceGroups: adv.zeroVarianceGroups,
      ratioMean: acc.ratio / d,
      clipFraction: acc.clip / d,
      clipFractionLow: acc.clipLow / d,
      clipFractionHigh: acc.clipHigh / d,
      entropyMean: acc.entropy / d,
      completionLengthMean: totalTokens / lengths.length,
      completionLengthMin: lengths.reduce((a, b) => Math.min(a, b), Infinity),
      completionLengthMax: lengths.reduce((a, b) => Math.max(a, b), -Infinity),
      truncatedFraction: rollouts.filter((r) => r.truncated).length / rollouts.length,
      tokens: totalTokens,
      optimizerSteps,
      tokensPerSecond: totalTokens / seconds,
      seconds,
    };
    if (this.loss.beta > 0) m.klMean = acc.kl / d;
    if (o.sampler && this.correctsSampler) {
      m.samplerKl = acc.samplerKl / d;
      m.isWeightMean = acc.isWeight / d;
      m.rejectedFraction = acc.rejected / d;
    }
    if (this.loss.offPolicyMaskThreshold !== null) m.offPolicyMaskedFraction = acc.offPolicy / d;
    if (this.adaptive) m.entropyCoef = this.entropyCoef;
    this.lastRollouts = rollouts;
    o.onStep?.(m);
    if (o.metricsFile) fs.appendFileSync(o.metricsFile, JSON.stringify(m) + '\n');
    return m;
  }

  /** Per-rollout log-probs of the rollouts' tokens under a policy's logits. */
  private async logpOf(policy: ReferencePolicy, rollouts: readonly Rollout<S>[], temperature: number): Promise<Float32Array[]> {
    const logits = await policy.forward(packBatch([...rollouts]));
    const targets = Int32Array.from(rollouts.flatMap((r) => Array.from(r.tokens)));
    const lp = (await tokenLogProbs(logits, targets, { temperature })).logp.data as Float32Array;
    const out: Float32Array[] = [];
    let off = 0;
    for (const r of rollouts) {
      out.push(lp.slice(off, off + r.tokens.length));
      off += r.tokens.length;
    }
    return out;
  }

  /** Completions from the user's sampler, with old log-probs from the policy where it gives none. */
  private async customSamples(prompts: Prompt<S>[], contexts: Int32Array[], index: number[]): Promise<SampledCompletion[]> {
    const G = this.options.numGenerations;
    const got = await this.options.sampler!(prompts, G);
    if (!Array.isArray(got) || got.length !== contexts.length)
      fail('GK_SHAPE', `GRPOTrainer: options.sampler must return ${contexts.length} completions (${G} per prompt), got ${describe(got)}`);
    const out: SampledCompletion[] = got.map((c) => ({
      tokens: Int32Array.from(c.tokens),
      logp: c.logp ? Float32Array.from(c.logp) : new Float32Array(0),
      truncated: !!c.truncated,
    }));
    out.forEach((c, k) => {
      if (c.logp.length !== 0 && c.logp.length !== c.tokens.length)
        fail('GK_SHAPE', `GRPOTrainer: completion ${k} has ${c.tokens.length} tokens but ${c.logp.length} log-probs`);
    });
    const missing = out.map((c, k) => (c.logp.length === 0 && c.tokens.length > 0 ? k : -1)).filter((k) => k >= 0);
    if (missing.length) {
      const stub = missing.map((k) => ({ prompt: prompts[index[k]!]!, tokens: out[k]!.tokens }) as Rollout<S>);
      const lps = await this.logpOf(this.options.policy, stub, this.options.temperature ?? 1);
      missing.forEach((k, i) => (out[k]!.logp = lps[i]!));
    }
    return out;
  }

  /**
   * Runs `steps` steps, asking `prompts(step)` for each batch. Stops cleanly between steps when
   * `signal` aborts (returns the metrics so far).
   */
  async train(prompts: (step: number) => Prompt<S>[], o: { steps: number; signal?: AbortSignalLike }): Promise<StepMetrics[]> {
    checkNumber('GRPOTrainer.train', 'steps', o?.steps, { integer: true, min: 0 });
    const out: StepMetrics[] = [];
    for (let s = 0; s < o.steps && !o.signal?.aborted; s++) out.push(await this.step(prompts(s)));
    return out;
  }
}
