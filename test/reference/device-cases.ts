// Checks of the CUDA device runtime, run by `grpo-kernels selftest --device cuda` after the op
// cases: device tensors round-trip, ops on device tensors give the same bits as the same ops on
// uploaded host data, results stay on the GPU, in-place gradients, device-side target checks,
// out-of-memory as GK_OOM, memory accounting, wrapped pointers and device-to-device copies.
import * as gk from '../../lib/index';
import { addon } from '../../lib/native';
import { decodeBF16 } from './dtype';
import type { CaseResult, Check } from './cases';
import { makeLogits, makeTargets } from './cases';
import { Rng } from './random';

function ok(label: string, pass: boolean, detail?: string): Check {
  return { label, err: pass ? 0 : Infinity, tol: 0, pass, ...(pass ? {} : { detail: detail ?? 'failed' }) };
}

/** Bitwise equality of two arrays (NaN equal to NaN). */
function same(label: string, a: ArrayLike<number | bigint>, b: ArrayLike<number | bigint>): Check {
  if (a.length !== b.length) return ok(label, false, `length ${a.length} != ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    if (x !== y && !(Number.isNaN(x) && Number.isNaN(y))) return ok(label, false, `element ${i}: ${String(x)} != ${String(y)}`);
  }
  return ok(label, true);
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'none';
  } catch (e) {
    return String((e as { code?: string }).code);
  }
}

export async function runDeviceChecks(dev: gk.Device, seed: number, onResult?: (r: CaseResult) => void): Promise<CaseResult[]> {
  const results: CaseResult[] = [];
  const rng = new Rng(seed);
  const add = async (name: string, f: () => Promise<Check[]>) => {
    let checks: Check[];
    try {
      checks = await f();
    } catch (e) {
      const err = e as { code?: string; message?: string };
      checks = [ok('threw', false, `${err.code ?? ''} ${err.message ?? String(e)}`)];
    }
    const r = { op: 'device', name, checks, pass: checks.every((c) => c.pass) };
    results.push(r);
    onResult?.(r);
  };

  const previousDefault = gk.defaultDevice();

  await add('upload -> toArray round trip (f32 20 MB over 3 staging chunks, bf16, int64, uint8)', async () => {
    const f = Float32Array.from({ length: 5_000_001 }, () => rng.normal());
    const b = Uint16Array.from({ length: 1001 }, () => (rng.next() * 65536) | 0);
    const i = BigInt64Array.from({ length: 77 }, () => BigInt((rng.next() * 2 ** 40) | 0) - 5n);
    const u = Uint8Array.from({ length: 5 }, () => (rng.next() * 256) | 0);
    const tf = await dev.upload(f);
    const tb = await dev.upload(b, { dtype: 'bfloat16' });
    const ti = await dev.upload(i);
    const tu = await dev.upload(u);
    const checks = [
      ok('device tensors', [tf, tb, ti, tu].every((t) => t.device === 'cuda' && t.deviceIndex === dev.index)),
      same('float32', (await tf.toArray()) as Float32Array, f),
      same('bfloat16', (await tb.toArray()) as Uint16Array, b),
      same('int64', (await ti.toArray()) as BigInt64Array, i),
      same('uint8', (await tu.toArray()) as Uint8Array, u),
    ];
    const back = await tf.to('cpu');
    checks.push(ok('to(cpu) is a host tensor', back.device === 'cpu'), same('to(cpu)', back.data as Float32Array, f));
    for (const t of [tf, tb, ti, tu]) t.dispose();
    checks.push(ok('disposed tensor throws GK_DISPOSED', (await code(tf.toArray())) === 'GK_DISPOSED'));
    return checks;
  });

  await add('tokenLogProbs on device tensors = on uploaded host data (bitwise); results stay on the GPU', async () => {
    const { tensor: logits } = makeLogits(rng, { n: 257, v: 32003, dtype: 'bfloat16' });
    const values = decodeBF16(logits.data as Uint16Array);
    const targets = makeTargets(rng, Float64Array.from(values), 257, 32003, [5, 100]);
    gk.setDefaultDevice(dev);
    const host = await gk.tokenLogProbs(logits, targets, { entropy: true });
    const dl = await dev.upload(logits);
    const dt = await dev.upload(targets);
    const d = await gk.tokenLogProbs(dl, dt, { entropy: true });
    const checks = [
      ok('logp on the GPU', d.logp.device === 'cuda' && d.entropy!.device === 'cuda'),
      same('logp', (await d.logp.toArray()) as Float32Array, host.logp.data as Float32Array),
      same('entropy', (await d.entropy!.toArray()) as Float32Array, host.entropy!.data as Float32Array),
    ];
    // Backward from device tensors, out of place and in place.
    const gl = await dev.upload(Float32Array.from({ length: 257 }, () => rng.normal()));
    const g1 = await gk.tokenLogProbsBackward(dl, dt, { gradLogp: gl }, { lse: d.lse });
    const g2 = await gk.tokenLogProbsBackward(dl, dt, { gradLogp: gl }, { inPlace: true });
    checks.push(ok('in place returns the logits tensor', g2 === dl));
    checks.push(same('in place = out of place', (await g2.toArray()) as Uint16Array, (await g1.toArray()) as Uint16Array));
    for (const t of [dl, dt, gl, g1, d.logp, d.lse, d.entropy!]) t.dispose();
    return checks;
  });

  await add('fused grpoLoss on device tensors: loss and gradient = host path; in place over the logits', async () => {
    const s = 8;
    const l = 64;
    const n = s * l;
    const v = 5000;
    const { tensor: logits } = makeLogits(rng, { n, v, dtype: 'float32' });
    const targets = Int32Array.from({ length: n }, () => Math.floor(rng.next() * v));
    const advantages = Float32Array.from({ length: s }, () => rng.normal());
    const old = Float32Array.from({ length: n }, () => -2 - rng.next());
    const ref = Float32Array.from({ length: n }, () => -2 - rng.next());
    gk.setDefaultDevice(dev);
    const host = await gk.grpoLoss({ logits, targets, advantages, oldLogp: old, refLogp: ref }, { beta: 0.04 });
    const dl = await dev.upload(logits);
    const dt = await dev.upload(targets);
    const dOld = await dev.upload(old);
    const d = await gk.grpoLoss({ logits: dl, targets: dt, advantages, oldLogp: dOld, refLogp: ref }, { beta: 0.04, inPlace: true });
    const checks = [
      ok('loss bitwise equal', d.loss === host.loss, `${d.loss} vs ${host.loss}`),
      ok('in place returns the logits tensor', d.gradLogits === dl),
      same('gradient', (await d.gradLogits.toArray()) as Float32Array, host.gradLogits.data as Float32Array),
      same('logp', (await d.logp.toArray()) as Float32Array, host.logp.data as Float32Array),
    ];
    const again = await gk.grpoLoss({ logits, targets, advantages, oldLogp: old, refLogp: ref }, { beta: 0.04 });
    checks.push(ok('run to run bit-identical loss', again.loss === host.loss));
    for (const t of [dl, dt, dOld, d.logp, d.entropy]) t.dispose();
    return checks;
  });

  await add('a target outside [0, V) on the GPU fails with GK_TARGET_RANGE naming the row', async () => {
    const { tensor: logits } = makeLogits(rng, { n: 40, v: 1000, dtype: 'float32' });
    const t = Int32Array.from({ length: 40 }, (_, i) => i);
    t[17] = 1000;
    t[31] = -3;
    const dl = await dev.upload(logits);
    const dt = await dev.upload(t);
    let row = -1;
    const c = await gk.tokenLogProbs(dl, dt).then(
      () => 'none',
      (e: { code?: string; index?: number }) => {
        row = e.index ?? -1;
        return String(e.code);
      },
    );
    dl.dispose();
    dt.dispose();
    return [ok('GK_TARGET_RANGE', c === 'GK_TARGET_RANGE', `got ${c}`), ok('smallest bad row 17', row === 17, `row ${row}`)];
  });

  await add('out of device memory is a GK_OOM error, and the device keeps working (copies and kernels)', async () => {
    const { tensor: logits } = makeLogits(rng, { n: 33, v: 517, dtype: 'float32' });
    const targets = Int32Array.from({ length: 33 }, (_, i) => (i * 7) % 517);
    const dl = await dev.upload(logits);
    const dt = await dev.upload(targets);
    const before = (await (await gk.tokenLogProbs(dl, dt)).logp.toArray()) as Float32Array;
    const huge = dev.empty([2 ** 44 / 4], 'float32'); // 16 TiB
    const c = await code(huge.pointer());
    huge.dispose();
    const t = await dev.upload(Float32Array.of(1, 2, 3));
    const back = (await t.toArray()) as Float32Array;
    const after = (await (await gk.tokenLogProbs(dl, dt)).logp.toArray()) as Float32Array;
    for (const x of [t, dl, dt]) x.dispose();
    return [ok('GK_OOM', c === 'GK_OOM', `got ${c}`), same('copies work after', back, [1, 2, 3]), same('kernels work after (same bits)', after, before)];
  });

  await add('a tensor disposed while a queued op still reads it is freed only after that op', async () => {
    const n = 64;
    const v = 50_000;
    const { tensor: logits } = makeLogits(rng, { n, v, dtype: 'float32' });
    const targets = Int32Array.from({ length: n }, () => Math.floor(rng.next() * v));
    const x = await dev.upload(logits);
    const t = await dev.upload(targets);
    const want = (await (await gk.tokenLogProbs(x, t)).logp.toArray()) as Float32Array;
    const pending = gk.tokenLogProbs(x, t); // queued, not awaited
    x.dispose(); // released while the op above may still be waiting for its turn
    // Same-size allocations right after: if x's memory were reused early, the op would read them.
    const other = await Promise.all([0, 1].map(() => dev.upload(Float32Array.from({ length: n * v }, () => 50 * rng.normal()))));
    const got = (await (await pending).logp.toArray()) as Float32Array;
    for (const o of other) o.dispose();
    t.dispose();
    return [same('the queued op saw the released tensor intact', got, want)];
  });

  await add('more ops in flight than libuv threads: all run, in call order, with the same result', async () => {
    const { tensor: logits } = makeLogits(rng, { n: 128, v: 3001, dtype: 'bfloat16' });
    const targets = Int32Array.from({ length: 128 }, () => Math.floor(rng.next() * 3001));
    const x = await dev.upload(logits);
    const t = await dev.upload(targets);
    const runs = await Promise.all(Array.from({ length: 16 }, () => gk.tokenLogProbs(x, t, { entropy: true })));
    const first = (await runs[0]!.logp.toArray()) as Float32Array;
    const checks: Check[] = [];
    for (let i = 1; i < runs.length; i++) checks.push(same(`run ${i}`, (await runs[i]!.logp.toArray()) as Float32Array, first));
    for (const r of runs) for (const u of [r.logp, r.lse, r.entropy!]) u.dispose();
    x.dispose();
    t.dispose();
    return checks;
  });

  await add('memory(): a 64 MiB tensor shows in usedBytes and peakBytes, and leaves after dispose', async () => {
    await dev.synchronize();
    const before = await dev.memory();
    await dev.resetPeakMemory();
    const t = dev.empty([16 * 2 ** 20], 'float32');
    await t.pointer();
    const during = await dev.memory();
    t.dispose();
    await dev.synchronize();
    const after = await dev.memory();
    const mib = 64 * 2 ** 20;
    // A finalizer may return an earlier case's undisposed result to the pool between the two
    // readings, so the growth is bounded by what was in use before, not by 64 MiB exactly.
    return [
      ok('used holds the 64 MiB tensor', during.usedBytes >= mib && during.usedBytes - before.usedBytes >= mib - before.usedBytes,
        `${before.usedBytes} -> ${during.usedBytes}`),
      ok('peak >= used', during.peakBytes >= during.usedBytes),
      ok('freed after dispose', after.usedBytes <= during.usedBytes - mib, `${during.usedBytes} -> ${after.usedBytes}`),
      ok('total > 0', during.totalBytes > 0),
    ];
  });

  await add('wrap(pointer) reads the same memory; clone() copies device to device', async () => {
    const x = Float32Array.from({ length: 4099 }, () => rng.normal());
    const t = await dev.upload(x);
    const w = dev.wrap(await t.pointer(), { shape: [4099], dtype: 'float32' });
    const ws = dev.wrap(await t.pointer(), { shape: [4099], dtype: 'float32', stream: 0n }); // the legacy default stream
    const c = await t.clone();
    const cs = await ws.clone();
    const checks = [
      same('wrapped', (await w.toArray()) as Float32Array, x),
      same('clone', (await c.toArray()) as Float32Array, x),
      same('clone of a wrapped tensor with a producer stream', (await cs.toArray()) as Float32Array, x),
    ];
    // A copy into the second half of a buffer twice the size.
    const big = dev.empty([2 * 4099], 'float32');
    await addon().deviceCopy(big.handle, t.handle, 4099 * 4);
    checks.push(same('device copy at an offset', ((await big.toArray()) as Float32Array).subarray(4099), x));
    w.dispose();
    ws.dispose();
    checks.push(same('disposing the wrappers leaves the memory', (await t.toArray()) as Float32Array, x));
    for (const u of [t, c, cs, big]) u.dispose();
    return checks;
  });

  gk.setDefaultDevice(previousDefault);
  return results;
}
