import t from 'tap';
import * as gk from '../lib/index';
import { rejectsCode } from './helpers';

t.test('format rewards', async (t) => {
  const good = '<think>3 plus 4</think><answer>7</answer>';
  t.equal(gk.formatReward(good), 1);
  t.equal(gk.formatReward(`  ${good.replace('</think>', '</think>\n')}\n`), 1, 'whitespace between and around blocks');
  t.equal(gk.formatReward('<think>x</think>'), 0, 'no answer');
  t.equal(gk.formatReward(`${good} and more`), 0, 'text after the answer');
  t.equal(gk.formatReward(`hi ${good}`), 0, 'text before the think block');
  t.equal(gk.formatReward('<think>a</think><answer>1</answer><answer>2</answer>'), 0, 'two answers');
  t.equal(gk.formatReward('<think>a<think>b</think><answer>1</answer>'), 0, 'nested think tag');
  t.equal(gk.formatReward('<answer>1</answer><think>a</think>'), 0, 'wrong order');
  t.equal(gk.formatReward(`hi ${good} and more`, { strict: false }), 1, 'soft: blocks anywhere in order');
  t.equal(gk.formatReward('<answer>1</answer><think>a</think>', { strict: false }), 0);
  t.equal(gk.tagCountReward(good), 1);
  t.equal(gk.tagCountReward('<think>a</think>'), 0.5);
  t.equal(gk.tagCountReward('<think><think>'), 0);
  t.ok(Math.abs(gk.tagCountReward(`${good}12345`) - 0.995) < 1e-12, '0.001 per character after </answer>');
  t.equal(gk.extractAnswer('<answer> 1 </answer> then <answer> 42 </answer>'), '42', 'the last answer block, trimmed');
  t.equal(gk.extractAnswer('no answer'), undefined);
});

t.test('numeric accuracy', async (t) => {
  const cases: [string, string | undefined][] = [
    [' 007 ', '7'], ['-0', '0'], ['+12', '12'], ['1.50', '1.5'], ['3.', '3'], ['0.0', '0'], ['-00.250', '-0.25'], ['- 5', '-5'],
    ['1,000', undefined], ['', undefined], ['--1', undefined], ['abc', undefined], ['.', undefined], ['1.2.3', undefined], ['.5', '0.5'],
  ];
  for (const [s, want] of cases) t.equal(gk.normalizeNumber(s), want, JSON.stringify(s));
  t.equal(gk.accuracyReward('<think></think><answer>012</answer>', 12), 1);
  t.equal(gk.accuracyReward('<answer>+12.0</answer>', '12'), 1);
  t.equal(gk.accuracyReward('<answer>13</answer>', 12), 0);
  t.equal(gk.accuracyReward('12', 12), 0, 'no answer block');
  t.ok(Number.isNaN(gk.accuracyReward('<answer>1</answer>', 'n/a')), 'expected not a number: not applicable');
});

t.test('overlong penalty', async (t) => {
  const o = { maxLength: 100, cacheLength: 20 };
  t.equal(gk.overlongPenalty(80, o), 0);
  t.equal(gk.overlongPenalty(90, o), -0.5);
  t.equal(gk.overlongPenalty(100, o), -1);
  t.equal(gk.overlongPenalty(101, o), -1);
  t.equal(gk.overlongPenalty(95, { ...o, penalty: 2 }), -1.5);
  t.equal(gk.overlongPenalty(100, { maxLength: 100, cacheLength: 0 }), 0, 'no ramp: a step after the limit');
  t.equal(gk.overlongPenalty(101, { maxLength: 100, cacheLength: 0 }), -1);
  await rejectsCode(t, () => gk.overlongPenalty(5, { maxLength: 10, cacheLength: 11 }), 'GK_INVALID_ARG', /cacheLength must be <= maxLength/);
  await rejectsCode(t, () => gk.overlongPenalty(5, { maxLength: 0, cacheLength: 0 }), 'GK_INVALID_ARG', /maxLength/);
  await rejectsCode(t, () => gk.overlongPenalty(-1, o), 'GK_INVALID_ARG', /length/);
  await rejectsCode(t, () => gk.overlongPenalty(1.5, o), 'GK_INVALID_ARG', /length must be an integer/);
});

t.test('combining rewards', async (t) => {
  const ctx = { prompt: '1+2=', completion: '<think></think><answer>3</answer>', completionLength: 9, sample: 3 };
  const f = gk.combineRewards<number>([
    { name: 'format', fn: (c) => gk.formatReward(c.completion), weight: 0.5 },
    { name: 'accuracy', fn: async (c) => gk.accuracyReward(c.completion, c.sample!) },
    { name: 'na', fn: () => undefined },
  ]);
  const r = await f(ctx);
  t.equal(r.total, 1.5);
  t.same(r.parts, { format: 1, accuracy: 1, na: NaN });
  const none = await gk.combineRewards([{ name: 'a', fn: () => null }, { name: 'b', fn: () => NaN }])(ctx);
  t.ok(Number.isNaN(none.total), 'NaN when no reward applies');
  await rejectsCode(t, () => gk.combineRewards([{ name: 'a', fn: () => 1 }, { name: 'a', fn: () => 2 }]), 'GK_INVALID_ARG', /duplicate reward name 'a'/);
  await rejectsCode(t, () => gk.combineRewards([{ name: 'a', fn: () => 1, weight: Infinity }]), 'GK_INVALID_ARG', /weight of reward 'a'/);
  await rejectsCode(t, () => gk.combineRewards([{ name: 's', fn: () => '1' as never }])(ctx), 'GK_INVALID_ARG', /reward 's' must return a number/);
  await rejectsCode(t, () => gk.combineRewards([{ name: 'inf', fn: () => -Infinity }])(ctx), 'GK_NONFINITE', /reward 'inf' returned -Infinity/);
  const ev = await gk.evaluateRewards([{ name: 'len', fn: (c) => c.completionLength }, { name: 'x', fn: () => undefined, weight: 2 }], [ctx, { ...ctx, completionLength: 4 }]);
  t.same(ev.names, ['len', 'x']);
  t.same(Array.from(ev.perFunction[0]!), [9, 4]);
  t.ok(ev.perFunction[1]!.every(Number.isNaN));
  t.same(Array.from(ev.weights), [1, 2]);
});
