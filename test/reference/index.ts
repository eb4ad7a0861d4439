// Float64 reference implementation of the grpo-kernels math (the test oracle).

export * from './random';
export * from './dtype';
export * from './logprobs';
export * from './advantages';
export * from './loss';
export * from './fused';
export * from './fd';
export * from './preference';
export * from './sampling';
export * from './distill';
