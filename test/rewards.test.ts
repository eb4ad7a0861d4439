import t, { type Test } from 'tap';
import { GrpoKernelsError } from '../lib/errors';
import {
  accuracyReward, combineRewards, evaluateRewards, extractAnswer, formatReward, normalizeNumber, overlongPenalty, tagCountReward,
  type NamedReward, type RewardContext,
} from '../lib/rewards';


/** Asserts that `f` throws (or rejects) a GrpoKernelsError with `code` and a message matching `msg`. */
async function throwsCode(t: Test, f: () => unknown, code: string, msg: RegExp): Promise<void> {
  let caught: unknown;
  try {
    await f();
  } catch (e) {
    caught = e;
  }
  t.ok(caught instanceof GrpoKernelsError, `throws a GrpoKernelsError (${code})`);
  t.equal((caught as GrpoKernelsError | undefined)?.code, code, `error code ${code}`);
  t.match((caught as Error | undefined)?.message ?? '', msg, `message matches ${msg}`);
}

const GOOD = '<think>3 plus 4 is 7</think><answer>7</answer>';

t.test('formatReward, strict (the default)', async (t) => {
  t.equal(formatReward(GOOD), 1, 'well formed');
  t.equal(formatReward(GOOD, { strict: true }), 1, 'strict: true is the default');
  t.equal(formatReward(GOOD, {}), 1, 'empty options');
  t.equal(formatReward('<think></think><answer></answer>'), 1, 'empty blocks');
  t.equal(formatReward('<think>\nline 1\nline 2\n</think>\n<answer>\n7\n</answer>'), 1, 'newlines inside and between blocks');
  t.equal(formatReward(`  \n${GOOD.replace('</think>', '</think>\n\n  ')}\n\t `), 1, 'whitespace around and between the blocks');
  t.equal(formatReward('<think>is 3 < 4? yes, <b>so</b></think><answer>1</answer>'), 1, 'other markup inside a block is allowed');
  // Missing tags.
  t.equal(formatReward('<think>x</think>'), 0, 'no answer block');
  t.equal(formatReward('<answer>7</answer>'), 0, 'no think block');
  t.equal(formatReward('<think>x<answer>7</answer>'), 0, 'no </think>');
  t.equal(formatReward('<think>x</think><answer>7'), 0, 'no </answer>');
  t.equal(formatReward('x</think><answer>7</answer>'), 0, 'no <think>');
  t.equal(formatReward(''), 0, 'empty completion');
  t.equal(formatReward('7'), 0, 'bare answer');
  // Extra text outside the blocks.
  t.equal(formatReward(`${GOOD} and more`), 0, 'text after the answer block');
  t.equal(formatReward(`so: ${GOOD}`), 0, 'text before the think block');
  t.equal(formatReward('<think>x</think> so <answer>7</answer>'), 0, 'text between the blocks');
  // Duplicated, nested or misordered tags.
  t.equal(formatReward('<think>a</think><answer>1</answer><answer>2</answer>'), 0, 'two answer blocks');
  t.equal(formatReward('<think>a</think><think>b</think><answer>1</answer>'), 0, 'two think blocks');
  t.equal(formatReward('<think>a<think>b</think><answer>1</answer>'), 0, 'nested <think>');
  t.equal(formatReward('<think>a<think>b</think></think><answer>1</answer>'), 0, 'nested think block');
  t.equal(formatReward('<think>a</think><answer>1<answer>2</answer></answer>'), 0, 'nested answer block');
  t.equal(formatReward('<think>a <answer>1</answer></think><answer>1</answer>'), 0, 'an answer block inside think');
  t.equal(formatReward('<think>a</think><answer>1</think></answer>'), 0, 'a stray </think> inside answer');
  t.equal(formatReward('<think>a</think><answer>1</answer></answer>'), 0, 'a stray </answer> at the end');
  t.equal(formatReward('<answer>1</answer><think>a</think>'), 0, 'wrong order');
  t.equal(formatReward('<THINK>a</THINK><ANSWER>1</ANSWER>'), 0, 'tags are case sensitive');
  t.equal(formatReward('< think>a</think><answer>1</answer>'), 0, 'malformed tag');
});

t.test('formatReward, non-strict', async (t) => {
  const soft = { strict: false };
  t.equal(formatReward(GOOD, soft), 1, 'well formed');
  t.equal(formatReward(`so: ${GOOD} and more`, soft), 1, 'text before and after');
  t.equal(formatReward('<think>a</think> then some words <answer>1</answer>', soft), 1, 'text between the blocks');
  t.equal(formatReward('<think>\na\n</think>\n\n<answer>\n1\n</answer>', soft), 1, 'newlines (dotall)');
  t.equal(formatReward('<think>a</think><answer>1</answer><answer>2</answer>', soft), 1, 'duplicated answer block');
  t.equal(formatReward('<answer>0</answer><think>a</think> x <answer>1</answer>', soft), 1, 'an answer block later than a think block');
  t.equal(formatReward('<answer>1</answer><think>a</think>', soft), 0, 'answer only before think');
  t.equal(formatReward('<think>a</think>', soft), 0, 'no answer block');
  t.equal(formatReward('<answer>1</answer>', soft), 0, 'no think block');
  t.equal(formatReward('<think>a<answer>1</answer>', soft), 0, 'no </think>');
  t.equal(formatReward('', soft), 0, 'empty completion');
});

t.test('tagCountReward', async (t) => {
  t.equal(tagCountReward(GOOD), 1, 'all four tags once, nothing after');
  t.equal(tagCountReward(`${GOOD}\n  \n`), 0.996, 'trailing whitespace counts: 4 characters');
  t.equal(tagCountReward(`${GOOD}12345`), 0.995, '5 characters after </answer>');
  t.equal(tagCountReward(`prefix ${GOOD}`), 1, 'text before is free');
  t.equal(tagCountReward('<think>a</think>'), 0.5, 'two tags');
  t.equal(tagCountReward('<think>a'), 0.25, 'one tag');
  t.equal(tagCountReward('<answer>7</answer>'), 0.5, 'answer tags only');
  t.equal(tagCountReward('<answer>7</answer>xyz'), 0.497, 'answer tags only, 3 trailing characters');
  t.equal(tagCountReward('no tags'), 0, 'no tags');
  t.equal(tagCountReward(''), 0, 'empty');
  t.equal(tagCountReward('<think><think>'), 0, 'a tag twice earns nothing');
  t.equal(tagCountReward('<think>a</think><answer>1</answer><answer>2</answer>'), 0.5, 'duplicated answer tags earn nothing');
  t.equal(tagCountReward('<think>a</think><answer>1</answer><answer>2</answer>abcd'), 0.496, 'penalty counted after the last </answer>');
  t.equal(tagCountReward(`${GOOD}${'x'.repeat(1000)}`), 0, 'floored at 0');
  t.equal(tagCountReward(`${GOOD}${'x'.repeat(999)}`), 0.001, 'one thousandth left');
  t.equal(tagCountReward(`<think>a</think>${'x'.repeat(50)}`), 0.5, 'no penalty without </answer>');
});

t.test('extractAnswer', async (t) => {
  t.equal(extractAnswer(GOOD), '7', 'the answer');
  t.equal(extractAnswer('<answer>  \n 42 \t\n</answer>'), '42', 'trimmed');
  t.equal(extractAnswer('<answer> 1 </answer> then <answer> 42 </answer> done'), '42', 'the last block');
  t.equal(extractAnswer('<answer>first\nline</answer>'), 'first\nline', 'multi-line content');
  t.equal(extractAnswer('<answer></answer>'), '', 'empty block');
  t.equal(extractAnswer('<answer>a<answer>b</answer>'), 'b', 'an unclosed <answer> before the last block');
  t.equal(extractAnswer('<answer>1</answer> junk </answer>'), '1', 'a stray </answer> after the block');
  t.equal(extractAnswer('no answer'), undefined, 'no block');
  t.equal(extractAnswer('<answer>7'), undefined, 'unclosed block');
  t.equal(extractAnswer('7</answer>'), undefined, 'no opening tag');
  t.equal(extractAnswer(''), undefined, 'empty');
});

t.test('normalizeNumber', async (t) => {
  const cases: [string, string | undefined][] = [
    [' 007 ', '7'], ['7', '7'], ['0', '0'], ['000', '0'], ['-0', '0'], ['+0', '0'], ['-0.000', '0'], ['+12', '12'],
    ['-12', '-12'], ['1.50', '1.5'], ['3.', '3'], ['3.000', '3'], ['0.0', '0'], ['-00.250', '-0.25'], ['.5', '0.5'], ['-.5', '-0.5'],
    ['100', '100'], ['10.01', '10.01'], ['- 5', '-5'], ['1 000', '1000'], ['\n\t42\n', '42'], ['12345678901234567890', '12345678901234567890'],
    ['1,000', undefined], ['1,5', undefined], ['', undefined], ['   ', undefined], ['--1', undefined], ['+-1', undefined], ['-', undefined],
    ['+', undefined], ['.', undefined], ['-.', undefined], ['1.2.3', undefined], ['abc', undefined], ['1e5', undefined], ['12a', undefined],
    ['0x10', undefined], ['1-', undefined], ['Infinity', undefined], ['NaN', undefined], ['١٢', undefined],
  ];
  for (const [s, want] of cases) t.equal(normalizeNumber(s), want, `${JSON.stringify(s)} → ${String(want)}`);
});

t.test('accuracyReward', async (t) => {
  t.equal(accuracyReward('<think>3+4</think><answer>7</answer>', 7), 1, 'correct, numeric expected');
  t.equal(accuracyReward('<think></think><answer>012</answer>', 12), 1, 'leading zeros');
  t.equal(accuracyReward('<answer>+12.0</answer>', '12'), 1, 'sign and trailing zeros, string expected');
  t.equal(accuracyReward('<answer> -0 </answer>', 0), 1, '-0 equals 0');
  t.equal(accuracyReward('<answer>0.5</answer>', 0.5), 1, 'decimal');
  t.equal(accuracyReward('<answer>1</answer><answer>2</answer>', 2), 1, 'the last answer counts');
  t.equal(accuracyReward('<answer>1</answer><answer>2</answer>', 1), 0, 'an earlier answer does not');
  t.equal(accuracyReward('<answer>13</answer>', 12), 0, 'wrong');
  t.equal(accuracyReward('<answer>-12</answer>', 12), 0, 'wrong sign');
  t.equal(accuracyReward('<answer>1,000</answer>', 1000), 0, 'answer not a number');
  t.equal(accuracyReward('<answer></answer>', 0), 0, 'empty answer');
  t.equal(accuracyReward('12', 12), 0, 'no answer block');
  t.equal(accuracyReward('', 12), 0, 'empty completion');
  t.ok(Number.isNaN(accuracyReward('<answer>1</answer>', 'n/a')), 'expected not a number: NaN (not applicable)');
  t.ok(Number.isNaN(accuracyReward('<answer>1</answer>', '')), 'expected empty: NaN');
  t.ok(Number.isNaN(accuracyReward('no answer', 'n/a')), 'expected not a number and no answer: NaN');
  t.ok(Number.isNaN(accuracyReward('<answer>NaN</answer>', NaN)), 'expected NaN: NaN');
});

t.test('overlongPenalty', async (t) => {
  const o = { maxLength: 100, cacheLength: 20 };
  t.equal(overlongPenalty(0, o), 0, 'empty completion');
  t.equal(overlongPenalty(79, o), 0, 'well below the ramp');
  t.equal(overlongPenalty(80, o), 0, 'at maxLength − cacheLength');
  t.equal(overlongPenalty(81, o), -0.05, 'first step of the ramp');
  t.equal(overlongPenalty(90, o), -0.5, 'middle of the ramp');
  t.equal(overlongPenalty(95, o), -0.75, 'three quarters');
  t.equal(overlongPenalty(100, o), -1, 'at maxLength');
  t.equal(overlongPenalty(101, o), -1, 'beyond maxLength');
  t.equal(overlongPenalty(10_000, o), -1, 'far beyond');
  t.equal(overlongPenalty(90, { ...o, penalty: 2 }), -1, 'penalty 2, middle');
  t.equal(overlongPenalty(100, { ...o, penalty: 2 }), -2, 'penalty 2 at maxLength');
  t.equal(overlongPenalty(200, { ...o, penalty: 0.5 }), -0.5, 'penalty 0.5 beyond');
  t.equal(overlongPenalty(90, { ...o, penalty: 0 }) === 0, true, 'penalty 0: no penalty');
  t.equal(overlongPenalty(100, { maxLength: 100, cacheLength: 0 }), 0, 'cacheLength 0: no penalty at maxLength');
  t.equal(overlongPenalty(101, { maxLength: 100, cacheLength: 0 }), -1, 'cacheLength 0: a step just after maxLength');
  t.equal(overlongPenalty(0, { maxLength: 4, cacheLength: 4 }), 0, 'cacheLength = maxLength: 0 at length 0');
  t.equal(overlongPenalty(1, { maxLength: 4, cacheLength: 4 }), -0.25, 'cacheLength = maxLength: ramp from the start');
  t.equal(overlongPenalty(4, { maxLength: 4, cacheLength: 4 }), -1, 'cacheLength = maxLength: full at maxLength');
  t.equal(overlongPenalty(1, { maxLength: 1, cacheLength: 1 }), -1, 'maxLength 1');

  await throwsCode(t, () => overlongPenalty(-1, o), 'GK_INVALID_ARG', /overlongPenalty: length must be >= 0, got -1/);
  await throwsCode(t, () => overlongPenalty(1.5, o), 'GK_INVALID_ARG', /length must be an integer, got 1\.5/);
  await throwsCode(t, () => overlongPenalty(NaN, o), 'GK_INVALID_ARG', /length must be a finite number/);
  await throwsCode(t, () => overlongPenalty(5, { maxLength: 0, cacheLength: 0 }), 'GK_INVALID_ARG', /options\.maxLength must be >= 1, got 0/);
  await throwsCode(t, () => overlongPenalty(5, { maxLength: 10.5, cacheLength: 1 }), 'GK_INVALID_ARG', /options\.maxLength must be an integer/);
  await throwsCode(t, () => overlongPenalty(5, { maxLength: Infinity, cacheLength: 1 }), 'GK_INVALID_ARG', /options\.maxLength must be a finite number/);
  await throwsCode(t, () => overlongPenalty(5, { maxLength: 10, cacheLength: 11 }), 'GK_INVALID_ARG', /options\.cacheLength must be <= maxLength \(10\), got 11/);
  await throwsCode(t, () => overlongPenalty(5, { maxLength: 10, cacheLength: -1 }), 'GK_INVALID_ARG', /options\.cacheLength must be >= 0, got -1/);
  await throwsCode(t, () => overlongPenalty(5, { maxLength: 10, cacheLength: 2.5 }), 'GK_INVALID_ARG', /options\.cacheLength must be an integer/);
  await throwsCode(t, () => overlongPenalty(5, { maxLength: 10 } as never), 'GK_INVALID_ARG', /options\.cacheLength must be a finite number, got undefined/);
  await throwsCode(t, () => overlongPenalty(5, { ...o, penalty: -1 }), 'GK_INVALID_ARG', /options\.penalty must be >= 0, got -1/);
  await throwsCode(t, () => overlongPenalty(5, { ...o, penalty: NaN }), 'GK_INVALID_ARG', /options\.penalty must be a finite number/);
  await throwsCode(t, () => overlongPenalty(5, undefined as never), 'GK_INVALID_ARG', /overlongPenalty: options must be an object/);
});

t.test('combineRewards', async (t) => {
  const ctx: RewardContext<number> = { prompt: '1+2=', completion: '<think>1+2</think><answer>3</answer>', completionLength: 9, sample: 3 };
  const f = combineRewards<number>([
    { name: 'format', fn: (c) => formatReward(c.completion), weight: 0.5 },
    { name: 'accuracy', fn: async (c) => accuracyReward(c.completion, c.sample!) },
    { name: 'length', fn: async (c) => { await new Promise((r) => setTimeout(r, 5)); return c.completionLength; }, weight: -0.25 },
    { name: 'na', fn: () => undefined, weight: 100 },
  ]);
  const r = await f(ctx);
  t.equal(r.total, 0.5 * 1 + 1 * 1 - 0.25 * 9, 'Σ weight · value over applicable parts: -0.75');
  t.equal(r.total, -0.75, 'exact total');
  t.same(Object.keys(r.parts), ['format', 'accuracy', 'length', 'na'], 'parts in the order given');
  t.equal(r.parts.format, 1, 'format part');
  t.equal(r.parts.accuracy, 1, 'accuracy part');
  t.equal(r.parts.length, 9, 'length part (unweighted)');
  t.ok(Number.isNaN(r.parts.na), 'undefined → NaN part');

  const wrong = await f({ ...ctx, completion: 'the answer is 4', completionLength: 4 });
  t.equal(wrong.total, -1, 'format 0, accuracy 0, length 4 · -0.25');
  t.same(wrong.parts, { format: 0, accuracy: 0, length: 4, na: NaN }, 'parts for a wrong completion');

  const partly = await combineRewards([
    { name: 'a', fn: () => null, weight: 3 },
    { name: 'b', fn: () => NaN },
    { name: 'c', fn: async () => 2, weight: 1.5 },
  ])(ctx);
  t.equal(partly.total, 3, 'NaN and null parts are skipped');

  const none = await combineRewards([{ name: 'a', fn: () => null }, { name: 'b', fn: () => NaN }, { name: 'c', fn: async () => undefined }])(ctx);
  t.ok(Number.isNaN(none.total), 'NaN when no reward applies');
  t.ok(Number.isNaN(none.parts.a) && Number.isNaN(none.parts.b) && Number.isNaN(none.parts.c), 'all parts NaN');

  const zero = await combineRewards([{ name: 'z', fn: () => 5, weight: 0 }])(ctx);
  t.equal(zero.total, 0, 'weight 0 contributes 0 (still applicable)');
  t.equal(zero.parts.z, 5, 'the part keeps its raw value');

  let calls = 0;
  const counted = combineRewards([{ name: 'n', fn: () => ++calls }]);
  t.equal((await counted(ctx)).total, 1, 'first call');
  t.equal((await counted(ctx)).total, 2, 'the reward runs on every call');

  await throwsCode(t, () => combineRewards([{ name: 'a', fn: () => 1 }, { name: 'a', fn: () => 2 }]), 'GK_INVALID_ARG', /combineRewards: duplicate reward name 'a'/);
  await throwsCode(t, () => combineRewards([{ name: 'a', fn: () => 1, weight: Infinity }]), 'GK_INVALID_ARG', /weight of reward 'a' must be a finite number/);
  await throwsCode(t, () => combineRewards([{ name: 'a', fn: () => 1, weight: NaN }]), 'GK_INVALID_ARG', /weight of reward 'a' must be a finite number/);
  await throwsCode(t, () => combineRewards([{ name: 'a', fn: () => 1, weight: '2' as never }]), 'GK_INVALID_ARG', /weight of reward 'a'/);
  await throwsCode(t, () => combineRewards([]), 'GK_INVALID_ARG', /rewards must be a non-empty array/);
  await throwsCode(t, () => combineRewards([{ name: 'a' } as never]), 'GK_INVALID_ARG', /rewards\[0\] needs a string name and a function fn/);
  await throwsCode(t, () => combineRewards([{ name: 's', fn: () => '1' as never }])(ctx), 'GK_INVALID_ARG', /reward 's' must return a number, NaN, null or undefined, got the string '1'/);
  await throwsCode(t, () => combineRewards([{ name: 'b', fn: async () => true as never }])(ctx), 'GK_INVALID_ARG', /reward 'b' must return a number/);
  await throwsCode(t, () => combineRewards([{ name: 'ok', fn: () => 1 }, { name: 'inf', fn: () => -Infinity }])(ctx), 'GK_NONFINITE', /reward 'inf' returned -Infinity/);
  await throwsCode(t, () => combineRewards([{ name: 'pinf', fn: async () => Infinity }])(ctx), 'GK_NONFINITE', /reward 'pinf' returned Infinity/);
  await t.rejects(combineRewards([{ name: 'boom', fn: () => { throw new Error('boom'); } }])(ctx), { message: 'boom' }, 'a reward that throws rejects');
});

t.test('evaluateRewards', async (t) => {
  const base: RewardContext<string> = { prompt: 'p', completion: '<think>x</think><answer>3</answer>', completionLength: 9, sample: '3' };
  const ctxs: RewardContext<string>[] = [
    base,
    { ...base, completion: '<answer>4</answer>', completionLength: 4 },
    { ...base, completion: 'nothing', completionLength: 2, sample: 'n/a' },
  ];
  const rewards: NamedReward<string>[] = [
    { name: 'format', fn: (c) => formatReward(c.completion) },
    { name: 'accuracy', fn: async (c) => accuracyReward(c.completion, c.sample!), weight: 2 },
    { name: 'len', fn: (c) => (c.completionLength > 5 ? c.completionLength : null), weight: -0.5 },
  ];
  const ev = await evaluateRewards(rewards, ctxs);
  t.same(ev.names, ['format', 'accuracy', 'len'], 'names in order');
  t.ok(ev.weights instanceof Float64Array, 'weights is a Float64Array');
  t.same(Array.from(ev.weights), [1, 2, -0.5], 'weights (default 1)');
  t.equal(ev.perFunction.length, 3, 'one array per function');
  t.ok(ev.perFunction.every((a) => a instanceof Float64Array && a.length === 3), 'Float64Arrays of one value per context');
  t.same(Array.from(ev.perFunction[0]!), [1, 0, 0], 'format per context');
  t.same(Array.from(ev.perFunction[1]!), [1, 0, NaN], 'accuracy per context (NaN: not applicable)');
  t.same(Array.from(ev.perFunction[2]!), [9, NaN, NaN], 'len per context (null → NaN)');

  const empty = await evaluateRewards(rewards, []);
  t.same(empty.perFunction.map((a) => a.length), [0, 0, 0], 'no contexts: empty arrays');
  t.same(Array.from(empty.weights), [1, 2, -0.5], 'no contexts: weights still given');

  await throwsCode(t, () => evaluateRewards([{ name: 'x', fn: (c) => (c.completionLength === 4 ? Infinity : 1) }], ctxs), 'GK_NONFINITE', /reward 'x' returned Infinity for context 1/);
  await throwsCode(t, () => evaluateRewards([{ name: 'y', fn: () => ({}) as never }], ctxs), 'GK_INVALID_ARG', /reward 'y' must return a number.*for context 0/);
  await throwsCode(t, () => evaluateRewards([{ name: 'd', fn: () => 1 }, { name: 'd', fn: () => 1 }], ctxs), 'GK_INVALID_ARG', /evaluateRewards: duplicate reward name 'd'/);
  await throwsCode(t, () => evaluateRewards(rewards, 'ctx' as never), 'GK_INVALID_ARG', /evaluateRewards: ctxs must be an array/);
  let index: number | undefined;
  try {
    await evaluateRewards([{ name: 'x', fn: (c) => (c.completionLength === 2 ? -Infinity : 0) }], ctxs);
  } catch (e) {
    index = (e as GrpoKernelsError).index;
  }
  t.equal(index, 2, 'the error carries the index of the offending context');
});
