import t from 'tap';
import * as gk from '../lib/index';
import { decodeBF16, decodeF16, roundToBF16, roundToF16 } from './reference/dtype';
import { Rng } from './reference/random';
import { seedFor } from './helpers';

const seed = seedFor(t, 'tensor');

t.test('bfloat16 and float16 conversions round to nearest even and decode exactly', async (t) => {
  const rng = new Rng(seed);
  const xs = Float32Array.from({ length: 5000 }, () => rng.normal() * 10 ** rng.int(-8, 6));
  const specials = [0, -0, 1, -1, 65504, 65520, 1e-8, 5.96e-8, -3e-5, Infinity, -Infinity, 3.4e38];
  const all = Float32Array.from([...xs, ...specials]);
  const bf = gk.toBFloat16(all);
  const hf = gk.toFloat16(all);
  const bfBack = gk.fromBFloat16(bf);
  const hfBack = gk.fromFloat16(hf);
  const bfRef = decodeBF16(bf);
  const hfRef = decodeF16(hf);
  let bad = 0;
  for (let i = 0; i < all.length; i++) {
    if (!Object.is(bfBack[i], Math.fround(bfRef[i]!)) || !Object.is(hfBack[i], Math.fround(hfRef[i]!))) bad++;
    if (!Object.is(bfRef[i], roundToBF16(all[i]!)) || !Object.is(hfRef[i], roundToF16(all[i]!))) bad++;
  }
  t.equal(bad, 0, `${all.length} values round and decode like the reference`);
  t.ok(Number.isNaN(gk.fromBFloat16(gk.toBFloat16([NaN]))[0]), 'bf16 NaN stays NaN');
  t.ok(Number.isNaN(gk.fromFloat16(gk.toFloat16([NaN]))[0]), 'f16 NaN stays NaN');
});

t.test('Tensor basics', async (t) => {
  const x = gk.Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] });
  t.equal(x.dtype, 'float32');
  t.same(x.shape, [2, 3]);
  t.equal(x.size, 6);
  t.equal(x.device, 'cpu');
  t.same(Array.from((await x.toArray()) as Float32Array), [1, 2, 3, 4, 5, 6]);
  t.equal(String(x), 'Tensor(float32, [2, 3], cpu)');
  const z = gk.Tensor.zeros([3, 2], 'bfloat16');
  t.equal(z.dtype, 'bfloat16');
  t.ok(z.data instanceof Uint16Array);
  const b = gk.Tensor.from(gk.toBFloat16([1.5, -2]), { dtype: 'bfloat16' });
  t.same(Array.from(b.toFloat32()), [1.5, -2]);
  t.same(Array.from(gk.Tensor.from(BigInt64Array.from([3n, 4n])).toFloat32()), [3, 4]);
  t.equal(gk.tensor(new Int32Array(2)).dtype, 'int32');
  {
    using scoped = gk.Tensor.from(new Float32Array(4));
    t.equal(scoped.disposed, false);
    x.dispose();
  }
  t.equal(x.disposed, true);
  x.dispose();
  t.equal(String(x), 'Tensor(float32, [2, 3], cpu, disposed)');
});
