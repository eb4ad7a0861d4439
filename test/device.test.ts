// The device API on a machine without a usable GPU (CI): the CPU device, 'auto' falling back
// to it, clear GK_DEVICE/GK_CUDA errors for CUDA requests, and the default-device placement.
// The CUDA side of this API is checked by `grpo-kernels selftest --device cuda` on a GPU
// (test/reference/device-cases.ts).
import t from 'tap';
import * as gk from '../lib/index';
import { addon } from '../lib/native';
import { errorCode as code } from './helpers';

const gpu = gk.backendInfo().cuda.used;


t.test('the CPU device', async (t) => {
  const cpu = gk.Device.open('cpu');
  t.equal(cpu.kind, 'cpu');
  t.equal(cpu.index, -1);
  t.equal(cpu, gk.Device.cpu, 'one CPU device object');
  t.equal(cpu.toString(), 'cpu');
  const x = Float32Array.of(1.5, -2, 3);
  const h = await cpu.upload(x);
  t.equal(h.device, 'cpu');
  t.equal(h.deviceIndex, -1);
  t.equal(h.data, x, 'uploading to the CPU wraps the data without a copy');
  t.equal(await h.to('cpu'), h, 'to(cpu) of a host tensor is itself');
  t.equal(await h.to(cpu), h);
  const c = await h.clone();
  t.not(c.data, h.data, 'clone copies');
  t.same(Array.from(c.data as Float32Array), [1.5, -2, 3]);
  const e = cpu.empty([2, 3], 'bfloat16');
  t.equal(e.dtype, 'bfloat16');
  t.same(e.shape, [2, 3]);
  t.same(Array.from(e.data as Uint16Array), [0, 0, 0, 0, 0, 0], 'CPU empty() is zero-filled');
  t.equal(e.byteLength, 12);
  await cpu.synchronize();
  t.equal(gk.Device.of(h), cpu);
  t.equal(await code(() => cpu.memory()), 'GK_DEVICE');
  t.equal(await code(() => cpu.resetPeakMemory()), 'GK_DEVICE');
  t.equal(await code(() => cpu.lastOpMs()), 'GK_DEVICE');
  t.equal(await code(() => cpu.wrap(1n, { shape: [1], dtype: 'float32' })), 'GK_DEVICE');
  t.equal(await code(() => h.pointer()), 'GK_DEVICE', 'a host tensor has no device pointer');
});

t.test('device requests', async (t) => {
  t.equal(await code(() => gk.Device.open('tpu' as never)), 'GK_INVALID_ARG');
  t.equal(await code(() => gk.Device.open('cpu', { index: -1 })), 'GK_INVALID_ARG');
  t.equal(await code(() => gk.Device.open('cpu', null as never)), 'GK_INVALID_ARG');
  if (gpu) {
    // The emulated build (GK_CUDA=emu) is a test build: 'auto' keeps the CPU backend there.
    const emulated = gk.backendInfo().cuda.emulated;
    t.equal(gk.Device.open('auto').kind, emulated ? 'cpu' : 'cuda', "'auto' picks the GPU when there is a real one");
    return;
  }
  t.equal(gk.Device.open('auto').kind, 'cpu', "'auto' falls back to the CPU");
  t.equal(gk.resolveDevice('auto'), 'cpu');
  const info = gk.backendInfo();
  t.equal(info.backend, 'cpu');
  t.equal(info.cuda.used, false);
  t.ok(info.cuda.reason.length > 10, `the reason is given: ${info.cuda.reason}`);
  try {
    gk.Device.open('cuda');
    t.fail('cuda must not open here');
  } catch (e) {
    t.equal((e as { code?: string }).code, 'GK_DEVICE');
    t.match((e as Error).message, /not available/);
  }
  t.equal(await code(() => gk.setDefaultDevice('cuda')), 'GK_DEVICE');
  t.equal(gk.defaultDevice(), gk.Device.cpu, 'a failed setDefaultDevice leaves the default alone');
});

t.test('the binding refuses device work without a usable GPU', { skip: gpu ? 'a GPU is present' : false }, async (t) => {
  const a = addon();
  t.equal(await code(() => a.deviceOpen(0)), 'GK_CUDA', 'deviceOpen');
  t.equal(await code(() => a.deviceAlloc(0, 16)), 'GK_CUDA', 'deviceAlloc');
  t.equal(await code(() => a.deviceOpen(9)), 'GK_DEVICE', 'index beyond the table');
  t.equal(await code(() => a.deviceSynchronize(-1)), 'GK_DEVICE', 'negative index');
  const args = {
    logits: new Float32Array(6).fill(1), dtype: 0, n: 2, v: 3, targets: new Int32Array([0, 2]),
    temperature: 1, ignoreIndex: -100, checkFinite: false, logp: new Float32Array(2),
  };
  t.equal(await code(() => a.tokenLogProbs({ ...args, device: 0 })), 'GK_CUDA', 'an op sent to cuda:0');
  t.equal(await code(() => a.tokenLogProbs({ ...args, device: 12 })), 'GK_DEVICE', 'an op sent to a device index out of range');
  t.equal(await code(() => a.deviceRelease({} as never)), 'GK_INVALID_ARG', 'release of something that is not a device buffer');
  t.equal(await code(() => a.deviceUpload({} as never, new Float32Array(1))), 'GK_INVALID_ARG');
  // Ops still run on the CPU with device -1 (the default).
  await a.tokenLogProbs({ ...args, device: -1 });
  t.ok(args.logp.every((x) => x < 0 && Number.isFinite(x)), 'explicit CPU placement runs');
});

t.test('ops on host tensors run on the default device (the CPU here) and return host tensors', async (t) => {
  t.equal(gk.defaultDevice(), gk.Device.cpu);
  gk.setDefaultDevice('cpu');
  const logits = gk.tensor(Float32Array.from({ length: 12 }, (_, i) => Math.sin(i)), { shape: [3, 4] });
  const r = await gk.tokenLogProbs(logits, [0, 3, 1]);
  t.equal(r.logp.device, 'cpu');
  t.equal(r.logp.deviceIndex, -1);
  const g = await gk.tokenLogProbsBackward(logits, [0, 3, 1], { gradLogp: [1, 1, 1] }, { inPlace: true });
  t.equal(g, logits, 'in place on a host tensor returns it');
  const row0 = Array.from((g.data as Float32Array).slice(0, 4));
  t.ok(Math.abs(row0.reduce((s, x) => s + x, 0)) < 1e-6, 'each gradient row sums to 0');
  t.ok(row0[0]! > 0 && row0.slice(1).every((x) => x < 0), 'd logp / d z is 1 - p at the target and -p elsewhere');
});
