// Every bad input of the log-prob ops and tensors fails with a stable code and a precise message.
import t from 'tap';
import * as gk from '../lib/index';
import { rejectsCode } from './helpers';
import { editDistance, nearest } from '../lib/errors';
import { requireOptional } from '../lib/optional';

const logits = gk.Tensor.from(new Float32Array(12).fill(1), { shape: [4, 3] });

t.test('tokenLogProbs', async (t) => {
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2]), 'GK_SHAPE', /targets must have 4 elements \(one per logits row\), got 3/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 3]), 'GK_TARGET_RANGE', /targets\[3\] = 3 is outside \[0, 3\)/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, -1]), 'GK_TARGET_RANGE', /targets\[3\] = -1/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1.5, 2, 0]), 'GK_TARGET_RANGE', /targets\[1\] must be an integer token id, got number 1.5/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, BigInt64Array.from([0n, 1n, 2n, 5n])), 'GK_TARGET_RANGE', /targets\[3\] = 5/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, new Float32Array(4) as never), 'GK_DTYPE', /targets must be a Tensor \(int32\/int64\), Int32Array, BigInt64Array or number\[\], got a Float32Array/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, gk.Tensor.from(new Float32Array(4)) as never), 'GK_DTYPE', /targets must be int32 or int64, got float32/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, 'abc' as never), 'GK_DTYPE', /targets must be/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { temperature: 0 }), 'GK_INVALID_ARG', /temperature must be > 0, got 0/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { temperature: -2 }), 'GK_INVALID_ARG', /temperature must be > 0, got -2/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { temperature: NaN }), 'GK_INVALID_ARG', /temperature must be a finite number/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { ignoreIndex: 0.5 }), 'GK_INVALID_ARG', /ignoreIndex must be an integer/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { entropy: 1 as never }), 'GK_INVALID_ARG', /entropy must be a boolean/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { temprature: 1 } as never), 'GK_INVALID_ARG', /unknown option 'temprature' \(did you mean 'temperature'\?\); expected one of temperature, /);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { ignoreindex: 1 } as never), 'GK_INVALID_ARG', /unknown option 'ignoreindex' \(did you mean 'ignoreIndex'\?\)/);
  await rejectsCode(t, () => gk.tokenLogProbs(logits, [0, 1, 2, 0], { zzzzzz: 1 } as never), 'GK_INVALID_ARG', /unknown option 'zzzzzz'; expected one of /);
  await rejectsCode(t, () => gk.tokenLogProbs(new Float32Array(4) as never, [0]), 'GK_INVALID_ARG', /logits must be a Tensor/);
  await rejectsCode(t, () => gk.tokenLogProbs(gk.Tensor.from(new Float32Array(4)), [0]), 'GK_SHAPE', /shape \[N, V\]/);
  await rejectsCode(t, () => gk.tokenLogProbs(gk.Tensor.from(new Float64Array(4), { shape: [2, 2] }), [0, 0]), 'GK_DTYPE', /logits must be float32, float16 or bfloat16, got float64/);
  await rejectsCode(t, () => gk.tokenLogProbs(gk.Tensor.from(new Float32Array(0), { shape: [2, 0] }), [0, 0]), 'GK_SHAPE', /V >= 1/);
  const ignored = await gk.tokenLogProbs(logits, [0, 1, 2, 7], { ignoreIndex: 7 });
  t.equal((ignored.logp.data as Float32Array)[3], 0, 'a custom ignoreIndex is accepted');
});

t.test('tokenLogProbsBackward', async (t) => {
  await rejectsCode(t, () => gk.tokenLogProbsBackward(logits, [0, 1, 2, 0], { gradLogp: [1, 2] }), 'GK_SHAPE', /gradLogp must have 4 elements, got 2/);
  await rejectsCode(t, () => gk.tokenLogProbsBackward(logits, [0, 1, 2, 0], { gradLogp: ['a', 1, 1, 1] as never }), 'GK_INVALID_ARG', /gradLogp\[0\] must be a number/);
  await rejectsCode(t, () => gk.tokenLogProbsBackward(logits, [0, 1, 2, 0], { gradLogp: new BigInt64Array(4) as never }), 'GK_DTYPE', /gradLogp/);
  await rejectsCode(t, () => gk.tokenLogProbsBackward(logits, [0, 1, 2, 0], { gradLogp: [1, 1, 1, 1] }, { lse: [1] }), 'GK_SHAPE', /lse must have 4/);
  await rejectsCode(t, () => gk.tokenLogProbsBackward(logits, [0, 1, 2, 0], { gradlogp: [1, 1, 1, 1] } as never), 'GK_INVALID_ARG', /unknown gradient 'gradlogp'/);
  await rejectsCode(t, () => gk.tokenLogProbsBackward(logits, [0, 1, 9, 0], { gradLogp: [1, 1, 1, 1] }), 'GK_TARGET_RANGE', /targets\[2\] = 9/);
});

t.test('Tensor', async (t) => {
  await rejectsCode(t, () => gk.Tensor.from(new Uint16Array(4)), 'GK_DTYPE', /Uint16Array needs dtype 'float16' or 'bfloat16'/);
  await rejectsCode(t, () => gk.Tensor.from(new Float32Array(4) as never, { dtype: 'bfloat16' }), 'GK_DTYPE', /'bfloat16' is stored in a Uint16Array, got a Float32Array of length 4/);
  await rejectsCode(t, () => gk.Tensor.from(new Float32Array(4), { dtype: 'float8' as never }), 'GK_DTYPE', /unknown dtype/);
  await rejectsCode(t, () => gk.Tensor.from(new Float32Array(4), { shape: [3] }), 'GK_SHAPE', /shape \[3\] holds 3 elements, but the data has 4/);
  await rejectsCode(t, () => gk.Tensor.from(new Float32Array(4), { shape: [2, -2] }), 'GK_SHAPE', /non-negative integers/);
  await rejectsCode(t, () => gk.Tensor.from([1, 2] as never), 'GK_DTYPE', /typed array/);
  const x = gk.Tensor.from(new Float32Array(12), { shape: [4, 3] });
  x.dispose();
  await rejectsCode(t, () => x.data, 'GK_DISPOSED', /was disposed/);
  await rejectsCode(t, () => gk.tokenLogProbs(x, [0, 0, 0, 0]), 'GK_DISPOSED', /^tokenLogProbs: logits is a disposed tensor \(Tensor\(float32, \[4, 3\], cpu, disposed\)\)/);
  await rejectsCode(t, () => gk.grpoLoss({ logits: x, targets: [0, 0, 0, 0], advantages: [1, 1, 1, 1] }), 'GK_DISPOSED', /: logits is a disposed tensor/);
  const tg = gk.Tensor.from(new Int32Array(4));
  tg.dispose();
  await rejectsCode(t, () => gk.tokenLogProbs(logits, tg), 'GK_DISPOSED', /^tokenLogProbs: targets is a disposed tensor/);
  const adv = gk.Tensor.from(new Float32Array(4));
  adv.dispose();
  await rejectsCode(t, () => gk.grpoLoss({ logp: [-1, -1, -1, -1], advantages: adv }), 'GK_DISPOSED', /^grpoLoss: inputs.advantages is a disposed tensor/);
  const grad = gk.Tensor.from(new Float32Array(4));
  grad.dispose();
  await rejectsCode(t, () => gk.tokenLogProbsBackward(logits, [0, 1, 2, 0], { gradLogp: grad }), 'GK_DISPOSED', /^tokenLogProbsBackward: grads.gradLogp is a disposed tensor/);
  const rw = gk.Tensor.from(new Float32Array(4));
  rw.dispose();
  await rejectsCode(t, () => gk.groupAdvantages(rw, { groupSize: 2 }), 'GK_DISPOSED', /^groupAdvantages: rewards is a disposed tensor/);
});

t.test('nearest: the suggestion for a typo, none for a stranger', async (t) => {
  t.equal(editDistance('steps', 'stesp'), 1, 'an adjacent swap is one edit');
  t.equal(nearest('lossTyp', ['beta', 'lossType', 'epsilon']), 'lossType');
  t.equal(nearest('BETA', ['beta', 'lossType']), 'beta', 'case-insensitive');
  t.equal(nearest('xyz', ['beta', 'lossType']), undefined);
});

t.test('optional packages: GK_MISSING_PACKAGE names what to install', async (t) => {
  await rejectsCode(t, () => requireOptional('gk-no-such-package', 'drawing a chart', ['gk-no-such-package', 'vega-lite']), 'GK_MISSING_PACKAGE',
    /drawing a chart needs the optional package 'gk-no-such-package', which is not installed .*run `npm install gk-no-such-package vega-lite`/);
  t.equal(typeof requireOptional<{ View: unknown }>('vega', 'drawing a chart').View, 'function', 'an installed one loads');
});

t.test('errors are GrpoKernelsError instances', async (t) => {
  try {
    await gk.tokenLogProbs(logits, [9, 0, 0, 0]);
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof gk.GrpoKernelsError);
    t.ok(e instanceof Error);
    t.equal((e as gk.GrpoKernelsError).index, 0, 'names the first bad element');
  }
});
