// Float64 reference implementation of the grpo-kernels math (the test oracle).

export * from './random.js';
export * from './dtype.js';
export * from './logprobs.js';
export * from './advantages.js';
export * from './loss.js';
export * from './fused.js';
export * from './fd.js';
