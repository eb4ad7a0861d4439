import t from 'tap';
import * as gk from '../lib/index';
import { advantageCases, runAdvantageCase } from './reference/cases';
import { assertCase, rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'advantages');

t.test('matches the float64 reference (scales x estimators x NaN x weights)', async (t) => {
  let i = 0;
  for (const c of advantageCases(true)) assertCase(t, await runAdvantageCase(seed + i++, c), seed);
});

t.test('zero-variance groups give exact zeros and are counted', async (t) => {
  // Rewards whose float32 mean would leave a residue: 0.1 three times.
  const r = await gk.groupAdvantages([0.1, 0.1, 0.1, 1, 2, 3, 7, 7, 7], { groupSize: 3 });
  const a = r.advantages.data as Float32Array;
  t.same(Array.from(a.subarray(0, 3)), [0, 0, 0]);
  t.same(Array.from(a.subarray(6, 9)), [0, 0, 0]);
  t.equal(r.zeroVarianceGroups, 2);
  t.ok(Math.abs(a[3]! + 1 / (1 + 1e-4)) < 1e-6, 'middle group: (r - mean) / (std + eps)');
});

t.test('NaN, null and undefined mean "not applicable"', async (t) => {
  const r = await gk.groupAdvantages(
    [
      [1, NaN, 3, null, 5, 6],
      [10, 20, undefined, NaN, 0, 0],
    ],
    { groupSize: 3, weights: [1, 0.5] },
  );
  t.same(Array.from(r.rewards.subarray(0, 3)), [6, 10, 3]);
  t.ok(Number.isNaN(r.rewards[3]), 'sample with every reward NaN stays NaN');
  t.equal((r.advantages.data as Float32Array)[3], 0, 'and gets advantage 0');
  t.equal(r.groupMean[1], 5.5, 'its group statistics skip it');
});

t.test('G = 1: every group has zero variance', async (t) => {
  const r = await gk.groupAdvantages(Float64Array.from([3, 1, 4, 1, 5]), { groupSize: 1, scale: 'batch' });
  t.same(Array.from(r.advantages.data as Float32Array), [0, 0, 0, 0, 0]);
  t.equal(r.zeroVarianceGroups, 5);
});

t.test('rloo and scale none', async (t) => {
  const r = await gk.groupAdvantages([1, 2, 6], { groupSize: 3, estimator: 'rloo' });
  t.same(Array.from(r.advantages.data as Float32Array), [1 - 4, 2 - 3.5, 6 - 1.5]);
  const d = await gk.groupAdvantages([1, 2, 6], { groupSize: 3, scale: 'none' });
  t.same(Array.from(d.advantages.data as Float32Array), [-2, -1, 3]);
});

t.test('bad inputs', async (t) => {
  await rejectsCode(t, () => gk.groupAdvantages([1, 2, 3], { groupSize: 2 }), 'GK_SHAPE', /groupSize 2 does not divide the 3/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 0 }), 'GK_INVALID_ARG', /groupSize must be >= 1/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 1.5 }), 'GK_INVALID_ARG', /integer/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, scale: 'std' as never }), 'GK_INVALID_ARG', /scale must be one of 'group', 'batch', 'none', got the string 'std'/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'ppo' as never }), 'GK_INVALID_ARG', /estimator/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, eps: -1 }), 'GK_INVALID_ARG', /eps/);
  await rejectsCode(t, () => gk.groupAdvantages([1, Infinity], { groupSize: 2 }), 'GK_NONFINITE', /rewards\[1\] is Infinity/);
  await rejectsCode(t, () => gk.groupAdvantages([1, '2' as never], { groupSize: 2 }), 'GK_INVALID_ARG', /rewards\[1\] must be a number/);
  await rejectsCode(t, () => gk.groupAdvantages([[1, 2], [1]], { groupSize: 2 }), 'GK_SHAPE', /rewards\[1\] must have 2 elements/);
  await rejectsCode(t, () => gk.groupAdvantages([[1, 2], [1, 2]], { groupSize: 2, weights: [1] }), 'GK_SHAPE', /weights/);
  await rejectsCode(t, () => gk.groupAdvantages([], { groupSize: 1 }), 'GK_SHAPE', /empty/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, groupsize: 2 } as never), 'GK_INVALID_ARG', /unknown option 'groupsize'/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], undefined as never), 'GK_INVALID_ARG', /groupSize are required/);
  await rejectsCode(t, () => gk.groupAdvantages('abc' as never, { groupSize: 1 }), 'GK_DTYPE', /rewards must be/);
});
