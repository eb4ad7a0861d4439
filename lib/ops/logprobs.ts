import type { FloatDType } from '../dtype';
import { Placement } from '../device';
import { addon, call, DTypeCode } from '../native';
import { Tensor } from '../tensor';
import {
  checkBoolean, checkKnownKeys, checkLogits, checkNumber, checkObject, checkRowShape, checkTargets, floatArg, targetsType, type FloatInput, type TargetsInput,
} from '../validate';

export interface TokenLogProbsOptions {
  /** Softmax temperature T > 0: the distribution is softmax(logits / T). Default 1. */
  temperature?: number;
  /** Target id marking a row that contributes nothing (log-prob, entropy and gradient 0). Default -100. */
  ignoreIndex?: number;
  /** Also compute the entropy of each row's distribution. Default false. */
  entropy?: boolean;
  /** Fail with GK_NONFINITE (naming the first bad row) instead of returning NaN for a row with a NaN/inf logit or no finite logit. Default false. */
  checkFinite?: boolean;
  /** Also return Σ_j p² per row (spec §9.6; verl's sum_pi_squared), from the same pass. Default false. */
  sumP2?: boolean;
}

export interface TokenLogProbsResult {
  /** log p(target) per row, float32, shape = logits.shape without V. */
  logp: Tensor<'float32'>;
  /** Entropy per row (float32) when requested. */
  entropy?: Tensor<'float32'>;
  /** log Σ exp(logits / T) per row (float32); pass it to the backward to skip recomputing it. */
  lse: Tensor<'float32'>;
  /** Σ_j p² per row (float32) when requested; 0 for ignored rows. */
  sumP2?: Tensor<'float32'>;
}

export interface LogitsRowOptions {
  temperature: number;
  ignoreIndex: number;
}

const FWD_KEYS = ['temperature', 'ignoreIndex', 'entropy', 'checkFinite', 'sumP2'] as const;

export function readRowOptions(op: string, o: { temperature?: number; ignoreIndex?: number }): LogitsRowOptions {
  return {
    temperature: o.temperature === undefined ? 1 : checkNumber(op, 'options.temperature', o.temperature, { gt: 0, float32: true, reciprocal: true }),
    ignoreIndex: o.ignoreIndex === undefined ? -100 : checkNumber(op, 'options.ignoreIndex', o.ignoreIndex, { integer: true, min: -Number.MAX_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER }),
  };
}

/**
 * Fused log-softmax + gather (spec §1): the log-probability of each row's target token under
 * softmax(logits / T), optionally with the row's entropy. One pass over the logits, no [N, V]
 * intermediate.
 */
export async function tokenLogProbs(logits: Tensor, targets: TargetsInput, options: TokenLogProbsOptions = {}): Promise<TokenLogProbsResult> {
  const op = 'tokenLogProbs';
  checkObject(op, 'options', options);
  checkKnownKeys(op, 'option', options, FWD_KEYS);
  const { n, v, dtype, data } = checkLogits(op, logits);
  const row = readRowOptions(op, options);
  const wantEntropy = options.entropy === undefined ? false : checkBoolean(op, 'options.entropy', options.entropy);
  const checkFinite = options.checkFinite === undefined ? false : checkBoolean(op, 'options.checkFinite', options.checkFinite);
  const wantP2 = options.sumP2 === undefined ? false : checkBoolean(op, 'options.sumP2', options.sumP2);
  const rowShape = logits.shape.slice(0, -1);
  checkRowShape(op, 'targets', targets, rowShape);
  const t = checkTargets(op, targets, n, v, row.ignoreIndex);
  const at = Placement.of(op, [logits, targets]);
  const logp = at.f32(n);
  const lse = at.f32(n);
  const entropy = wantEntropy ? at.f32(n) : undefined;
  const sumP2 = wantP2 ? at.f32(n) : undefined;
  const native = addon();
  await at.run(call(op, () =>
    native.tokenLogProbs({
      device: at.device, logits: data, dtype: DTypeCode[dtype], n, v, targets: t, targetsType: targetsType(targets), ...row, checkFinite,
      logp, lse, ...(entropy ? { entropy } : {}), ...(sumP2 ? { sumP2 } : {}),
    }),
  ));
  const res: TokenLogProbsResult = {
    logp: at.tensor(logp, 'float32', rowShape),
    lse: at.tensor(lse, 'float32', rowShape),
  };
  if (entropy) res.entropy = at.tensor(entropy, 'float32', rowShape);
  if (sumP2) res.sumP2 = at.tensor(sumP2, 'float32', rowShape);
  return res;
}

export interface TokenLogProbsGrads {
  /** ∂L/∂logp per row. */
  gradLogp?: FloatInput;
  /** ∂L/∂H per row (entropy). */
  gradEntropy?: FloatInput;
}

export interface TokenLogProbsBackwardOptions {
  temperature?: number;
  ignoreIndex?: number;
  /** lse from the forward (skips one pass over the logits). */
  lse?: FloatInput;
  /** entropy from the forward (needed with lse when gradEntropy is given). */
  entropy?: FloatInput;
  /** Write the gradient over the logits tensor's storage and return that tensor. Default false. */
  inPlace?: boolean;
}

const BWD_KEYS = ['temperature', 'ignoreIndex', 'lse', 'entropy', 'inPlace'] as const;

/**
 * Backward of tokenLogProbs (spec §1): ∂L/∂logits given ∂L/∂logp and ∂L/∂H, in the logits'
 * dtype (computed in float32, rounded once).
 */
export async function tokenLogProbsBackward(
  logits: Tensor,
  targets: TargetsInput,
  grads: TokenLogProbsGrads,
  options: TokenLogProbsBackwardOptions = {},
): Promise<Tensor<FloatDType>> {
  const op = 'tokenLogProbsBackward';
  checkObject(op, 'grads', grads);
  checkObject(op, 'options', options);
  checkKnownKeys(op, 'gradient', grads, ['gradLogp', 'gradEntropy']);
  checkKnownKeys(op, 'option', options, BWD_KEYS);
  const { n, v, dtype, data } = checkLogits(op, logits);
  const row = readRowOptions(op, options);
  const rows = logits.shape.slice(0, -1);
  checkRowShape(op, 'targets', targets, rows);
  checkRowShape(op, 'grads.gradLogp', grads?.gradLogp, rows);
  checkRowShape(op, 'grads.gradEntropy', grads?.gradEntropy, rows);
  checkRowShape(op, 'options.lse', options.lse, rows);
  checkRowShape(op, 'options.entropy', options.entropy, rows);
  const t = checkTargets(op, targets, n, v, row.ignoreIndex);
  const inPlace = options.inPlace === undefined ? false : checkBoolean(op, 'options.inPlace', options.inPlace);
  const at = Placement.of(op, [logits, targets, grads?.gradLogp, grads?.gradEntropy, options.lse, options.entropy]);
  const grad = inPlace ? undefined : at.array(dtype, n * v);
  const args: Parameters<ReturnType<typeof addon>['tokenLogProbsBackward']>[0] = {
    device: at.device, logits: data, dtype: DTypeCode[dtype], n, v, targets: t, targetsType: targetsType(targets), ...row,
    ...(grad ? { grad: grad as Float32Array | Uint16Array } : { gradInPlace: true }),
  };
  if (grads?.gradLogp !== undefined) args.gradLogp = floatArg(op, 'grads.gradLogp', grads.gradLogp, n);
  if (grads?.gradEntropy !== undefined) args.gradEntropy = floatArg(op, 'grads.gradEntropy', grads.gradEntropy, n);
  if (options.lse !== undefined) args.lse = floatArg(op, 'options.lse', options.lse, n);
  if (options.entropy !== undefined) args.entropy = floatArg(op, 'options.entropy', options.entropy, n);
  const native = addon();
  await at.run(call(op, () => native.tokenLogProbsBackward(args)));
  return grad ? at.tensor(grad, dtype, logits.shape) : (logits as Tensor<FloatDType>);
}
