// Format rewards for reasoning completions of the form <think>…</think><answer>…</answer>.
import { describe, fail } from '../errors';

/** The completion text of a reward: a string (anything else is a caller's mistake, GK_INVALID_ARG). */
export function checkText(op: string, completion: unknown): string {
  if (typeof completion !== 'string') fail('GK_INVALID_ARG', `${op}: completion must be a string, got ${describe(completion)}`);
  return completion;
}

/** The four reserved tags, in the order they must appear. */
const TAGS = ['<think>', '</think>', '<answer>', '</answer>'] as const;
const ANSWER_CLOSE = '</answer>';

/** Non-overlapping occurrences of `sub` in `s`. */
function occurrences(s: string, sub: string): number {
  let n = 0;
  for (let i = s.indexOf(sub); i >= 0; i = s.indexOf(sub, i + sub.length)) n++;
  return n;
}

// Whole completion: optional whitespace, the think block, optional whitespace, the answer block,
// optional whitespace. That no reserved tag appears twice is checked separately by counting.
const STRICT = /^\s*<think>[\s\S]*?<\/think>\s*<answer>[\s\S]*?<\/answer>\s*$/;
// A think block, then (anything), then an answer block, anywhere in the text.
const SOFT = /<think>[\s\S]*?<\/think>[\s\S]*?<answer>[\s\S]*?<\/answer>/;

/**
 * 1 when the completion has the reasoning format, else 0.
 *
 * - strict (the default): the whole completion is one `<think>…</think>` block followed by one
 *   `<answer>…</answer>` block, with only whitespace (spaces, newlines) before, between and after
 *   them, and each of the four reserved tags exactly once, so no reserved tag is nested or
 *   repeated inside a block. Other text inside the blocks (including `<` or other markup) is free.
 * - `strict: false`: some `<think>…</think>` block is followed, anywhere later, by some
 *   `<answer>…</answer>` block; text around them and repeated tags are allowed.
 */
export function formatReward(completion: string, options: { strict?: boolean } = {}): number {
  checkText('formatReward', completion);
  if (options !== undefined && (options === null || typeof options !== 'object'))
    fail('GK_INVALID_ARG', `formatReward: options must be an object { strict? }, got ${describe(options)}`);
  if (options.strict !== undefined && typeof options.strict !== 'boolean')
    fail('GK_INVALID_ARG', `formatReward: options.strict must be a boolean, got ${describe(options.strict)}`);
  if (options.strict === false) return SOFT.test(completion) ? 1 : 0;
  if (!STRICT.test(completion)) return 0;
  return TAGS.every((tag) => occurrences(completion, tag) === 1) ? 1 : 0;
}

/**
 * The soft, partial-credit form of the format reward:
 *
 *     tagCountReward = max(0, 0.25 · k − 0.001 · c)
 *
 * where k (0..4) is how many of `<think>`, `</think>`, `<answer>`, `</answer>` occur exactly once
 * in the completion, and c is the number of characters (UTF-16 code units) after the last
 * `</answer>` (0 when there is none). So a well-formed completion with nothing trailing scores 1,
 * and trailing text costs 0.001 per character.
 */
export function tagCountReward(completion: string): number {
  checkText('tagCountReward', completion);
  let k = 0;
  for (const tag of TAGS) if (occurrences(completion, tag) === 1) k++;
  const end = completion.lastIndexOf(ANSWER_CLOSE);
  const trailing = end < 0 ? 0 : completion.length - (end + ANSWER_CLOSE.length);
  // In thousandths, so that e.g. 1 − 5·0.001 comes out as the double nearest 0.995.
  return Math.max(0, (250 * k - trailing) / 1000);
}

// An answer block whose content holds no further <answer> tag: for '<answer>a<answer>b</answer>'
// the block is '<answer>b</answer>'.
const ANSWER_BLOCK = /<answer>((?:(?!<answer>)[\s\S])*?)<\/answer>/g;

/** The text inside the last `<answer>…</answer>` block, trimmed; undefined when there is none. */
export function extractAnswer(completion: string): string | undefined {
  checkText('extractAnswer', completion);
  let last: string | undefined;
  for (const m of completion.matchAll(ANSWER_BLOCK)) last = m[1];
  return last?.trim();
}
