// Format rewards for completions of the form <think>…</think><answer>…</answer>.

const TAGS = ['<think>', '</think>', '<answer>', '</answer>'] as const;

function count(s: string, sub: string): number {
  let n = 0;
  for (let i = s.indexOf(sub); i >= 0; i = s.indexOf(sub, i + sub.length)) n++;
  return n;
}

const STRICT = /^\s*<think>([\s\S]*?)<\/think>\s*<answer>([\s\S]*?)<\/answer>\s*$/;
const SOFT = /<think>[\s\S]*?<\/think>[\s\S]*?<answer>[\s\S]*?<\/answer>/;

/**
 * 1 when the completion has the reasoning format, else 0.
 * strict (default): the whole completion is one think block then one answer block, separated
 * only by whitespace, each tag exactly once. Non-strict: a think block followed anywhere later
 * by an answer block.
 */
export function formatReward(completion: string, options: { strict?: boolean } = {}): number {
  if (options.strict === false) return SOFT.test(completion) ? 1 : 0;
  if (!STRICT.test(completion)) return 0;
  return TAGS.every((t) => count(completion, t) === 1) ? 1 : 0;
}

/**
 * The soft tag-count form: 0.25 for each of <think>, </think>, <answer>, </answer> present
 * exactly once, minus 0.001 per character after the last </answer>; never below 0.
 */
export function tagCountReward(completion: string): number {
  let r = 0;
  for (const t of TAGS) if (count(completion, t) === 1) r += 0.25;
  const end = completion.lastIndexOf('</answer>');
  if (end >= 0) r -= 0.001 * completion.slice(end + '</answer>'.length).length;
  return Math.max(0, r);
}

/** The text of the last <answer>…</answer> block, trimmed; undefined when there is none. */
export function extractAnswer(completion: string): string | undefined {
  const all = [...completion.matchAll(/<answer>([\s\S]*?)<\/answer>/g)];
  return all.length ? all[all.length - 1]![1]!.trim() : undefined;
}
