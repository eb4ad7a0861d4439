import type { Tensor } from '../tensor';

/** Sequences handed to a policy: each is its prompt's tokens followed by its completion's. */
export interface RolloutBatch {
  readonly sequences: readonly Int32Array[];
  /** Length of each sequence's prompt; the completion is the rest. */
  readonly promptLengths: readonly number[];
}

/**
 * The model being trained, independent of any framework: it produces logits on the trainer's
 * device and runs its own backward and optimizer step from ∂loss/∂logits.
 */
export interface Policy {
  readonly vocabSize: number;
  /**
   * Logits that predict every completion token of every sequence, packed: the rows of sequence
   * 0's completion, then sequence 1's, …; shape [Σ completion lengths, vocabSize].
   * The policy keeps what its backward needs.
   */
  forward(batch: RolloutBatch): Tensor | Promise<Tensor>;
  /** Accumulates parameter gradients from ∂loss/∂logits of the last forward, multiplied by `scale`. */
  backward(gradLogits: Tensor, scale: number): void | Promise<void>;
  /** Applies the optimizer step and zeroes the gradients. */
  step(): void | Promise<void>;
  /**
   * Logits of the next token after each context (prompt + completion so far): [contexts, vocabSize].
   * Used by the trainer's built-in sampler.
   */
  nextTokenLogits(contexts: readonly Int32Array[]): Tensor | Promise<Tensor>;
}

/** A frozen policy used as the KL reference: only forward is needed. */
export type ReferencePolicy = Pick<Policy, 'forward'>;
