export type { Policy, ReferencePolicy, RolloutBatch } from './policy';
export { sampleCompletions, SplitRng, type SampledCompletion, type SampleOptions } from './sampler';
export { Rng } from '../random';
export { GRPOTrainer, type CustomCompletion, type GRPOTrainerOptions, type Prompt, type Rollout, type StepMetrics } from './trainer';
