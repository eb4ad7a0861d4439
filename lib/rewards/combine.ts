import { describe, fail } from '../errors';

/** A reward value; NaN, null and undefined mean "not applicable". */
export type RewardValue = number | null | undefined;

export interface RewardContext<S = unknown> {
  prompt: string;
  completion: string;
  completionLength: number;
  /** Whatever the reward needs beyond the text (the expected answer, a start cell, …). */
  sample?: S;
}

export type RewardFunction<S = unknown> = (ctx: RewardContext<S>) => RewardValue | Promise<RewardValue>;

export interface NamedReward<S = unknown> {
  name: string;
  fn: RewardFunction<S>;
  /** Default 1. */
  weight?: number;
}

function check<S>(rewards: NamedReward<S>[], op: string): void {
  if (!Array.isArray(rewards) || rewards.length === 0) fail('GK_INVALID_ARG', `${op}: rewards must be a non-empty array of { name, fn, weight? }`);
  const seen = new Set<string>();
  for (const r of rewards) {
    if (!r || typeof r.name !== 'string' || typeof r.fn !== 'function')
      fail('GK_INVALID_ARG', `${op}: every reward needs a string name and a function fn, got ${describe(r)}`);
    if (seen.has(r.name)) fail('GK_INVALID_ARG', `${op}: duplicate reward name '${r.name}'`);
    seen.add(r.name);
    if (r.weight !== undefined && (typeof r.weight !== 'number' || !Number.isFinite(r.weight)))
      fail('GK_INVALID_ARG', `${op}: weight of reward '${r.name}' must be a finite number, got ${describe(r.weight)}`);
  }
}

async function value<S>(r: NamedReward<S>, ctx: RewardContext<S>): Promise<number> {
  const v = await r.fn(ctx);
  if (v === null || v === undefined) return NaN;
  if (typeof v !== 'number') fail('GK_INVALID_ARG', `reward '${r.name}' must return a number, NaN, null or undefined, got ${describe(v)}`);
  if (v === Infinity || v === -Infinity) fail('GK_NONFINITE', `reward '${r.name}' returned ${v}; use NaN for "not applicable"`);
  return v;
}

/** A reward that is the weighted sum of several (NaN parts skipped; NaN when all are NaN). */
export function combineRewards<S>(rewards: NamedReward<S>[]): (ctx: RewardContext<S>) => Promise<{ total: number; parts: Record<string, number> }> {
  check(rewards, 'combineRewards');
  return async (ctx) => {
    const parts: Record<string, number> = {};
    let total = 0;
    let any = false;
    for (const r of rewards) {
      const v = await value(r, ctx);
      parts[r.name] = v;
      if (!Number.isNaN(v)) {
        total += (r.weight ?? 1) * v;
        any = true;
      }
    }
    return { total: any ? total : NaN, parts };
  };
}

/** Evaluates every reward on every context: one Float64Array per reward function, for groupAdvantages. */
export async function evaluateRewards<S>(rewards: NamedReward<S>[], ctxs: RewardContext<S>[]): Promise<{ perFunction: Float64Array[]; weights: Float64Array; names: string[] }> {
  check(rewards, 'evaluateRewards');
  const perFunction = await Promise.all(rewards.map(async (r) => Float64Array.from(await Promise.all(ctxs.map((c) => value(r, c))))));
  return { perFunction, weights: Float64Array.from(rewards, (r) => r.weight ?? 1), names: rewards.map((r) => r.name) };
}
