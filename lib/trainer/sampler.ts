import { describe, fail } from '../errors';
import { sampleTokens } from '../ops/sampling';
import { Tensor } from '../tensor';
import { checkNumber, checkObject } from '../validate';
import { Rng } from '../random';
import type { Policy } from './policy';

/** @deprecated name kept for callers written against it; use Rng. */
export { Rng as SplitRng };

export interface SampledCompletion {
  tokens: Int32Array;
  /** Log-prob of each sampled token under the temperature-scaled policy at sampling time. */
  logp: Float32Array;
  /** True when the completion hit maxCompletionLength without finishing. */
  truncated: boolean;
}

export interface SampleOptions {
  maxCompletionLength: number;
  temperature: number;
  topK?: number;
  topP?: number;
  minP?: number;
  /** Generator seed; with `firstRow`, completion i of this batch draws from Philox(seed; firstRow + i, position). */
  seed: number;
  firstRow: number;
  eosTokenId?: number;
  /** Ends a completion early (after the token just appended), e.g. when an episode is over. */
  stop?: (promptIndex: number, completion: Int32Array) => boolean;
}

/**
 * Autoregressive sampling from the policy's next-token logits, all unfinished contexts in one
 * batch per position, with the sampleTokens kernel (counter-based, so reproducible for a seed).
 * Each token's log-prob under softmax(logits / T) is kept as its old log-prob.
 */
export async function sampleCompletions(
  policy: Policy,
  prompts: readonly Int32Array[],
  promptIndex: readonly number[],
  o: SampleOptions,
): Promise<SampledCompletion[]> {
  const op = 'sampleCompletions';
  const p = policy as Partial<Policy> | null | undefined;
  if (!p || typeof p !== 'object' || typeof p.nextTokenLogits !== 'function')
    fail('GK_INVALID_ARG', `${op}: policy must implement nextTokenLogits, got ${describe(policy)}`);
  checkNumber(op, 'policy.vocabSize', p.vocabSize, { integer: true, min: 1 });
  if (!Array.isArray(prompts) || prompts.some((x) => !(x instanceof Int32Array)))
    fail('GK_INVALID_ARG', `${op}: prompts must be an array of Int32Array token ids, got ${describe(prompts)}`);
  if (!Array.isArray(promptIndex) || promptIndex.length !== prompts.length || promptIndex.some((x) => typeof x !== 'number'))
    fail('GK_INVALID_ARG', `${op}: promptIndex must be one number per prompt (${prompts.length}), got ${describe(promptIndex)}`);
  checkObject(op, 'options', o);
  if (!o) fail('GK_INVALID_ARG', `${op}: options are required`);
  checkNumber(op, 'options.maxCompletionLength', o.maxCompletionLength, { integer: true, min: 0 });
  checkNumber(op, 'options.seed', o.seed, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER });
  checkNumber(op, 'options.firstRow', o.firstRow, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER });
  if (o.stop !== undefined && typeof o.stop !== 'function') fail('GK_INVALID_ARG', `${op}: options.stop must be a function, got ${describe(o.stop)}`);
  const n = prompts.length;
  const toks: number[][] = prompts.map(() => []);
  const lps: number[][] = prompts.map(() => []);
  const done = new Array<boolean>(n).fill(false);
  const truncated = new Array<boolean>(n).fill(false);
  for (let pos = 0; pos < o.maxCompletionLength; pos++) {
    const active: number[] = [];
    for (let i = 0; i < n; i++) if (!done[i]) active.push(i);
    if (active.length === 0) break;
    const contexts = active.map((i) => {
      const c = new Int32Array(prompts[i]!.length + toks[i]!.length);
      c.set(prompts[i]!);
      c.set(toks[i]!, prompts[i]!.length);
      return c;
    });
    const logits = await policy.nextTokenLogits(contexts);
    if (!(logits instanceof Tensor) || logits.shape.length !== 2 || logits.shape[0] !== contexts.length || logits.shape[1] !== policy.vocabSize)
      fail('GK_SHAPE', `policy.nextTokenLogits must return a Tensor [${contexts.length}, ${policy.vocabSize}], got ${logits instanceof Tensor ? `[${logits.shape.join(', ')}]` : describe(logits)}`);
    const s = await sampleTokens(logits, {
      temperature: o.temperature,
      ...(o.topK !== undefined ? { topK: o.topK } : {}),
      ...(o.topP !== undefined ? { topP: o.topP } : {}),
      ...(o.minP !== undefined ? { minP: o.minP } : {}),
      seed: o.seed,
      step: pos,
      rowIds: active.map((i) => o.firstRow + i),
    });
    const chosen = s.tokens.data as Int32Array;
    const lp = s.logp.data as Float32Array;
    for (let a = 0; a < active.length; a++) {
      const i = active[a]!;
      toks[i]!.push(chosen[a]!);
      lps[i]!.push(lp[a]!);
      if (chosen[a] === o.eosTokenId || o.stop?.(promptIndex[i]!, Int32Array.from(toks[i]!))) done[i] = true;
      else if (toks[i]!.length >= o.maxCompletionLength) truncated[i] = true;
    }
  }
  return toks.map((t, i) => ({ tokens: Int32Array.from(t), logp: Float32Array.from(lps[i]!), truncated: truncated[i]! }));
}
