import { describe, fail } from '../errors';

/** What a reward function returns; NaN, null and undefined mean "not applicable". */
export type RewardValue = number | null | undefined;

/** Everything a reward function sees about one completion. */
export interface RewardContext<S = unknown> {
  prompt: string;
  completion: string;
  /** Length of the completion in tokens. */
  completionLength: number;
  /** Whatever the reward needs beyond the text (the expected answer, a start cell, …). */
  sample?: S;
}

/** A reward function: sync or async, returning a number or "not applicable". */
export type RewardFunction<S = unknown> = (ctx: RewardContext<S>) => RewardValue | Promise<RewardValue>;

export interface NamedReward<S = unknown> {
  /** Unique among the rewards combined; used as the key of `parts` and in error messages. */
  name: string;
  fn: RewardFunction<S>;
  /** A finite number; default 1. */
  weight?: number;
}

function checkRewards<S>(op: string, rewards: NamedReward<S>[]): void {
  if (!Array.isArray(rewards) || rewards.length === 0)
    fail('GK_INVALID_ARG', `${op}: rewards must be a non-empty array of { name, fn, weight? }, got ${describe(rewards)}`);
  const seen = new Set<string>();
  rewards.forEach((r, i) => {
    if (!r || typeof r.name !== 'string' || typeof r.fn !== 'function')
      fail('GK_INVALID_ARG', `${op}: rewards[${i}] needs a string name and a function fn, got ${describe(r)}`, i);
    if (seen.has(r.name)) fail('GK_INVALID_ARG', `${op}: duplicate reward name '${r.name}'`, i);
    seen.add(r.name);
    if (r.weight !== undefined && (typeof r.weight !== 'number' || !Number.isFinite(r.weight)))
      fail('GK_INVALID_ARG', `${op}: weight of reward '${r.name}' must be a finite number, got ${describe(r.weight)}`, i);
  });
}

/** Runs one reward on one context and checks what it returned; `at` names the context for evaluateRewards. */
async function evaluate<S>(r: NamedReward<S>, ctx: RewardContext<S>, at?: number): Promise<number> {
  const v = await r.fn(ctx);
  const where = at === undefined ? '' : ` for context ${at}`;
  if (v === null || v === undefined) return NaN;
  if (typeof v !== 'number')
    fail('GK_INVALID_ARG', `reward '${r.name}' must return a number, NaN, null or undefined, got ${describe(v)}${where}`, at);
  if (v === Infinity || v === -Infinity)
    fail('GK_NONFINITE', `reward '${r.name}' returned ${v}${where}; return NaN, null or undefined for "not applicable"`, at);
  return v;
}

/**
 * Combines several rewards into one: the returned function evaluates every reward on a context
 * (concurrently; sync and async functions alike), maps null/undefined to NaN, and returns
 * `parts` (each reward's value by name) and `total` = Σ weight · value over the parts that are
 * not NaN (weight default 1); total is NaN when every part is NaN.
 *
 * Throws GK_INVALID_ARG for an empty list, duplicate names or a non-finite weight; the returned
 * function rejects with GK_INVALID_ARG when a reward returns a non-number and GK_NONFINITE when
 * one returns ±Infinity, naming the reward.
 */
export function combineRewards<S>(rewards: NamedReward<S>[]): (ctx: RewardContext<S>) => Promise<{ total: number; parts: Record<string, number> }> {
  checkRewards('combineRewards', rewards);
  const list = rewards.slice();
  return async (ctx) => {
    const values = await Promise.all(list.map((r) => evaluate(r, ctx)));
    const parts: Record<string, number> = {};
    let total = 0;
    let applicable = false;
    list.forEach((r, i) => {
      const v = values[i]!;
      parts[r.name] = v;
      if (!Number.isNaN(v)) {
        total += (r.weight ?? 1) * v;
        applicable = true;
      }
    });
    return { total: applicable ? total : NaN, parts };
  };
}

/**
 * Evaluates every reward on every context (each reward over all contexts with Promise.all).
 * `perFunction[f][i]` is reward f on context i (NaN for not applicable), `weights[f]` its weight
 * and `names[f]` its name: ready for `groupAdvantages(perFunction, { weights })`.
 * Rejects like combineRewards, with the index of the offending context.
 */
export async function evaluateRewards<S>(
  rewards: NamedReward<S>[],
  ctxs: RewardContext<S>[],
): Promise<{ perFunction: Float64Array[]; weights: Float64Array; names: string[] }> {
  checkRewards('evaluateRewards', rewards);
  if (!Array.isArray(ctxs)) fail('GK_INVALID_ARG', `evaluateRewards: ctxs must be an array of reward contexts, got ${describe(ctxs)}`);
  const perFunction = await Promise.all(
    rewards.map(async (r) => Float64Array.from(await Promise.all(ctxs.map((ctx, i) => evaluate(r, ctx, i))))),
  );
  return { perFunction, weights: Float64Array.from(rewards, (r) => r.weight ?? 1), names: rewards.map((r) => r.name) };
}
