import { tokenLogProbs } from '../ops/logprobs';
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
  eosTokenId?: number;
  /** Ends a completion early (after the token just appended), e.g. when an episode is over. */
  stop?: (promptIndex: number, completion: Int32Array) => boolean;
}

/**
 * Autoregressive sampling from the policy's next-token logits, all contexts in one batch per
 * position. Tokens are drawn from softmax(logits / T); their log-probs come from the
 * tokenLogProbs kernel on the same logits.
 */
export async function sampleCompletions(
  policy: Policy,
  prompts: readonly Int32Array[],
  promptIndex: readonly number[],
  o: SampleOptions,
  rng: Rng,
): Promise<SampledCompletion[]> {
  const n = prompts.length;
  const toks: number[][] = prompts.map(() => []);
  const lps: number[][] = prompts.map(() => []);
  const done = new Array<boolean>(n).fill(false);
  const truncated = new Array<boolean>(n).fill(false);
  for (let step = 0; step < o.maxCompletionLength; step++) {
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
    const v = policy.vocabSize;
    const z = logits.toFloat32();
    const chosen = new Int32Array(active.length);
    for (let a = 0; a < active.length; a++) {
      // Inverse-CDF draw from softmax(z / T) in float64.
      let m = -Infinity;
      for (let j = 0; j < v; j++) m = Math.max(m, z[a * v + j]! / o.temperature);
      let s = 0;
      for (let j = 0; j < v; j++) s += Math.exp(z[a * v + j]! / o.temperature - m);
      let u = rng.next() * s;
      let pick = v - 1;
      for (let j = 0; j < v; j++) {
        u -= Math.exp(z[a * v + j]! / o.temperature - m);
        if (u <= 0) {
          pick = j;
          break;
        }
      }
      chosen[a] = pick;
    }
    const { logp } = await tokenLogProbs(logits, chosen, { temperature: o.temperature });
    const lp = logp.data as Float32Array;
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
