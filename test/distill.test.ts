import t from 'tap';
import * as gk from '../lib/index';
import { distillCases, makeLogits, makeTargets, runDistillCase } from './reference/cases';
import { refDistill, type RefDistillOptions } from './reference/distill';
import { centralDiff } from './reference/fd';
import { Rng } from './reference/random';
import { assertCase, rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'distill');

t.test('distillation loss matches the float64 reference (divergences x dtypes x aggregations)', async (t) => {
  let i = 0;
  for (const c of distillCases(true)) assertCase(t, await runDistillCase(seed + i++, c), seed);
});

t.test('∂loss/∂student agrees with central finite differences of the reference', async (t) => {
  const rng = new Rng(seed + 1);
  const n = 4;
  const v = 7;
  const offsets = [0, 2, 4];
  for (const o of [
    { divergence: 'forwardKL', temperature: 0.7 },
    { divergence: 'reverseKL', hardLabelWeight: 0.3 },
    { divergence: 'jsd', beta: 0.25, aggregation: 'seqMeanTokenMean' },
    { divergence: 'jsd', beta: 0.8, temperature: 1.5, aggregation: 'seqMeanTokenSum' },
  ] as Partial<RefDistillOptions>[]) {
    const st = makeLogits(rng, { n, v, dtype: 'float32' });
    const te = makeLogits(rng, { n, v, dtype: 'float32' });
    const targets = makeTargets(rng, st.values, n, v, [1]);
    const opts: RefDistillOptions = {
      divergence: 'forwardKL', beta: 0.5, temperature: 1, ignoreIndex: -100, hardLabelWeight: 0, aggregation: 'tokenMean', normalizer: null,
      maxCompletionLength: 2, ...o,
    };
    const { normalizer: _n, ...rest } = opts;
    const out = await gk.distillationLoss({ student: st.tensor, teacher: te.tensor, targets, seqOffsets: offsets }, rest);
    const fd = centralDiff((z) => refDistill(z, te.values, n, v, targets, null, offsets, opts).loss, st.values, 1e-6);
    const g = out.gradStudent!.data as Float32Array;
    let num = 0;
    let den = 0;
    for (let k = 0; k < n * v; k++) {
      num += (g[k]! - fd[k]!) ** 2;
      den += fd[k]! ** 2;
    }
    t.ok(Math.sqrt(num / den) < 1e-5, `${JSON.stringify(o)}: native vs FD ${Math.sqrt(num / den).toExponential(2)}`);
  }
});

t.test('identical student and teacher give zero loss and zero gradient', async (t) => {
  const rng = new Rng(seed + 2);
  const { tensor } = makeLogits(rng, { n: 5, v: 11, dtype: 'float32' });
  for (const divergence of ['forwardKL', 'reverseKL', 'jsd'] as const) {
    const r = await gk.distillationLoss({ student: tensor, teacher: tensor }, { divergence });
    t.ok(Math.abs(r.loss) < 1e-6, `${divergence}: loss ${r.loss}`);
    t.ok((r.gradStudent!.data as Float32Array).every((x) => Math.abs(x) < 1e-6), `${divergence}: gradient 0`);
  }
});

t.test('bad inputs', async (t) => {
  const a = gk.Tensor.from(new Float32Array(12), { shape: [4, 3] });
  const b = gk.Tensor.from(new Float32Array(15), { shape: [5, 3] });
  await rejectsCode(t, () => gk.distillationLoss({ student: a, teacher: b }), 'GK_SHAPE', /must match the student's/);
  await rejectsCode(t, () => gk.distillationLoss({ student: a, teacher: a }, { divergence: 'kl' as never }), 'GK_INVALID_ARG', /divergence/);
  await rejectsCode(t, () => gk.distillationLoss({ student: a, teacher: a }, { divergence: 'jsd', beta: 1 }), 'GK_INVALID_ARG', /beta/);
  await rejectsCode(t, () => gk.distillationLoss({ student: a, teacher: a }, { hardLabelWeight: 1 }), 'GK_INVALID_ARG', /targets are required/);
  await rejectsCode(t, () => gk.distillationLoss({ student: a, teacher: a, targets: [0, 1, 2, 3] }), 'GK_TARGET_RANGE', /targets\[3\] = 3/);
  await rejectsCode(t, () => gk.distillationLoss({ student: a, teacher: a, seqOffsets: [0, 5] }), 'GK_SHAPE', /end at N = 4/);
  await rejectsCode(t, () => gk.distillationLoss({ student: a, teacher: a }, { temperature: 0 }), 'GK_INVALID_ARG', /temperature/);
  const masked = gk.Tensor.from(Float32Array.from([0, -Infinity, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), { shape: [4, 3] });
  await rejectsCode(t, () => gk.distillationLoss({ student: masked, teacher: a }), 'GK_NONFINITE', /row 0/);
});
