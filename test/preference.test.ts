import t from 'tap';
import * as gk from '../lib/index';
import { preferenceCases, runPreferenceCase } from './reference/cases';
import { centralDiff } from './reference/fd';
import { refBradleyTerry } from './reference/preference';
import { Rng } from './reference/random';
import { assertCase, rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'preference');

t.test('Bradley–Terry loss matches the float64 reference', async (t) => {
  let i = 0;
  for (const c of preferenceCases(true)) assertCase(t, await runPreferenceCase(seed + i++, c), seed);
});

t.test('gradients agree with central finite differences', async (t) => {
  const rng = new Rng(seed + 1);
  const n = 9;
  const chosen = Float64Array.from({ length: n }, () => rng.normal());
  const rejected = Float64Array.from({ length: n }, () => rng.normal());
  const out = await gk.bradleyTerryLoss({ chosen, rejected }, { margin: 0.3 });
  const fc = centralDiff((x) => refBradleyTerry(x, rejected, null, 0.3, false).loss, chosen, 1e-6);
  const fr = centralDiff((x) => refBradleyTerry(chosen, x, null, 0.3, false).loss, rejected, 1e-6);
  const gc = out.gradChosen.data as Float32Array;
  const gr = out.gradRejected.data as Float32Array;
  for (let i = 0; i < n; i++) {
    t.ok(Math.abs(gc[i]! - fc[i]!) < 1e-6, `∂/∂chosen[${i}] ${gc[i]} vs ${fc[i]}`);
    t.ok(Math.abs(gr[i]! - fr[i]!) < 1e-6, `∂/∂rejected[${i}] ${gr[i]} vs ${fr[i]}`);
  }
});

t.test('stays finite for huge score gaps, and known values', async (t) => {
  const r = await gk.bradleyTerryLoss({ chosen: [1000, -1000, 0], rejected: [-1000, 1000, 0] });
  t.ok(Number.isFinite(r.loss), `loss ${r.loss}`);
  t.ok(Math.abs(r.loss - (0 + 2000 + Math.log(2)) / 3) < 1e-3);
  t.ok(Math.abs(r.accuracy - 1 / 3) < 1e-12, 'ties do not count as correct');
  const g = r.gradChosen.data as Float32Array;
  t.ok(Math.abs(g[2]! + 0.5 / 3) < 1e-7, 'd = 0: ∂/∂chosen = -σ(0)/n');
});

t.test('bad inputs', async (t) => {
  await rejectsCode(t, () => gk.bradleyTerryLoss({ chosen: [1, 2], rejected: [1] }), 'GK_SHAPE', /rejected must have 2 elements/);
  await rejectsCode(t, () => gk.bradleyTerryLoss({ chosen: [], rejected: [] }), 'GK_SHAPE', /at least one/);
  await rejectsCode(t, () => gk.bradleyTerryLoss({ chosen: [NaN], rejected: [1] }), 'GK_NONFINITE', /chosen\[0\] must be finite/);
  await rejectsCode(t, () => gk.bradleyTerryLoss({ chosen: [1], rejected: [1] }, { reduction: 'max' as never }), 'GK_INVALID_ARG', /reduction/);
  await rejectsCode(t, () => gk.bradleyTerryLoss({ chosen: [1], rejected: [1] }, { margin: Infinity }), 'GK_INVALID_ARG', /margin/);
  await rejectsCode(t, () => gk.bradleyTerryLoss({ rejected: [1] } as never), 'GK_INVALID_ARG', /chosen/);
});
