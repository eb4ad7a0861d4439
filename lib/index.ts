// grpo-kernels: fused GRPO kernels for Node.js.
export { GrpoKernelsError, type ErrorCode, type AbortSignalLike } from './errors';
export {
  DTYPES, toBFloat16, fromBFloat16, toFloat16, fromFloat16, encodeFloats, decodeFloats,
  type DType, type FloatDType, type HostArray, type ArrayOf, type DTypeArrays, type DTypeOf,
} from './dtype';
export { Tensor, tensor, type TensorOptions, type DeviceKind } from './tensor';
export type { TargetsInput, FloatInput } from './validate';
export {
  tokenLogProbs, tokenLogProbsBackward,
  type TokenLogProbsOptions, type TokenLogProbsResult, type TokenLogProbsGrads, type TokenLogProbsBackwardOptions,
} from './ops/logprobs';
export {
  groupAdvantages, combineBatchStats, type BatchStats, type GpgCounts,
  type GroupAdvantagesOptions, type GroupAdvantagesResult, type AdvantageScale, type AdvantageEstimator, type MultiObjectiveAggregation, type RewardValues,
} from './ops/advantages';
export {
  grpoLoss, grpoLossFromLogp, grpoLossFromLogits, resolveLossOptions, entropyQuantile, LOSS_PRESETS, LOSS_TYPES,
  type GrpoLossOptions, type ResolvedLossOptions, type GrpoLossInputs, type GrpoLossResult, type GrpoLossMetrics,
  type GrpoSequenceInputs, type GrpoLossFromLogitsInputs, type GrpoLossFromLogitsOptions, type GrpoLossFromLogitsResult,
  type LossType, type Surrogate, type ImportanceSamplingLevel, type KlEstimator, type Aggregation,
} from './ops/loss';
export {
  backendInfo, resolveDevice, Device, defaultDevice, setDefaultDevice,
  type BackendInfo, type DeviceRequest, type DeviceOpenOptions, type DeviceMemory, type WrapOptions,
} from './device';
export { packageVersion as version } from './native';
export {
  formatReward, tagCountReward, extractAnswer, normalizeNumber, accuracyReward, overlongPenalty, combineRewards, evaluateRewards,
  type OverlongOptions, type NamedReward, type RewardContext, type RewardFunction, type RewardValue,
} from './rewards';
export {
  GRPOTrainer, sampleCompletions, SplitRng, Rng,
  type GRPOTrainerOptions, type CustomCompletion, type Prompt, type Rollout, type StepMetrics, type Policy, type ReferencePolicy, type RolloutBatch,
  type SampledCompletion, type SampleOptions,
} from './trainer';
export { bradleyTerryLoss, type BradleyTerryInputs, type BradleyTerryOptions, type BradleyTerryResult } from './ops/preference';
export { sampleTokens, type SampleOptions as SampleTokensOptions, type SampleResult } from './ops/sampling';
export { distillationLoss, type DistillationInputs, type DistillationOptions, type DistillationResult, type Divergence } from './ops/distill';
