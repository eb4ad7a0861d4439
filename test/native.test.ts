// The binding checks what it is given even when called directly (defence in depth): wrong
// lengths, types and shapes reject with a code instead of reading or writing out of bounds.
import t from 'tap';
import { addon } from '../lib/native';

const a = addon();
const base = () => ({
  logits: new Float32Array(12).fill(1), dtype: 0, n: 4, v: 3, targets: new Int32Array([0, 1, 2, 0]),
  temperature: 1, ignoreIndex: -100, checkFinite: false, logp: new Float32Array(4),
});

function code(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

t.test('binding argument checks', async (t) => {
  t.equal(code(() => a.tokenLogProbs({ ...base(), logits: new Float32Array(11) })), 'GK_SHAPE', 'short logits');
  t.equal(code(() => a.tokenLogProbs({ ...base(), targets: new Int32Array(3) })), 'GK_SHAPE', 'short targets');
  t.equal(code(() => a.tokenLogProbs({ ...base(), logp: new Float32Array(2) })), 'GK_SHAPE', 'short output');
  t.equal(code(() => a.tokenLogProbs({ ...base(), logits: new Uint16Array(12) as never })), 'GK_DTYPE', 'float32 dtype with Uint16Array');
  t.equal(code(() => a.tokenLogProbs({ ...base(), dtype: 7 })), 'GK_DTYPE', 'unknown dtype code');
  t.equal(code(() => a.tokenLogProbs({ ...base(), v: 0 })), 'GK_SHAPE', 'V = 0');
  t.equal(code(() => a.tokenLogProbs({ ...base(), temperature: 0 })), 'GK_INVALID_ARG', 'temperature 0');
  t.equal(code(() => a.tokenLogProbs({ ...base(), n: 2.5 })), 'GK_INVALID_ARG', 'fractional n');
  t.equal(code(() => (a.tokenLogProbs as (x: unknown) => unknown)(undefined)), 'GK_INVALID_ARG', 'no argument');
  t.equal(code(() => a.tokenLogProbsBackward({ ...base(), grad: new Float32Array(5) })), 'GK_SHAPE', 'short gradient');
  t.equal(code(() => a.tokenLogProbs({ ...base(), v: 2 ** 62, logits: new Float32Array(0) })), 'GK_SHAPE', 'N·V overflowing size_t');
  t.equal(code(() => a.tokenLogProbs({ ...base(), ignoreIndex: 1e300 })), 'GK_INVALID_ARG', 'ignoreIndex beyond int64');
  const step = { n: 4, logp: new Float32Array(4), s: 1, seqOffsets: BigInt64Array.from([0n, 4n]), advantages: new Float32Array(1), dlogp: new Float32Array(4) };
  t.equal(code(() => a.grpoLossStep({ ...step, options: { topEntropyQuantile: -1e6 } as never })), 'GK_INVALID_ARG', 'quantile outside (0, 1]');
  t.equal(code(() => a.grpoLossStep({ ...step, options: { surrogate: 9 } as never })), 'GK_INVALID_ARG', 'unknown enum value');
  t.equal(code(() => a.groupAdvantages({
    rewards: new Float64Array(6), k: 1, n: 6, groupSize: 4, scale: 0, estimator: 0, eps: 1e-4,
    advantages: new Float32Array(6), combined: new Float64Array(6), groupMean: new Float64Array(1), groupStd: new Float64Array(1),
  })), 'GK_SHAPE', 'groupSize not dividing');
});

t.test('SharedArrayBuffer-backed inputs work', async (t) => {
  const sab = new Float32Array(new SharedArrayBuffer(12 * 4)).fill(1);
  const logp = new Float32Array(4);
  await a.tokenLogProbs({ ...base(), logits: sab, logp });
  t.ok(Math.abs(logp[0]! + Math.log(3)) < 1e-6);
});

t.test('the native range check catches targets the TS layer would have rejected', async (t) => {
  const r = a.tokenLogProbs({ ...base(), targets: new Int32Array([0, 1, 3, 0]) });
  await t.rejects(r, { code: 'GK_TARGET_RANGE', row: 2 });
  // Offsets are checked in full before the op is queued (and again by the backend on its own copy).
  t.equal(code(() => a.grpoLossStep({
    n: 4, logp: new Float32Array(4), s: 2, seqOffsets: BigInt64Array.from([0n, 3n, 2n]), advantages: new Float32Array(2),
    dlogp: new Float32Array(4), options: {} as never,
  })), 'GK_SHAPE', 'decreasing offsets');
});
