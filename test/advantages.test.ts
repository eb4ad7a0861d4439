import t from 'tap';
import * as gk from '../lib/index';
import { advantageCases, runAdvantageCase } from './reference/cases';
import { assertCase, rejectsCode, seedFor } from './helpers';
import { Rng } from './reference/random';

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

// §9.5, by hand.
const f32 = (r: gk.GroupAdvantagesResult) => Array.from(r.advantages.data as Float32Array);
const near = (t: { ok(c: boolean, m: string): unknown }, got: number[], want: number[], msg: string) =>
  t.ok(got.length === want.length && got.every((g, i) => Math.abs(g - want[i]!) <= 1e-6 * Math.max(1, Math.abs(want[i]!))), `${msg}: ${got} vs ${want}`);

t.test('grpoPassK: only the best member, by its margin over the runner-up; ties give 0', async (t) => {
  near(t, f32(await gk.groupAdvantages([1, 5, 2, 4, 3, 3, 1, 0], { groupSize: 4, estimator: 'grpoPassK', scale: 'none' })), [0, 1, 0, 0, 0, 0, 0, 0], 'scale none');
  const r = await gk.groupAdvantages([1, 5, 2, 4], { groupSize: 4, estimator: 'grpoPassK' });
  near(t, f32(r), [0, 1 / (r.groupStd[0]! + 1e-4), 0, 0], 'scale group (default)');
});

t.test('opo: the length-weighted group mean', async (t) => {
  near(t, f32(await gk.groupAdvantages([1, 0, 1], { groupSize: 3, estimator: 'opo', lengths: [1, 2, 3] })), [1 / 3, -2 / 3, 1 / 3], 'b = 4/6');
  near(t, f32(await gk.groupAdvantages([1, 0, 1], { groupSize: 3, estimator: 'opo', lengths: [0, 0, 0] })), [0, 0, 0], 'no weight: 0');
});

t.test('gpg: α = valid / non-zero rewards times the centred reward', async (t) => {
  const a = 8 / 3;
  near(t, f32(await gk.groupAdvantages([1, 0, 0, 0, 1, 1, 0, 0], { groupSize: 4, estimator: 'gpg' })), [0.75 * a, -0.25 * a, -0.25 * a, -0.25 * a, 0.5 * a, 0.5 * a, -0.5 * a, -0.5 * a], 'α = 8/3');
});

t.test('reinforcePlusPlus: token-weighted batch whitening', async (t) => {
  // W = 4, mean 3/4, var = (3·1/16 + 9/16)/3 = 1/4.
  near(t, f32(await gk.groupAdvantages([1, 0], { groupSize: 2, estimator: 'reinforcePlusPlus', lengths: [3, 1], eps: 0 })), [0.5, -1.5], 'lengths 3, 1');
  // Baseline: group-centred [1, -1, 0, 0] (second group flat), then whitened with unit weights.
  const c = [1, -1, 0, 0];
  const sd = Math.sqrt(2 / 3);
  near(t, f32(await gk.groupAdvantages([2, 0, 5, 5], { groupSize: 2, estimator: 'reinforcePlusPlusBaseline', eps: 0 })), c.map((v) => v / sd), 'with the group mean');
});

t.test('normalizeThenSum: each function normalised in its group, summed, then over the batch', async (t) => {
  const z = 0.5 / (Math.SQRT1_2 + 1e-4);
  const s = [2 * z, -2 * z, -z, z];
  const sd = Math.sqrt((4 * z * z * 2 + 2 * z * z) / 3);
  const r = await gk.groupAdvantages([[1, 0, 1, 1], [1, 0, 0, 1]], { groupSize: 2, multiObjectiveAggregation: 'normalizeThenSum' });
  near(t, f32(r), s.map((v) => v / (sd + 1e-4)), 'two functions');
  t.equal(r.zeroVarianceGroups, 0, 'a group counts only when every function is flat in it');
});

t.test('§9.5 bad inputs', async (t) => {
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'opo' }), 'GK_INVALID_ARG', /opo' needs options.lengths/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'opo', lengths: [1] }), 'GK_SHAPE', /lengths must have one length per completion \(2\)/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'opo', lengths: [1, -1] }), 'GK_INVALID_ARG', /lengths\[1\] must be >= 0/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, lengths: [1, NaN] }), 'GK_INVALID_ARG', /lengths\[1\] must be a finite number/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'reinforcePlusPlus', scale: 'group' }), 'GK_INVALID_ARG', /scale must be 'batch' or unset/);
  await rejectsCode(t, () => gk.groupAdvantages([[1, 2], [3, 4]], { groupSize: 2, estimator: 'rloo', multiObjectiveAggregation: 'normalizeThenSum' }), 'GK_INVALID_ARG', /estimator 'grpo' only/);
  await rejectsCode(t, () => gk.groupAdvantages([[1, 2], [3, 4]], { groupSize: 2, scale: 'group', multiObjectiveAggregation: 'normalizeThenSum' }), 'GK_INVALID_ARG', /leave it unset/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, multiObjectiveAggregation: 'normalize_then_sum' as never }), 'GK_INVALID_ARG', /multiObjectiveAggregation must be one of/);
  await rejectsCode(t, () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'reinforce_plus_plus' as never }), 'GK_INVALID_ARG', /estimator must be one of/);
});

t.test('§9.7: data-parallel workers with all-reduced batch statistics reproduce the one-worker advantages', async (t) => {
  const rng = new Rng(seed + 97);
  const G = 4;
  const n = 6 * G;
  const r1 = Float64Array.from({ length: n }, () => (rng.next() < 0.1 ? NaN : rng.normal()));
  const r2 = Float64Array.from({ length: n }, () => (rng.next() < 0.3 ? NaN : rng.next() < 0.5 ? 1 : 0));
  const lengths = Float64Array.from({ length: n }, () => 1 + Math.floor(rng.next() * 30));
  const cases: { name: string; rewards: Float64Array | Float64Array[]; o: gk.GroupAdvantagesOptions }[] = [
    { name: 'scale batch', rewards: r1, o: { groupSize: G, scale: 'batch' } },
    { name: 'reinforcePlusPlus (lengths)', rewards: r1, o: { groupSize: G, estimator: 'reinforcePlusPlus', lengths } },
    { name: 'reinforcePlusPlusBaseline', rewards: r1, o: { groupSize: G, estimator: 'reinforcePlusPlusBaseline' } },
    { name: 'normalizeThenSum', rewards: [r1, r2], o: { groupSize: G, multiObjectiveAggregation: 'normalizeThenSum', weights: [1, 0.5] } },
  ];
  const half = n / 2;
  const slice = (x: Float64Array | Float64Array[], k: number) => (Array.isArray(x) ? x.map((a) => a.subarray(k * half, (k + 1) * half)) : x.subarray(k * half, (k + 1) * half));
  for (const c of cases) {
    const one = await gk.groupAdvantages(c.rewards, { ...c.o, returnPartials: true });
    const parts = await Promise.all([0, 1].map((k) => gk.groupAdvantages(slice(c.rewards, k), {
      ...c.o, ...(c.o.lengths ? { lengths: (c.o.lengths as Float64Array).subarray(k * half, (k + 1) * half) } : {}), returnPartials: true,
    })));
    const stats = gk.combineBatchStats(parts[0]!.partials!, parts[1]!.partials!);
    t.ok(Math.abs(stats.count - one.partials!.count) === 0 && Math.abs(stats.mean - one.partials!.mean) <= 1e-12 * (1 + Math.abs(one.partials!.mean))
      && Math.abs(stats.m2 - one.partials!.m2) <= 1e-12 * (1 + one.partials!.m2), `${c.name}: Chan's combination = the batch's statistics`);
    const workers = await Promise.all([0, 1].map((k) => gk.groupAdvantages(slice(c.rewards, k), {
      ...c.o, ...(c.o.lengths ? { lengths: (c.o.lengths as Float64Array).subarray(k * half, (k + 1) * half) } : {}), batchStats: stats,
    })));
    const got = [...(workers[0]!.advantages.data as Float32Array), ...(workers[1]!.advantages.data as Float32Array)];
    const want = Array.from(one.advantages.data as Float32Array);
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / Math.max(1e-6, Math.abs(want[i]!)));
    t.ok(worst <= 1e-6, `${c.name}: every advantage within 1e-6 relative (worst ${worst.toExponential(2)})`);
    const local = await gk.groupAdvantages(slice(c.rewards, 0), { ...c.o, ...(c.o.lengths ? { lengths: (c.o.lengths as Float64Array).subarray(0, half) } : {}) });
    t.notSame(Array.from(local.advantages.data as Float32Array), want.slice(0, half), `${c.name}: without the global statistics a worker's advantages differ`);
  }
  await rejectsCode(t, () => gk.groupAdvantages(r1, { groupSize: G, batchStats: { count: 3, mean: 0, m2: 1 } }), 'GK_INVALID_ARG', /batchStats replaces a batch statistic/);
  await rejectsCode(t, () => gk.groupAdvantages(r1, { groupSize: G, returnPartials: true }), 'GK_INVALID_ARG', /returnPartials/);
  await rejectsCode(t, () => gk.groupAdvantages(r1, { groupSize: G, scale: 'batch', batchStats: { count: -1, mean: 0, m2: 1 } }), 'GK_INVALID_ARG', /count must be >= 0/);
  await rejectsCode(t, () => gk.groupAdvantages(r1, { groupSize: G, scale: 'batch', batchStats: { count: 2, mean: NaN, m2: 1 } }), 'GK_INVALID_ARG', /mean/);
  await rejectsCode(t, () => gk.groupAdvantages(r1, { groupSize: G, scale: 'batch', batchStats: { count: 2, mean: 0, m2: 1, n: 3 } as never }), 'GK_INVALID_ARG', /unknown/);
});

t.test("§9.7: gpg's batch counts from outside: workers that sum their gpgCounts reproduce the one-worker advantages bit for bit", async (t) => {
  const rng = new Rng(seed + 98);
  const G = 8;
  const n = 10 * G;
  // Binary rewards with some NaN: the two halves have different shares of non-zero rewards.
  const r = Float64Array.from({ length: n }, (_, i) => (rng.next() < 0.1 ? NaN : rng.next() < (i < n / 2 ? 0.2 : 0.7) ? 1 : 0));
  const one = await gk.groupAdvantages(r, { groupSize: G, estimator: 'gpg' });
  let valid = 0;
  let nonzero = 0;
  for (const x of r) if (!Number.isNaN(x)) { valid++; if (x !== 0) nonzero++; }
  t.same(one.gpgCounts, { valid, nonzero }, `the batch's counts (${valid} valid, ${nonzero} non-zero)`);
  const half = n / 2;
  const parts = await Promise.all([0, 1].map((k) => gk.groupAdvantages(r.subarray(k * half, (k + 1) * half), { groupSize: G, estimator: 'gpg' })));
  const sum = { valid: parts[0]!.gpgCounts!.valid + parts[1]!.gpgCounts!.valid, nonzero: parts[0]!.gpgCounts!.nonzero + parts[1]!.gpgCounts!.nonzero };
  t.same(sum, one.gpgCounts, 'the workers\' counts sum to the batch\'s');
  const workers = await Promise.all([0, 1].map((k) => gk.groupAdvantages(r.subarray(k * half, (k + 1) * half), { groupSize: G, estimator: 'gpg', gpgCounts: sum })));
  t.same([...(workers[0]!.advantages.data as Float32Array), ...(workers[1]!.advantages.data as Float32Array)], Array.from(one.advantages.data as Float32Array), 'every advantage equal to the one-worker one');
  t.notSame(Array.from(parts[0]!.advantages.data as Float32Array), Array.from(one.advantages.data as Float32Array).slice(0, half), 'with its local counts a worker\'s advantages differ');
  // α = valid / max(1, nonzero): given counts scale every advantage of a batch by the ratio of the α's.
  const scaled = await gk.groupAdvantages(r, { groupSize: G, estimator: 'gpg', gpgCounts: { valid: 2 * valid, nonzero } });
  const a = one.advantages.data as Float32Array, b = scaled.advantages.data as Float32Array;
  t.ok(a.every((x, i) => Math.abs(b[i]! - 2 * x) <= 1e-6 * Math.abs(x) + 1e-30), 'doubling the valid count doubles every advantage');
  t.equal((await gk.groupAdvantages(r, { groupSize: G })).gpgCounts, undefined, 'other estimators return no gpgCounts');
  await rejectsCode(t, () => gk.groupAdvantages(r, { groupSize: G, gpgCounts: { valid: 3, nonzero: 1 } }), 'GK_INVALID_ARG', /estimator 'gpg'/);
  await rejectsCode(t, () => gk.groupAdvantages(r, { groupSize: G, estimator: 'gpg', gpgCounts: { valid: 3, nonzero: 4 } }), 'GK_INVALID_ARG', /cannot exceed/);
  await rejectsCode(t, () => gk.groupAdvantages(r, { groupSize: G, estimator: 'gpg', gpgCounts: { valid: -1, nonzero: 0 } }), 'GK_INVALID_ARG', /valid must be >= 0/);
  await rejectsCode(t, () => gk.groupAdvantages(r, { groupSize: G, estimator: 'gpg', gpgCounts: { valid: 3, nonzero: NaN } }), 'GK_INVALID_ARG', /nonzero/);
  await rejectsCode(t, () => gk.groupAdvantages(r, { groupSize: G, estimator: 'gpg', gpgCounts: { valid: 3, nonzero: 1, all: 2 } as never }), 'GK_INVALID_ARG', /unknown/);
  await rejectsCode(t, () => gk.groupAdvantages(r, { groupSize: G, estimator: 'gpg', gpgCounts: [3, 1] as never }), 'GK_INVALID_ARG', /valid, nonzero/);
});
