// The device API on the emulated GPU (GK_CUDA=emu; scripts/emu-ci.sh runs this file with
// GK_ADDON_PATH pointing at that build; it is not in the default tap run, whose addon is the
// real one). What selftest --device cuda cannot show: the info line, misaligned pointers refused
// at both layers, op timing, and the failure contract of in-place ops on the device.
import t from 'tap';
import * as gk from '../../lib/index';
import { addon } from '../../lib/native';
import { errorCode as code } from '../helpers';

const info = gk.backendInfo();


t.test('this run has the emulated build loaded', async (t) => {
  t.equal(info.cuda.emulated, true, 'info says emulated');
  t.equal(info.cuda.used, true, 'the emulated device is usable');
  t.equal(info.backend, 'cpu', "'auto' keeps the (far faster) CPU backend");
  t.match(info.cuda.devices[0]?.name ?? '', /emulator.*sched=\w+ seed=\d+/, 'the device name carries the scheduling order and its seed');
  t.equal(gk.Device.open('cuda').kind, 'cuda', "'cuda' opens the emulated device");
});

t.test('an element-misaligned pointer is refused by Device.wrap and by the binding', async (t) => {
  const dev = gk.Device.open('cuda');
  const x = await dev.upload(Uint16Array.from({ length: 64 }, (_, i) => 0x3f80 + i), { dtype: 'bfloat16' });
  const p = await x.pointer();
  t.equal(await code(() => dev.wrap(p + 1n, { shape: [2, 16], dtype: 'bfloat16' })), 'GK_INVALID_ARG', 'bfloat16 at an odd address');
  t.equal(await code(() => dev.wrap(p + 4n, { shape: [4], dtype: 'int64' })), 'GK_INVALID_ARG', 'int64 at an odd multiple of 4');
  const ok = dev.wrap(p + 2n, { shape: [2, 31], dtype: 'bfloat16' });
  t.equal(ok.shape[1], 31, 'an element-aligned start that is not 16-byte aligned is fine');
  const r = await gk.tokenLogProbs(ok, Int32Array.of(0, 30));
  const lp = (await r.logp.toArray()) as Float32Array;
  t.ok(lp.every((v) => Number.isFinite(v) && v <= 0), 'and runs (the vector path starts at the next 16-byte boundary)');
  // The raw addon: a wrapped buffer at an odd address bound as bf16 logits.
  const a = addon();
  const h = a.deviceWrap(0, p + 1n, 64);
  const logp = new Float32Array(2);
  const c = await code(() =>
    a.tokenLogProbs({ device: 0, logits: h, dtype: 2, n: 2, v: 16, targets: Int32Array.of(0, 1), temperature: 1, ignoreIndex: -100, checkFinite: false, logp }),
  );
  t.equal(c, 'GK_INVALID_ARG', 'the binding refuses it before any kernel runs');
  a.deviceRelease(h);
  const after = await gk.tokenLogProbs(ok, Int32Array.of(0, 30));
  t.same(Array.from((await after.logp.toArray()) as Float32Array), Array.from(lp), 'the device still works');
  x.dispose();
});

t.test('lastOpMs times the op on the device', async (t) => {
  const dev = gk.Device.open('cuda');
  const logits = await dev.upload(Float32Array.from({ length: 64 * 1000 }, (_, i) => Math.sin(i)), { shape: [64, 1000] });
  await gk.tokenLogProbs(logits, Int32Array.from({ length: 64 }, (_, i) => i));
  const ms = dev.lastOpMs();
  t.ok(ms > 0 && Number.isFinite(ms), `lastOpMs ${ms}`);
  logits.dispose();
});

// The failure contract (README, Errors): a failed op returns no result and leaves every tensor
// the caller passed as it was, in place included; on both backends.
t.test('a failed in-place op leaves the logits unchanged, on the CPU and on the device', async (t) => {
  const dev = gk.Device.open('cuda');
  const n = 10;
  const v = 37;
  const x = Float32Array.from({ length: n * v }, (_, i) => Math.sin(i * 0.7) * 3);
  x[3 * v + 2] = NaN;
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 5) % v);
  const badTargets = Int32Array.from(targets);
  badTargets[5] = 99;
  for (const where of ['cpu', 'cuda'] as const) {
    const cases: [string, (l: gk.Tensor) => Promise<unknown>][] = [
      ['fused grpoLoss, checkFinite, NaN row', (l) => gk.grpoLoss({ logits: l, targets, advantages: [1], seqOffsets: [0, n] }, { inPlace: true, checkFinite: true })],
      ['fused grpoLoss, device target out of range', async (l) =>
        gk.grpoLoss({ logits: l, targets: where === 'cuda' ? await dev.upload(badTargets) : badTargets, advantages: [1], seqOffsets: [0, n] }, { inPlace: true })],
      ['tokenLogProbsBackward, target out of range', async (l) =>
        gk.tokenLogProbsBackward(l, where === 'cuda' ? await dev.upload(badTargets) : badTargets, { gradLogp: new Float32Array(n).fill(1) }, { inPlace: true })],
    ];
    for (const [name, run] of cases) {
      const host = gk.Tensor.from(Float32Array.from(x), { shape: [n, v] });
      const logits = where === 'cpu' ? host : await dev.upload(host);
      const c = await code(() => run(logits));
      t.ok(c === 'GK_NONFINITE' || c === 'GK_TARGET_RANGE', `${where}, ${name}: rejected (${c})`);
      const after = (where === 'cpu' ? host.data : await logits.toArray()) as Float32Array;
      let changed = 0;
      for (let i = 0; i < x.length; i++) if (!Object.is(after[i], x[i])) changed++;
      t.equal(changed, 0, `${where}, ${name}: the logits are unchanged`);
    }
  }
});

// Spec §9.9 on the device: a row's results do not depend on its batch when its reduction schedule
// is the same, i.e. when V · sizeof(dtype) is a multiple of 16 bytes (every row then starts on a
// 16-byte boundary, as the common vocabularies 32000, 128256, 151936 do); and the sampler's
// log-prob is tokenLogProbs' log-prob of the sampled token.
t.test('device: batch invariance and the sampler log-prob', async (t) => {
  const dev = gk.Device.open('cuda');
  const v = 4104; // a multiple of 8: 16-byte rows in float32 and in 16-bit types
  let s = 12345;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 4294967296);
  const rows = Array.from({ length: 5 }, () => Float32Array.from({ length: v }, () => (rnd() - 0.5) * 12));
  const y = Int32Array.from({ length: 5 }, () => Math.floor(rnd() * v));
  async function batch(ids: number[], dtype: 'float32' | 'bfloat16') {
    const z = new Float32Array(ids.length * v);
    ids.forEach((id, i) => z.set(rows[id]!, i * v));
    const x = await dev.upload(dtype === 'float32' ? z : gk.toBFloat16(z), { dtype, shape: [ids.length, v] });
    const yy = Int32Array.from(ids, (id) => y[id]!);
    const f = await gk.tokenLogProbs(x, yy, { entropy: true, temperature: 0.8 });
    const g = await gk.tokenLogProbsBackward(x, yy, { gradLogp: Float32Array.from(ids, (id) => 0.3 + id) }, { temperature: 0.8 });
    const smp = await gk.sampleTokens(x, { seed: 5, temperature: 0.8, rowIds: ids });
    return {
      x, logp: (await f.logp.toArray()) as Float32Array, ent: (await f.entropy!.toArray()) as Float32Array,
      grad: new Uint8Array(((await g.toArray()) as Float32Array | Uint16Array).buffer), tok: (await smp.tokens.toArray()) as Int32Array,
      slogp: (await smp.logp.toArray()) as Float32Array,
    };
  }
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const es = dtype === 'float32' ? 4 : 2;
    const all = await batch([0, 1, 2, 3, 4], dtype);
    for (const ids of [[3], [4, 0, 3]]) {
      const b = await batch(ids, dtype);
      ids.forEach((id, i) => {
        const tag = `${dtype} row ${id} at ${i} of [${ids.join(',')}]`;
        t.equal(b.logp[i], all.logp[id], `${tag}: logp`);
        t.equal(b.ent[i], all.ent[id], `${tag}: entropy`);
        t.ok(Buffer.from(b.grad.subarray(i * v * es, (i + 1) * v * es)).equals(Buffer.from(all.grad.subarray(id * v * es, (id + 1) * v * es))), `${tag}: gradient row`);
        t.equal(b.tok[i], all.tok[id], `${tag}: sampled token`);
      });
    }
    const lp = await gk.tokenLogProbs(all.x, all.tok, { temperature: 0.8 });
    const lpa = (await lp.logp.toArray()) as Float32Array;
    for (let i = 0; i < 5; i++) t.equal(all.slogp[i], lpa[i], `${dtype} row ${i}: sampleTokens logp === tokenLogProbs logp on the device`);
    // Spec §9.6 on the device: the fused step's Σp² is the forward's, bit for bit.
    const p2 = (await (await gk.tokenLogProbs(all.x, all.tok, { temperature: 0.8, sumP2: true })).sumP2!.toArray()) as Float32Array;
    const fused = await gk.grpoLoss({ logits: all.x, targets: all.tok, advantages: Float32Array.of(1, -1, 0.5, -0.5, 2) }, { temperature: 0.8, sumP2: true });
    t.same(Array.from((await fused.sumP2!.toArray()) as Float32Array), Array.from(p2), `${dtype}: fused sumP2 === tokenLogProbs sumP2 on the device`);
    t.ok(Array.from(p2).every((x) => x > 0 && x <= 1), `${dtype}: Σp² in (0, 1]`);
  }
});

// Spec §9.4: the covariance selection runs in one block on the device (radix select over 64-bit
// keys, ties by an ordered ballot scan over 1024-row chunks); here N spans several chunks.
t.test('clipCov / klCov choose the same tokens on the device as on the CPU; ties go to the lowest rows', async (t) => {
  const dev = gk.Device.open('cuda');
  const S = 40, L = 90, N = S * L;
  let state = 12345;
  const rnd = () => ((state = (state * 16807) % 2147483647) / 2147483647);
  const grads = async (logp: Float32Array, old: Float32Array, adv: Float32Array, o: gk.GrpoLossOptions) => {
    const d = await dev.upload(logp);
    const a = await gk.grpoLoss({ logp, oldLogp: old, advantages: adv }, o);
    const b = await gk.grpoLoss({ logp: d, oldLogp: old, advantages: adv }, o);
    d.dispose();
    return { cpu: (await a.gradLogp.toArray()) as Float32Array, dev: (await b.gradLogp.toArray()) as Float32Array, lossCpu: a.loss, lossDev: b.loss };
  };
  const adv = Float32Array.from({ length: S }, () => rnd() - 0.5);
  const logp = Float32Array.from({ length: N }, () => -0.2 - 2 * rnd());
  const old = Float32Array.from(logp, (x) => x + 0.3 * (rnd() - 0.5));
  for (const o of [
    { lossType: 'clipCov', clipCovRatio: 0.05, clipCovLb: -0.5, clipCovUb: 0.5, covSeed: 9 },
    { lossType: 'klCov', klCovRatio: 0.3, ppoKlCoef: 2 },
  ] as gk.GrpoLossOptions[]) {
    const r = await grads(logp, old, adv, o);
    const off = await grads(logp, old, adv, { ...o, ...(o.lossType === 'clipCov' ? { clipCovRatio: 1e-9, clipCovLb: 1e9, clipCovUb: 2e9 } : { ppoKlCoef: 0 }) });
    let chosen = 0, differ = 0;
    for (let i = 0; i < N; i++) {
      if (r.cpu[i] !== off.cpu[i]) chosen++;
      if (r.cpu[i] !== r.dev[i]) differ++;
    }
    t.equal(differ, 0, `${o.lossType}: every gradient element equal on the two backends`);
    const k = Math.floor((o.lossType === 'clipCov' ? 0.05 : 0.3) * N);
    t.ok(o.lossType === 'clipCov' ? chosen > 0 && chosen <= k : chosen === k, `${o.lossType}: ${chosen} tokens chosen (k = ${k})`);
    t.ok(Math.abs(r.lossCpu - r.lossDev) <= 1e-12 * Math.abs(r.lossCpu), `${o.lossType}: loss ${r.lossCpu} vs ${r.lossDev}`);
  }
  // Equal logp everywhere: every covariance is ±0, one value; klCov takes the lowest k rows.
  const flat = new Float32Array(N).fill(-1.25);
  const oldFlat = Float32Array.from(flat, (x, i) => x + 0.1 * Math.cos(i * 3));
  const r = await grads(flat, oldFlat, adv, { lossType: 'klCov', klCovRatio: 0.5, ppoKlCoef: 3 });
  const off = await grads(flat, oldFlat, adv, { lossType: 'klCov', klCovRatio: 0.5, ppoKlCoef: 0 });
  const chosenRows: number[] = [];
  for (let i = 0; i < N; i++) if (r.dev[i] !== off.dev[i]) chosenRows.push(i);
  t.equal(chosenRows.length, N / 2, 'k = N/2 tokens chosen on the device');
  t.equal(chosenRows[chosenRows.length - 1], N / 2 - 1, 'the lowest rows, across chunk boundaries');
  t.same(Array.from(r.dev), Array.from(r.cpu), 'and the same on the CPU');
});

t.test("spec §9.7 gpg counts on the device: returned, and given ones replace them (the CPU's advantages, bit for bit)", async (t) => {
  const n = 96;
  const r = Float64Array.from({ length: n }, (_, i) => (i % 7 === 3 ? NaN : Math.sin(i * 1.7) > 0.3 ? 1 : 0));
  const cpu = await gk.groupAdvantages(r, { groupSize: 8, estimator: 'gpg' });
  const cpuGiven = await gk.groupAdvantages(r, { groupSize: 8, estimator: 'gpg', gpgCounts: { valid: 500, nonzero: 120 } });
  const prev = gk.defaultDevice();
  gk.setDefaultDevice(gk.Device.open('cuda'));
  try {
    const dev = await gk.groupAdvantages(r, { groupSize: 8, estimator: 'gpg' });
    const devGiven = await gk.groupAdvantages(r, { groupSize: 8, estimator: 'gpg', gpgCounts: { valid: 500, nonzero: 120 } });
    t.same(dev.gpgCounts, cpu.gpgCounts, `the same counts (${JSON.stringify(cpu.gpgCounts)})`);
    t.same(Array.from(dev.advantages.data as Float32Array), Array.from(cpu.advantages.data as Float32Array), 'the same advantages');
    t.same(Array.from(devGiven.advantages.data as Float32Array), Array.from(cpuGiven.advantages.data as Float32Array), 'with given counts too');
    t.notSame(Array.from(devGiven.advantages.data as Float32Array), Array.from(dev.advantages.data as Float32Array), 'which change them');
  } finally {
    gk.setDefaultDevice(prev);
  }
});
